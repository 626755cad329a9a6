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
up by one. If a technician deletes the buffer file (or a corrupt one is moved aside), the new
sequence still starts above every number the old one used (unless the edge had averaged more
than a million readings a second), so the cloud never mistakes new readings for duplicates of
old ones.

Redelivered messages: ``append_many`` can store the digests of the MQTT messages a batch came
from in ``recent_messages``, in the same transaction as the readings. After a crash the broker
redelivers every message it had no PUBACK for; ``has_message`` recognises exactly those whose
readings were committed. The newest ``recent_message_keys`` digests are kept (the broker only
redelivers its in-flight window, which is far smaller).

Polled devices: a Modbus or OPC-UA device shows its newest sample until it makes the next,
numbered by its sample counter. ``append_many`` commits the counter each input recorded last
per machine (``sample_marks``) with the readings, so a restarted edge does not record the
sample still on show a second time (as a new reading with a new seq, which the cloud's key
cannot recognise).

Disk: ``max_bytes`` bounds what the buffer occupies on disk, not just its payload: the pages
in use in the database file (readings, set-aside rows, message digests, indexes, the schema)
must fit ``max_bytes`` minus a reserve for the WAL, whose size a checkpoint policy bounds
(``wal_autocheckpoint`` + ``journal_size_limit``, a truncating checkpoint if a reader ever
held it back, and after every commit when the disk is tight). The ``-shm`` index beside the
WAL (32 KiB) is not counted, and the schema alone takes about 28 KiB. When the cap is
reached the oldest readings are deleted in the same transaction and counted in
``dropped_total`` — never silently. A free-space watermark does the same before the
filesystem fills up: below ``min_free_bytes`` free, the buffer stops growing and gives space
back (oldest readings dropped and counted, free pages returned to the filesystem).

Readings the destination refuses for good, and readings that could not even be encoded
(``set_aside``), go to ``rejected`` for a technician; that table is capped too, oldest first,
counted in ``rejected_dropped_total``.

A buffer file SQLite calls corrupt — at open, or by ``PRAGMA quick_check`` at every start
(which reads the whole file, as counting its rows already did) — is moved aside to
``<name>.corrupt-<UTC time>`` (with its ``-wal`` and ``-shm``) and a fresh buffer starts,
logged at CRITICAL and exposed as ``recovered_from`` so health and metrics raise an alarm: an
edge that cannot start collects nothing at all. Other errors (permissions, a read-only disk)
still stop the start, naming the file.

SQLite errors while writing (disk full, I/O error) roll the transaction back, leave the
in-memory counters exact and propagate as ``sqlite3.Error``: the caller backs off and retries,
and the buffer works again once the disk has room.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from shared.failpoints import failpoint
from shared.logs import log_event
from shared.message import Reading, encode_reading

log = logging.getLogger(__name__)

_SCHEMA_VERSION = 3

MAX_MESSAGE_KEY_BYTES = 32
# A reading that could not be encoded may be anything (a 60,000-key MQTT payload): keep
# enough of it for a technician to see what it was, not all of it.
SET_ASIDE_PAYLOAD_LIMIT = 64 * 1024
_MACHINE_ID_LIMIT = 256
_REASON_LIMIT = 2000
# Record header, rowid, machine_id and cell pointer of a readings row, beyond its payload:
# only used to guess how many rows to delete before measuring the pages again.
_ROW_OVERHEAD = 24
# A recent_messages row: the digest, its id and the cell (estimate, as above).
_KEY_ROW_BYTES = MAX_MESSAGE_KEY_BYTES + 16
_MAX_WAL_LIMIT = 4 * 1024 * 1024
_WAL_WARN_INTERVAL_S = 60.0
_MAKE_ROOM_ROUNDS = 64

# Primary result codes SQLite uses for a damaged file (extended codes are masked to these).
_CORRUPTION_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})

_READINGS_DDL = (
    "CREATE TABLE IF NOT EXISTS readings ("
    "seq INTEGER PRIMARY KEY, machine_id TEXT, payload BLOB, bytes INTEGER)"
)
# id is a surrogate key: rows set aside before encoding never got a seq.
_REJECTED_DDL = (
    "CREATE TABLE IF NOT EXISTS rejected ("
    "id INTEGER PRIMARY KEY, seq INTEGER, machine_id TEXT, payload BLOB, reason TEXT, "
    "at REAL, bytes INTEGER NOT NULL)"
)
# Append-only by id and pruned from the front: both touch only the ends of one B-tree. The
# digests are random, so a unique index on them would dirty a random page per message; the
# lookup set lives in memory instead (loaded at start-up).
_RECENT_DDL = "CREATE TABLE IF NOT EXISTS recent_messages (id INTEGER PRIMARY KEY, key BLOB)"
_META_DDL = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER)"
# The device sample counter each input recorded last per machine, committed with the
# readings: after a restart the sample still on show is not recorded a second time.
_SAMPLE_MARKS_DDL = (
    "CREATE TABLE IF NOT EXISTS sample_marks ("
    "input TEXT NOT NULL, machine_id TEXT NOT NULL, sample INTEGER NOT NULL, "
    "PRIMARY KEY (input, machine_id))"
)
# (input name, machine id) -> the device's sample counter
SampleMarks = Mapping[tuple[str, str], int]


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
    rejected: int = 0
    rejected_dropped_total: int = 0
    disk_bytes: int = 0
    free_bytes: int = 0


class _CorruptBufferError(Exception):
    """``PRAGMA quick_check`` found damage SQLite did not report as an error code."""


def _checked_marks(marks: SampleMarks | None) -> dict[tuple[str, str], int]:
    """SQLite keeps 64-bit integers: a counter beyond them is a caller's bug, said before
    anything is written."""
    checked: dict[tuple[str, str], int] = {}
    for (input_name, machine_id), sample in (marks or {}).items():
        if isinstance(sample, bool) or not isinstance(sample, int) or abs(sample) >= 1 << 63:
            raise ValueError(
                f"sample_marks[{input_name!r}, {machine_id!r}]: a 64-bit integer, "
                f"got {sample!r:.40}"
            )
        checked[(str(input_name), str(machine_id))] = sample
    return checked


def is_corruption(exc: BaseException) -> bool:
    """Whether an error means the buffer file is damaged. Raised by a running buffer (a page
    gone bad under it), the way out is a restart: the constructor then moves the file aside."""
    if isinstance(exc, _CorruptBufferError):
        return True
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return False
    # A truncated file reads short where pages should be: damage, not a failing disk.
    return (code & 0xFF) in _CORRUPTION_CODES or code == sqlite3.SQLITE_IOERR_SHORT_READ


def _file_size(path: Path | str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _unlink_quietly(path: Path) -> None:
    # Housekeeping only (a read-only disk refuses even a missing file): the real open or
    # write reports what is wrong.
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def disk_bytes(path: Path) -> int:
    """What a buffer file occupies: the database, its WAL and the WAL index."""
    return sum(_file_size(Path(f"{path}{suffix}")) for suffix in ("", "-wal", "-shm"))


def free_bytes(directory: Path | str) -> int:
    """Bytes an unprivileged process may still write on the filesystem of ``directory``."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def _clean_text(value: object, limit: int) -> str:
    text = value if isinstance(value, str) else repr(value)
    # Lone surrogates (bytes decoded with surrogateescape) cannot be bound as SQLite text.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[:limit] + "…"


def _payload_bytes(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace")
    return repr(value).encode("utf-8", "backslashreplace")


def _readonly_uri(path: Path) -> str:
    # as_uri percent-encodes: a "?" or "#" in the path would otherwise end it.
    return path.resolve().as_uri() + "?mode=ro"


def _with_path(exc: sqlite3.Error, path: Path, what: str) -> sqlite3.Error:
    """The same kind of error, saying which file (sqlite3 messages never name it)."""
    new = type(exc)(f"edge buffer {path}: {what}: {exc}")
    for attr in ("sqlite_errorcode", "sqlite_errorname"):
        if hasattr(exc, attr):
            setattr(new, attr, getattr(exc, attr))
    return new


def _salvage_last_seq(path: Path) -> int | None:
    """Best effort: the highest seq the damaged file (moved aside, with its WAL) still shows,
    so the fresh buffer starts above it even if the clock went backwards. Implausible values
    are ignored."""
    try:
        conn = sqlite3.connect(_readonly_uri(path), uri=True)
    except sqlite3.Error:
        return None
    found: list[int] = []
    try:
        for query in (
            "SELECT value FROM meta WHERE key = 'last_seq'",
            "SELECT max(seq) FROM readings",
        ):
            try:
                value = conn.execute(query).fetchone()
            except sqlite3.Error:
                continue
            if value and isinstance(value[0], int) and 0 <= value[0] < 2**62:
                found.append(value[0])
    finally:
        conn.close()
    return max(found) if found else None


class StoreAndForwardBuffer:
    """Thread-safe: one writer path (``append_many``/``set_aside``), one forwarder path
    (``peek``/``ack``/``reject``)."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = 1 << 30,
        synchronous: str = "FULL",
        clock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
        min_free_bytes: int = 256 * 1024 * 1024,
        max_rejected_bytes: int = 64 * 1024 * 1024,
        recent_message_keys: int = 100_000,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        for name, value in (
            ("max_bytes", max_bytes),
            ("min_free_bytes", min_free_bytes),
            ("max_rejected_bytes", max_rejected_bytes),
            ("recent_message_keys", recent_message_keys),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, not {value!r}")
        if max_bytes == 0:
            raise ValueError("max_bytes must be > 0")
        self.path = Path(path)
        # Strings, not Paths: stat and statvfs run on every commit.
        self._wal_path = f"{self.path}-wal"
        self._dir = str(self.path.parent)
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self.max_rejected_bytes = max_rejected_bytes
        self.recent_message_keys = recent_message_keys
        self.synchronous = synchronous
        # Both bounded by the cap as well, so neither can crowd the readings out of a small
        # buffer: set-aside rows get at most an eighth of it; digests one per KiB of cap
        # (a digest row takes ~50 bytes), but never fewer than 64 — more than the broker's
        # in-flight window, which is all a restart can redeliver.
        self._rejected_cap = min(max_rejected_bytes, max_bytes // 8)
        self._key_limit = min(recent_message_keys, max(64, max_bytes // 1024))
        self._set_aside_limit = min(SET_ASIDE_PAYLOAD_LIMIT, max(1024, self._rejected_cap // 8))
        self._clock_us = clock_us
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._wal_warned_at = -_WAL_WARN_INTERVAL_S
        self._drop_logged_at = -_WAL_WARN_INTERVAL_S
        self._dropped_unlogged = 0
        self.recovered_from: Path | None = None

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise type(exc)(
                exc.errno, f"edge buffer {self.path}: cannot create its directory: {exc}"
            ) from exc
        # SQLite opens any file that has a -wal beside it in WAL mode, and when that
        # connection closes after finding the file corrupt it deletes the WAL — the newest
        # commits a technician may want. A hard link keeps them until the start succeeded.
        kept_wal = Path(f"{self._wal_path}.opening")
        _unlink_quietly(kept_wal)
        # No WAL (the usual case after a clean stop) or no hard links here: nothing to keep.
        with contextlib.suppress(OSError):
            os.link(self._wal_path, kept_wal)
        try:
            self._open(seq_floor=None)
        except Exception as exc:
            if not is_corruption(exc):
                _unlink_quietly(kept_wal)
                if isinstance(exc, sqlite3.Error):
                    raise _with_path(exc, self.path, "cannot open") from exc
                raise
            moved = self._move_aside(kept_wal)
            salvaged = _salvage_last_seq(moved)
            log_event(
                log,
                logging.CRITICAL,
                "edge buffer file is corrupt: moved aside, started a fresh buffer",
                path=str(self.path),
                moved_to=str(moved),
                error=f"{type(exc).__name__}: {exc}",
                salvaged_last_seq=salvaged,
            )
            self.recovered_from = moved
            try:
                self._open(seq_floor=None if salvaged is None else salvaged + 1)
            except sqlite3.Error as again:
                raise _with_path(again, self.path, "cannot start a fresh buffer") from again
        else:
            _unlink_quietly(kept_wal)

    # -- set-up -------------------------------------------------------------------------
    def _open(self, seq_floor: int | None) -> None:
        # check_same_thread=False: the writer and the forwarder share this connection under
        # self._lock; SQLite serialises anyway and a single connection avoids WAL reader
        # snapshots lagging behind the writer.
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
                # Only possible before the first table: lets the watermark hand free pages
                # back to the filesystem. Files from before schema 2 keep auto_vacuum off
                # (switching needs a VACUUM, i.e. a full rewrite); they stop growing instead.
                conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"journal_mode WAL refused (got {mode!r})")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA busy_timeout=5000")
            # Some builds (Debian's) zero every deleted row on disk: each acked or dropped
            # page would be written to the WAL once more, and a big drop-oldest below the
            # watermark would need WAL room the disk no longer has. Readings are not secret.
            conn.execute("PRAGMA secure_delete=OFF")
            problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)").fetchall()]
            if problems != ["ok"]:
                raise _CorruptBufferError("quick_check: " + "; ".join(map(str, problems)))
            self._page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            self._incremental = int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]) == 2
            # WAL policy: checkpoint every wal_limit bytes of frames and truncate the file back
            # to that size afterwards; the cap reserves twice that for it.
            self._wal_limit = min(_MAX_WAL_LIMIT, max(2 * self._page_size, self.max_bytes // 64))
            conn.execute(f"PRAGMA wal_autocheckpoint={self._wal_limit // self._page_size}")
            conn.execute(f"PRAGMA journal_size_limit={self._wal_limit}")
            self._db_budget = self.max_bytes - 2 * self._wal_limit
            self._conn = conn
            self._ensure_schema()
            self._load_state(seq_floor)
            self._used_hint = self._used_bytes_locked()
        except BaseException:
            conn.close()
            raise

    def _ensure_schema(self) -> None:
        conn = self._conn
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        version = None
        if "meta" in tables:
            version = self._meta("schema_version")
        if version is not None and version > _SCHEMA_VERSION:
            raise RuntimeError(
                f"edge buffer {self.path}: schema version {version} is newer than this "
                f"rig-edge understands ({_SCHEMA_VERSION}); run the newer rig-edge or move "
                "the file aside"
            )
        if (
            version == _SCHEMA_VERSION
            and {
                "readings",
                "rejected",
                "recent_messages",
                "sample_marks",
            }
            <= tables
        ):
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            if "rejected" in tables and version in (None, 1):
                self._migrate_rejected_v1()
            for ddl in (_READINGS_DDL, _REJECTED_DDL, _RECENT_DDL, _META_DDL, _SAMPLE_MARKS_DDL):
                conn.execute(ddl)
            conn.executemany(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, 0)",
                [("dropped_total",), ("rejected_dropped_total",), ("schema_version",)],
            )
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (_SCHEMA_VERSION,)
            )
            conn.execute("COMMIT")
        except BaseException:
            self._rollback_quietly()
            raise
        if version is not None:
            log_event(
                log,
                logging.INFO,
                "edge buffer schema migrated",
                path=str(self.path),
                from_version=version,
                to_version=_SCHEMA_VERSION,
            )

    def _migrate_rejected_v1(self) -> None:
        """Schema 1 keyed ``rejected`` by seq; schema 2 adds a surrogate id (set-aside rows
        have no seq) and the byte count the cap works with. Old rows keep their seq."""
        conn = self._conn
        columns = {r[1] for r in conn.execute("PRAGMA table_info(rejected)")}
        if "id" in columns:
            return
        conn.execute("ALTER TABLE rejected RENAME TO rejected_v1")
        conn.execute(_REJECTED_DDL)
        conn.execute(
            "INSERT INTO rejected (seq, machine_id, payload, reason, at, bytes) "
            "SELECT seq, machine_id, payload, reason, at, "
            "coalesce(length(CAST(payload AS BLOB)), 0) "
            "+ coalesce(length(CAST(reason AS BLOB)), 0) "
            "FROM rejected_v1 ORDER BY at, seq"
        )
        conn.execute("DROP TABLE rejected_v1")

    def _meta(self, key: str) -> int | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def _load_state(self, seq_floor: int | None) -> None:
        conn = self._conn
        last_seq = self._meta("last_seq")
        max_row = conn.execute("SELECT max(seq) FROM readings").fetchone()[0]
        candidates = [v for v in (last_seq, max_row) if v is not None]
        if candidates:
            self._next_seq = max(candidates) + 1
        else:
            self._next_seq = self._clock_us()
            if seq_floor is not None:
                self._next_seq = max(self._next_seq, seq_floor)
        total_bytes, depth = conn.execute(
            "SELECT coalesce(sum(bytes), 0), count(*) FROM readings"
        ).fetchone()
        self._bytes, self._depth = int(total_bytes), int(depth)
        self._dropped = self._meta("dropped_total") or 0
        self._rejected_dropped = self._meta("rejected_dropped_total") or 0
        rows, rbytes = conn.execute(
            "SELECT count(*), coalesce(sum(bytes), 0) FROM rejected"
        ).fetchone()
        self._rejected_rows, self._rejected_bytes = int(rows), int(rbytes)
        self._load_message_keys()
        self._sample_marks: dict[tuple[str, str], int] = {
            (str(i), str(m)): int(v)
            for i, m, v in conn.execute("SELECT input, machine_id, sample FROM sample_marks")
        }

    def _load_message_keys(self) -> None:
        conn = self._conn
        rows = conn.execute("SELECT id, key FROM recent_messages ORDER BY id").fetchall()
        keys = [bytes(k) for _, k in rows]
        consecutive = not rows or rows[-1][0] - rows[0][0] + 1 == len(rows)
        if len(keys) > self._key_limit or not consecutive:
            # The limit shrank (a smaller cap) or ids have gaps: renumber, keep the newest.
            keys = keys[len(keys) - self._key_limit :] if self._key_limit else []
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM recent_messages")
                conn.executemany(
                    "INSERT INTO recent_messages (id, key) VALUES (?, ?)",
                    [(i + 1, k) for i, k in enumerate(keys)],
                )
                conn.execute("COMMIT")
            except BaseException:
                self._rollback_quietly()
                raise
            first_id = 1
        else:
            first_id = rows[0][0] if rows else 1
        # keys[i] has id first_id + i: pruning from the front is one range delete.
        self._msg_queue: deque[bytes] = deque(keys)
        self._msg_set: set[bytes] = set(keys)
        self._msg_first_id = first_id

    def _move_aside(self, kept_wal: Path) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        try:
            # The WAL and index go with it: the WAL may hold the newest commits, and a stale
            # one beside a fresh file would be replayed into it.
            # The link holds the WAL as it was; a -wal there now is what the failed
            # connection left (emptied or recreated).
            if kept_wal.exists():
                kept_wal.rename(Path(f"{target}-wal"))
                Path(self._wal_path).unlink(missing_ok=True)
            for suffix in ("-wal", "-shm", ""):
                source = Path(f"{self.path}{suffix}")
                if source.exists():
                    source.rename(Path(f"{target}{suffix}"))
        except OSError as exc:
            raise type(exc)(
                exc.errno,
                f"edge buffer {self.path} is corrupt and cannot be moved aside to {target}: {exc}",
            ) from exc
        return target

    # -- transactions -------------------------------------------------------------------
    def _rollback_quietly(self) -> None:
        """Roll back if a transaction is still open. After SQLITE_FULL or an I/O error SQLite
        may already have rolled back; a second ROLLBACK would raise "no transaction is
        active" and hide the real error, which the caller is about to re-raise."""
        if not self._conn.in_transaction:
            return
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log_event(log, logging.ERROR, "edge buffer rollback failed", error=str(exc))

    def _used_bytes_locked(self) -> int:
        """Bytes of database pages in use (inside a transaction: as of that transaction)."""
        conn = self._conn
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        used = (int(pages) - int(free)) * self._page_size
        self._measured_used = used
        return used

    def _upper_estimate(self, sizes: Iterable[int], keys: int = 0) -> int:
        """More page bytes than these rows can take: twice their size plus a page per row
        that spills to overflow pages, plus a few pages for interior pages and the meta row.
        Lets most commits skip measuring pages while the buffer is far from its cap."""
        ps = self._page_size
        total = sum(size + _ROW_OVERHEAD + (ps if size > ps // 4 else 0) for size in sizes)
        return 2 * (total + keys * _KEY_ROW_BYTES) + 4 * ps

    # -- writer -------------------------------------------------------------------------
    def append_many(
        self,
        readings: Sequence[Reading],
        message_keys: Collection[bytes] = (),
        sample_marks: SampleMarks | None = None,
    ) -> list[int]:
        """Assign sequence numbers and commit, together with the digests of the messages the
        readings came from and the device sample counters they carry (``sample_marks``);
        returns the sequence numbers. After this returns the readings are
        durable (per the synchronous policy). Raises ``sqlite3.Error`` with nothing of this
        batch committed (disk full, I/O error); an encoding error is raised before anything
        is written."""
        keys: list[bytes] = []
        for key in message_keys:
            if not isinstance(key, bytes) or not 0 < len(key) <= MAX_MESSAGE_KEY_BYTES:
                raise ValueError(
                    f"message_keys: each key is 1 to {MAX_MESSAGE_KEY_BYTES} bytes, got {key!r:.80}"
                )
            keys.append(key)
        marks = _checked_marks(sample_marks)
        if not readings and not keys and not marks:
            return []
        with self._lock:
            seqs: list[int] = []
            rows: list[tuple[int, str, bytes, int]] = []
            seq = first_seq = self._next_seq
            for reading in readings:
                reading.seq = seq
                payload = encode_reading(reading)
                rows.append((seq, reading.machine_id, payload, len(payload)))
                seqs.append(seq)
                seq += 1
            added = sum(r[3] for r in rows)
            new_keys = self._new_keys_locked(keys)
            prune = max(0, len(self._msg_queue) + len(new_keys) - self._key_limit)
            upper = self._upper_estimate((r[3] for r in rows), len(new_keys))
            wm_budget = None
            free = self._free_bytes()
            if free is not None and free < self.min_free_bytes:
                wm_budget = self._make_room_locked()
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                # _used_hint is an upper bound of the pages in use: far enough below the
                # cap, nothing needs measuring.
                measure = wm_budget is not None or self._used_hint + upper > self._db_budget
                dropped = dropped_bytes = 0
                if wm_budget is not None:
                    # If making room could not finish this time, at least do not grow.
                    wm_budget = max(wm_budget, self._used_bytes_locked())
                if measure:
                    # Room first, so the batch goes into freed pages instead of growing the
                    # file past the cap for the length of this transaction.
                    estimate = added + len(rows) * _ROW_OVERHEAD + len(new_keys) * _KEY_ROW_BYTES
                    dropped, dropped_bytes = self._enforce_limits_locked(
                        first_seq, first_seq, wm_budget, reserve=estimate
                    )
                if rows:
                    conn.executemany(
                        "INSERT INTO readings (seq, machine_id, payload, bytes) "
                        "VALUES (?, ?, ?, ?)",
                        rows,
                    )
                    conn.execute(
                        "INSERT INTO meta (key, value) VALUES ('last_seq', ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (seq - 1,),
                    )
                if new_keys:
                    next_id = self._msg_first_id + len(self._msg_queue)
                    conn.executemany(
                        "INSERT INTO recent_messages (id, key) VALUES (?, ?)",
                        [(next_id + i, k) for i, k in enumerate(new_keys)],
                    )
                    if prune:
                        conn.execute(
                            "DELETE FROM recent_messages WHERE id < ?",
                            (self._msg_first_id + prune,),
                        )
                self._write_marks_locked(marks)
                if measure:
                    more, more_bytes = self._enforce_limits_locked(first_seq, seq, wm_budget)
                    dropped += more
                    dropped_bytes += more_bytes
                conn.execute("COMMIT")
            except BaseException:
                self._rollback_quietly()
                raise
            # On a rollback the old hint stays: still an upper bound.
            self._used_hint = self._measured_used if measure else self._used_hint + upper
            self._next_seq = seq
            self._bytes += added - dropped_bytes
            self._depth += len(rows) - dropped
            self._dropped += dropped
            self._sample_marks.update(marks)
            if new_keys:
                self._msg_queue.extend(new_keys)
                self._msg_set.update(new_keys)
                for _ in range(prune):
                    self._msg_set.discard(self._msg_queue.popleft())
                self._msg_first_id += prune
            if rows:
                self._not_empty.notify_all()
            # The free space measured before: this one batch does not change whether the
            # disk is tight (below the watermark the WAL is truncated anyway).
            self._after_commit_locked(free=free if wm_budget is None else None)
        failpoint("edge.buffer.after_commit")
        return seqs

    def _new_keys_locked(self, keys: list[bytes]) -> list[bytes]:
        if not self._key_limit:
            return []
        new: list[bytes] = []
        seen: set[bytes] = set()
        for key in keys:
            if key not in self._msg_set and key not in seen:
                seen.add(key)
                new.append(key)
        # More new keys than the table holds: only the newest can be kept anyway.
        return new[len(new) - self._key_limit :] if len(new) > self._key_limit else new

    def _write_marks_locked(self, marks: dict[tuple[str, str], int]) -> None:
        changed = [(i, m, v) for (i, m), v in marks.items() if self._sample_marks.get((i, m)) != v]
        if changed:
            self._conn.executemany(
                "INSERT INTO sample_marks (input, machine_id, sample) VALUES (?, ?, ?) "
                "ON CONFLICT(input, machine_id) DO UPDATE SET sample = excluded.sample",
                changed,
            )

    def sample_marks(self, input_name: str) -> dict[str, int]:
        """The sample counter input ``input_name`` committed last, per machine id."""
        with self._lock:
            return {m: v for (i, m), v in self._sample_marks.items() if i == input_name}

    def has_message(self, key: bytes) -> bool:
        """Whether a message with this digest had its readings committed (among the newest
        ``recent_message_keys``). Without the lock, so an event loop asking is never held up
        by a commit's fsync: the set changes only after a commit, one atomic step at a time."""
        return key in self._msg_set

    def _drop_oldest_locked(self, need: int, below_seq: int) -> tuple[int, int]:
        """Delete the oldest readings with ``seq < below_seq`` until about ``need`` bytes of
        pages are emptied; inside a transaction. Returns (rows, payload bytes)."""
        conn = self._conn
        got = n = size_sum = 0
        cut = None
        cursor = conn.execute(
            "SELECT seq, bytes FROM readings WHERE seq < ? ORDER BY seq", (below_seq,)
        )
        for seq, size in cursor:
            cut = seq
            n += 1
            size_sum += int(size)
            got += int(size) + _ROW_OVERHEAD
            if got >= need:
                break
        cursor.close()
        if cut is not None:
            conn.execute("DELETE FROM readings WHERE seq <= ?", (cut,))
        return n, size_sum

    def _enforce_limits_locked(
        self, first_new_seq: int, end_seq: int, wm_budget: int | None, reserve: int = 0
    ) -> tuple[int, int]:
        """Delete the oldest readings until the pages in use, plus ``reserve``, fit the cap
        and, below the free-space watermark, ``wm_budget``; called inside the write
        transaction. Pages are measured, not estimated, so indexes, set-aside rows, digests
        and half-empty pages all count. The cap may take rows of this batch (never its newest
        one); the watermark only takes older rows."""
        dropped = dropped_bytes = 0
        for attempt in range(1, 65):
            used = self._used_bytes_locked() + reserve
            over_cap = used - self._db_budget
            over_wm = used - wm_budget if wm_budget is not None else 0
            if over_cap <= 0 and over_wm <= 0:
                break
            below = max(first_new_seq, end_seq - 1) if over_cap > 0 else first_new_seq
            # Only emptied pages are freed: ask for a little more each round.
            need = max(over_cap, over_wm) + attempt * self._page_size
            n, size_sum = self._drop_oldest_locked(need, below)
            if not n:
                break
            dropped += n
            dropped_bytes += size_sum
        if dropped:
            self._conn.execute(
                "UPDATE meta SET value = value + ? WHERE key = 'dropped_total'", (dropped,)
            )
            self._note_dropped(dropped, "over the cap or the free-space watermark")
        return dropped, dropped_bytes

    def _make_room_locked(self) -> int:
        """Below the free-space watermark, before the append: drop the oldest readings and
        hand free pages back to the filesystem until the shortfall is made up. In small
        transactions, each followed by a truncating checkpoint: deleting rows and moving
        pages both go through the WAL, which needs room the disk may no longer have. Files
        from before schema 2 have no incremental auto-vacuum and only stop growing. Bounded
        per call; the next append continues. Returns the budget (bytes of pages in use) the
        append must keep to: what the buffer occupies on disk minus the shortfall."""
        conn = self._conn
        ps = self._page_size
        budget = 0
        # A reader holding a snapshot makes a checkpoint give up instead of waiting.
        conn.execute("PRAGMA busy_timeout=0")
        try:
            for _ in range(_MAKE_ROOM_ROUNDS):
                free = free_bytes(self._dir)
                on_disk = _file_size(self.path) + _file_size(self._wal_path)
                budget = on_disk - (self.min_free_bytes - free)
                if free >= self.min_free_bytes:
                    break
                room = max(4 * ps, free // 4)  # WAL this round may take
                free_pages = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
                if self._incremental and free_pages:
                    # A moved page costs a few WAL frames (page, parent, pointer map).
                    self._vacuum_locked(min(free_pages, max(1, room // (4 * ps))))
                else:
                    over = self._used_bytes_locked() - budget
                    if over <= 0 or not self._drop_committed_locked(min(over + ps, room)):
                        break
                if conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]:
                    break  # a reader holds the WAL: what was freed is not free yet
        finally:
            conn.execute("PRAGMA busy_timeout=5000")
        return budget

    def _drop_committed_locked(self, need: int) -> int:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            n, size_sum = self._drop_oldest_locked(need, self._next_seq)
            if n:
                conn.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped_total'", (n,))
            conn.execute("COMMIT")
        except BaseException:
            self._rollback_quietly()
            raise
        self._bytes -= size_sum
        self._depth -= n
        self._dropped += n
        if n:
            self._note_dropped(n, "free space below min_free_bytes")
        return n

    def _vacuum_locked(self, pages: int) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Each step of the pragma frees one page, and Python's sqlite3 steps a statement
            # that returns no columns only once.
            for _ in range(pages):
                conn.execute("PRAGMA incremental_vacuum(1)")
            conn.execute("COMMIT")
        except BaseException:
            self._rollback_quietly()
            raise

    def _free_bytes(self) -> int | None:
        try:
            return free_bytes(self._dir)
        except OSError as exc:
            # Without a figure the watermark cannot act; the write itself will say what is
            # wrong with the directory if anything is.
            self._warn_throttled("edge buffer cannot read the free space", error=str(exc))
            return None

    def _after_commit_locked(self, free: int | None = None) -> None:
        """Checkpoint policy, after a successful commit: never raises (the caller must not
        take a committed batch for a failed one). Normally ``wal_autocheckpoint`` keeps the
        WAL near ``wal_limit``. A reader holding a snapshot can stop that, so a WAL past twice
        the limit is checkpointed and truncated here. So it is after every commit when the
        disk is tight (free space under the watermark plus twice the WAL limit): a
        checkpoint writes the WAL's pages into the database file while the WAL still exists,
        so a big WAL on a nearly full disk could never be checkpointed again."""
        try:
            wal = _file_size(self._wal_path)
            tight = self.min_free_bytes + 2 * self._wal_limit
            if wal <= 2 * self._wal_limit:
                if wal == 0:
                    return
                if (free_bytes(self._dir) if free is None else free) >= tight:
                    return
            conn = self._conn
            # Never wait for a reader here: the writer is holding readings in memory.
            conn.execute("PRAGMA busy_timeout=0")
            try:
                busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            finally:
                conn.execute("PRAGMA busy_timeout=5000")
            if busy and wal > 2 * self._wal_limit:
                self._warn_throttled(
                    "edge buffer WAL cannot be checkpointed: another process holds a read "
                    "transaction on the buffer",
                    wal_bytes=wal,
                )
        except (sqlite3.Error, OSError) as exc:
            self._warn_throttled("edge buffer checkpoint failed", error=str(exc))

    def _note_dropped(self, n: int, reason: str) -> None:
        """Dropping readings is counted in ``dropped_total``; an operator reading the log
        must see it too, but on a full disk every commit drops: once a minute at most, with
        how many went since the last line."""
        self._dropped_unlogged += n
        now = time.monotonic()
        if now - self._drop_logged_at < _WAL_WARN_INTERVAL_S:
            return
        self._drop_logged_at = now
        log_event(
            log,
            logging.WARNING,
            "edge buffer dropped its oldest readings",
            path=str(self.path),
            reason=reason,
            dropped=self._dropped_unlogged,
        )
        self._dropped_unlogged = 0

    def _warn_throttled(self, event: str, **fields: object) -> None:
        # Once a minute at most: on a full disk every commit would say it again.
        now = time.monotonic()
        if now - self._wal_warned_at > _WAL_WARN_INTERVAL_S:
            self._wal_warned_at = now
            log_event(log, logging.WARNING, event, path=str(self.path), **fields)

    def set_aside(
        self, items: Sequence[tuple[str, bytes, str]], sample_marks: SampleMarks | None = None
    ) -> int:
        """Keep readings that could not be encoded or validated — so never got a seq — in
        ``rejected`` with their reason: ``(machine_id, best-effort payload, reason)``, and
        the sample counters they carried (``sample_marks``, as in ``append_many``). Never
        fails on odd values (they are sanitised and truncated); raises only ``sqlite3.Error``.
        Returns how many rows were stored (some may be evicted at once by the cap)."""
        marks = _checked_marks(sample_marks)
        if not items and not marks:
            return 0
        now = time.time()
        rows: list[tuple[str, bytes, str, float, int]] = []
        for machine_id, payload, reason in items:
            raw = _payload_bytes(payload)
            text = _clean_text(reason, _REASON_LIMIT)
            if len(raw) > self._set_aside_limit:
                text += f" (payload truncated from {len(raw)} bytes)"
                raw = raw[: self._set_aside_limit]
            size = len(raw) + len(text.encode())
            rows.append((_clean_text(machine_id, _MACHINE_ID_LIMIT), raw, text, now, size))
        added = sum(r[4] for r in rows)
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO rejected (seq, machine_id, payload, reason, at, bytes) "
                    "VALUES (NULL, ?, ?, ?, ?, ?)",
                    rows,
                )
                evicted, freed = self._cap_rejected_locked(added) if rows else (0, 0)
                self._write_marks_locked(marks)
                conn.execute("COMMIT")
            except BaseException:
                self._rollback_quietly()
                raise
            self._sample_marks.update(marks)
            self._rejected_rows += len(rows) - evicted
            self._rejected_bytes += added - freed
            self._rejected_dropped += evicted
            self._used_hint += self._upper_estimate(r[4] for r in rows)
            self._after_commit_locked()
        return len(rows)

    def _cap_rejected_locked(self, added: int) -> tuple[int, int]:
        """Delete the oldest rejected rows past the cap; inside the write transaction."""
        excess = self._rejected_bytes + added - self._rejected_cap
        if excess <= 0:
            return 0, 0
        conn = self._conn
        n = freed = 0
        cut = None
        cursor = conn.execute("SELECT id, bytes FROM rejected ORDER BY id")
        for row_id, size in cursor:
            cut = row_id
            n += 1
            freed += int(size)
            if freed >= excess:
                break
        cursor.close()
        if cut is None:
            return 0, 0
        conn.execute("DELETE FROM rejected WHERE id <= ?", (cut,))
        conn.execute("UPDATE meta SET value = value + ? WHERE key = 'rejected_dropped_total'", (n,))
        return n, freed

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
        keys = list(seqs)
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
                    chunk = keys[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    for (size,) in conn.execute(
                        f"DELETE FROM readings WHERE seq IN ({marks}) RETURNING bytes", chunk
                    ).fetchall():
                        deleted += 1
                        freed += int(size)
                conn.execute("COMMIT")
            except BaseException:
                self._rollback_quietly()
                raise
            self._bytes -= freed
            self._depth -= deleted
            self._after_commit_locked()
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
            moved = freed = added = 0
            try:
                for seq, reason in reasons.items():
                    row = conn.execute(
                        "DELETE FROM readings WHERE seq = ? RETURNING machine_id, payload, bytes",
                        (seq,),
                    ).fetchone()
                    if row is None:
                        continue
                    text = _clean_text(reason, _REASON_LIMIT)
                    size = len(row[1]) + len(text.encode())
                    conn.execute(
                        "INSERT INTO rejected (seq, machine_id, payload, reason, at, bytes) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (seq, row[0], row[1], text, now, size),
                    )
                    moved += 1
                    freed += int(row[2])
                    added += size
                evicted, evicted_bytes = self._cap_rejected_locked(added)
                conn.execute("COMMIT")
            except BaseException:
                self._rollback_quietly()
                raise
            self._bytes -= freed
            self._depth -= moved
            self._rejected_rows += moved - evicted
            self._rejected_bytes += added - evicted_bytes
            self._rejected_dropped += evicted
            # The moved rows now carry a reason too.
            self._used_hint += self._upper_estimate([added - freed]) if moved else 0
            self._after_commit_locked()
            return moved

    # -- introspection ------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Readings waiting to be forwarded (kept in memory: no query)."""
        return self._depth

    def stats(self) -> BufferStats:
        with self._lock:
            oldest = self._conn.execute("SELECT min(seq) FROM readings").fetchone()[0]
            return BufferStats(
                self._depth,
                self._bytes,
                self._dropped,
                self._next_seq,
                oldest,
                rejected=self._rejected_rows,
                rejected_dropped_total=self._rejected_dropped,
                disk_bytes=disk_bytes(self.path),
                free_bytes=self._free_bytes() or 0,
            )

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                # A full disk must not turn a clean shutdown into a crash; the WAL is
                # replayed at the next start.
                log_event(
                    log, logging.WARNING, "edge buffer checkpoint at close failed", error=str(exc)
                )
            finally:
                self._conn.close()


def read_stats_readonly(path: Path) -> BufferStats:
    """Buffer figures for ``rig-edge status`` without disturbing a running daemon; also
    reads files of schema 1 (before the first start of this version migrates them)."""
    path = Path(path)
    conn = sqlite3.connect(_readonly_uri(path), uri=True)
    try:
        depth, total, oldest, newest = conn.execute(
            "SELECT count(*), coalesce(sum(bytes), 0), min(seq), max(seq) FROM readings"
        ).fetchone()
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        rejected = (
            conn.execute("SELECT count(*) FROM rejected").fetchone()[0]
            if "rejected" in tables
            else 0
        )
        last = max(v for v in (meta.get("last_seq"), newest, -1) if v is not None)
        return BufferStats(
            int(depth),
            int(total),
            int(meta.get("dropped_total") or 0),
            last + 1,
            oldest,
            rejected=int(rejected),
            rejected_dropped_total=int(meta.get("rejected_dropped_total") or 0),
            disk_bytes=disk_bytes(path),
            free_bytes=free_bytes(path.parent),
        )
    finally:
        conn.close()
