"""The simulator's own record of every sample it served (ground truth for tests and for
scoring detectors): values exactly as served, the faults active, the true remaining life."""

from __future__ import annotations

import json
import math
import sqlite3
import time
from pathlib import Path

from simulator.engine import Sample


class SampleRecorder:
    """Appends one row per sample to SQLite, committing at most every ``flush_s`` so
    recording costs little even at high rates. ``values`` is a JSON list in catalog order
    (null for a dropped-out sensor). ``ts_ms`` is the true time of the sample;
    ``device_ts_ms`` what the device's clock said (they differ under a clock fault)."""

    def __init__(self, path: Path, flush_s: float = 0.2) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS samples (machine_id TEXT NOT NULL, sample INTEGER "
            'NOT NULL, ts_ms INTEGER NOT NULL, state INTEGER NOT NULL, "values" TEXT NOT '
            "NULL, faults TEXT NOT NULL DEFAULT '[]', rul_s REAL, device_ts_ms INTEGER, "
            "PRIMARY KEY (machine_id, sample))"
        )
        self._pending: list[tuple[object, ...]] = []
        self._flush_s = flush_s
        self._last_flush = time.monotonic()

    def publish(self, samples: list[Sample]) -> None:
        for s in samples:
            values = [None if math.isnan(v) else v for v in s.values]
            self._pending.append(
                (
                    s.machine_id,
                    s.counter,
                    s.ts_ms,
                    s.state,
                    json.dumps(values),
                    json.dumps(s.faults),
                    s.rul_s,
                    s.device_ts_ms,
                )
            )
        if time.monotonic() - self._last_flush >= self._flush_s:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._conn.execute("BEGIN")
            self._conn.executemany(
                "INSERT OR REPLACE INTO samples (machine_id, sample, ts_ms, state, "
                '"values", faults, rul_s, device_ts_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
                self._pending,
            )
            self._conn.execute("COMMIT")
            self._pending = []
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
        self._conn.close()
