"""The simulator's own record of every sample it served (ground truth for tests)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path


class SampleRecorder:
    """Appends (machine, sample, ts_ms, state, values) rows to SQLite, committing at most
    every ``flush_s`` so recording costs little even at high rates. Values are stored exactly
    as served (float32-rounded), as a JSON list in catalog order."""

    def __init__(self, path: Path, flush_s: float = 0.2) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS samples (machine_id TEXT NOT NULL, sample INTEGER "
            'NOT NULL, ts_ms INTEGER NOT NULL, state INTEGER NOT NULL, "values" TEXT NOT '
            "NULL, PRIMARY KEY (machine_id, sample))"
        )
        self._pending: list[tuple[str, int, int, int, str]] = []
        self._flush_s = flush_s
        self._last_flush = time.monotonic()

    def add(
        self, machine_id: str, sample: int, ts_ms: int, state: int, values: list[float]
    ) -> None:
        self._pending.append((machine_id, sample, ts_ms, state, json.dumps(values)))
        if time.monotonic() - self._last_flush >= self._flush_s:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._conn.execute("BEGIN")
            self._conn.executemany(
                "INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?, ?)", self._pending
            )
            self._conn.execute("COMMIT")
            self._pending = []
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
        self._conn.close()
