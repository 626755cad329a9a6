"""The store-and-forward buffer: every reading is committed here before anything else.

SQLite in WAL mode. ``append_many`` assigns each reading its per-edge sequence number and
commits it in one transaction; only then does a reading exist for the rest of the edge. The
forwarder reads the oldest rows, sends them, and deletes exactly the rows the destination
confirmed. Anything not confirmed stays and is sent again after a crash or outage; the cloud
drops the repeats by ``(edge_id, seq)``.

Durability policy (``synchronous``): ``FULL`` (default) fsyncs the WAL on every commit, so a
committed reading survives power loss as well as SIGKILL. ``NORMAL`` survives process crashes
but may lose the last commits on power loss; it is there for SD-card rigs that trade that for
write endurance. Writers group-commit whatever arrived in one poll cycle, so the fsync cost is
per cycle, not per reading.

Sequence numbers: a fresh buffer starts at the current Unix time in microseconds, then counts
up by one. If a technician deletes the buffer file, the new sequence still starts above every
number the old one used (unless the edge had averaged more than a million readings a second),
so the cloud never mistakes new readings for duplicates of old ones.

Disk cap: when the stored payload bytes exceed ``max_bytes`` the oldest rows are deleted in
the same transaction and counted in ``dropped_total`` — never silently.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from shared.failpoints import failpoint
from shared.message import Reading, encode_reading

_SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class BufferedReading:
    seq: int
    machine_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class BufferStats:
    depth: int
    bytes: int
    dropped_total: int
    next_seq: int
    oldest_seq: int | None


class StoreAndForwardBuffer:
    """Thread-safe: one writer path (``append_many``), one forwarder path (``peek``/``ack``)."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = 1 << 30,
        synchronous: str = "FULL",
        clock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        self.path = path
        self.max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: the writer and the forwarder share this connection under
        # self._lock; SQLite serialises anyway and a single connection avoids WAL reader
        # snapshots lagging behind the writer.
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db = sqlite_utils.Database(self._conn)
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={synchronous}")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._ensure_schema()
        self._next_seq, self._bytes, self._depth, self._dropped = self._load_state(clock_us)

    # -- set-up -------------------------------------------------------------------------
    def _ensure_schema(self) -> None:
        db = self._db
        if "readings" not in db.table_names():
            db["readings"].create(
                {"seq": int, "machine_id": str, "payload": bytes, "bytes": int}, pk="seq"
            )
        if "rejected" not in db.table_names():
            db["rejected"].create(
                {"seq": int, "machine_id": str, "payload": bytes, "reason": str, "at": float},
                pk="seq",
            )
        if "meta" not in db.table_names():
            db["meta"].create({"key": str, "value": int}, pk="key")
            db["meta"].insert_all(
                [
                    {"key": "schema_version", "value": _SCHEMA_VERSION},
                    {"key": "dropped_total", "value": 0},
                ]
            )

    def _meta(self, key: str) -> int | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else int(row[0])

    def _load_state(self, clock_us: Callable[[], int]) -> tuple[int, int, int, int]:
        last_seq = self._meta("last_seq")
        max_row = self._conn.execute("SELECT max(seq) FROM readings").fetchone()[0]
        candidates = [v for v in (last_seq, max_row) if v is not None]
        next_seq = max(candidates) + 1 if candidates else clock_us()
        total_bytes, depth = self._conn.execute(
            "SELECT coalesce(sum(bytes), 0), count(*) FROM readings"
        ).fetchone()
        return next_seq, int(total_bytes), int(depth), self._meta("dropped_total") or 0

    # -- writer -------------------------------------------------------------------------
    def append_many(self, readings: Sequence[Reading]) -> list[int]:
        """Assign sequence numbers and commit; returns the sequence numbers. After this
        returns the readings are durable (per the synchronous policy)."""
        if not readings:
            return []
        with self._lock:
            seqs: list[int] = []
            rows: list[tuple[int, str, bytes, int]] = []
            seq = self._next_seq
            for reading in readings:
                reading.seq = seq
                payload = encode_reading(reading)
                rows.append((seq, reading.machine_id, payload, len(payload)))
                seqs.append(seq)
                seq += 1
            added = sum(r[3] for r in rows)
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO readings (seq, machine_id, payload, bytes) VALUES (?, ?, ?, ?)",
                    rows,
                )
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('last_seq', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (seq - 1,),
                )
                dropped, dropped_bytes = self._enforce_cap_locked(self._bytes + added)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._next_seq = seq
            self._bytes += added - dropped_bytes
            self._depth += len(rows) - dropped
            self._dropped += dropped
            self._not_empty.notify_all()
        failpoint("edge.buffer.after_commit")
        return seqs

    def _enforce_cap_locked(self, projected_bytes: int) -> tuple[int, int]:
        """Delete oldest rows until under the cap; called inside the write transaction."""
        if projected_bytes <= self.max_bytes:
            return 0, 0
        excess = projected_bytes - self.max_bytes
        dropped = dropped_bytes = 0
        cursor = self._conn.execute("SELECT seq, bytes FROM readings ORDER BY seq")
        cut_seq = None
        for seq, size in cursor:
            cut_seq = seq
            dropped += 1
            dropped_bytes += size
            if dropped_bytes >= excess:
                break
        cursor.close()
        if cut_seq is not None:
            self._conn.execute("DELETE FROM readings WHERE seq <= ?", (cut_seq,))
            self._conn.execute(
                "UPDATE meta SET value = value + ? WHERE key = 'dropped_total'", (dropped,)
            )
        return dropped, dropped_bytes

    # -- forwarder ----------------------------------------------------------------------
    def peek(
        self, limit: int, after_seq: int | None = None, before_seq: int | None = None
    ) -> list[BufferedReading]:
        """Oldest buffered readings in sequence order, optionally only those with
        ``after_seq < seq < before_seq``."""
        low = -1 if after_seq is None else after_seq
        high = 2**63 - 1 if before_seq is None else before_seq
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, machine_id, payload FROM readings WHERE seq > ? AND seq < ? "
                "ORDER BY seq LIMIT ?",
                (low, high, limit),
            ).fetchall()
        return [BufferedReading(int(s), m, bytes(p)) for s, m, p in rows]

    def wait_for_data(self, timeout: float) -> bool:
        with self._lock:
            if self._depth > 0:
                return True
            self._not_empty.wait(timeout)
            return self._depth > 0

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete readings the destination confirmed. Returns how many rows were deleted."""
        keys = [(s,) for s in seqs]
        if not keys:
            return 0
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                # RETURNING tells exactly which rows went (some may have been dropped by
                # the cap meanwhile), keeping the in-memory byte count exact.
                deleted = 0
                freed = 0
                for start in range(0, len(keys), 500):
                    chunk = [k[0] for k in keys[start : start + 500]]
                    marks = ",".join("?" * len(chunk))
                    for (size,) in conn.execute(
                        f"DELETE FROM readings WHERE seq IN ({marks}) RETURNING bytes", chunk
                    ).fetchall():
                        deleted += 1
                        freed += int(size)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._bytes -= freed
            self._depth -= deleted
            return deleted

    def reject(self, reasons: dict[int, str]) -> int:
        """Move readings the destination refuses for good into ``rejected`` (kept for a
        technician to inspect) so they stop blocking the ones behind them."""
        if not reasons:
            return 0
        now = time.time()
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            moved = freed = 0
            try:
                for seq, reason in reasons.items():
                    row = conn.execute(
                        "DELETE FROM readings WHERE seq = ? RETURNING machine_id, payload, bytes",
                        (seq,),
                    ).fetchone()
                    if row is None:
                        continue
                    conn.execute(
                        "INSERT OR REPLACE INTO rejected (seq, machine_id, payload, reason, at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (seq, row[0], row[1], reason, now),
                    )
                    moved += 1
                    freed += int(row[2])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._bytes -= freed
            self._depth -= moved
            return moved

    # -- introspection ------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Readings waiting to be forwarded (kept in memory: no query)."""
        return self._depth

    def stats(self) -> BufferStats:
        with self._lock:
            oldest = self._conn.execute("SELECT min(seq) FROM readings").fetchone()[0]
            return BufferStats(self._depth, self._bytes, self._dropped, self._next_seq, oldest)

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._conn.close()


def read_stats_readonly(path: Path) -> BufferStats:
    """Buffer figures for ``rig-edge status`` without disturbing a running daemon."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        depth, total, oldest, newest = conn.execute(
            "SELECT count(*), coalesce(sum(bytes), 0), min(seq), max(seq) FROM readings"
        ).fetchone()
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        last = max(v for v in (meta.get("last_seq"), newest, -1) if v is not None)
        return BufferStats(
            int(depth), int(total), int(meta.get("dropped_total", 0)), last + 1, oldest
        )
    finally:
        conn.close()
