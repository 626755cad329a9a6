"""The buffer file after things went wrong: corrupt files are moved aside and a fresh buffer
starts, a torn WAL is not mistaken for corruption, errors that are not corruption still stop
the start with the path named, old files migrate in place, and a SIGKILL right after a commit
keeps readings and message digests together."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.buffer import StoreAndForwardBuffer, is_corruption, read_stats_readonly
from shared.message import Reading, decode_reading

REPO = Path(__file__).resolve().parents[1]


def _readings(n: int) -> list[Reading]:
    now = datetime.now(UTC)
    return [Reading("A", "edge-1", 0, now, {"temperature": float(i)}) for i in range(n)]


def _filled(path: Path, n: int = 2000) -> list[int]:
    buf = StoreAndForwardBuffer(path, min_free_bytes=0)
    seqs = buf.append_many(_readings(n), [b"old-message"])
    buf.close()
    return seqs


def _random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(50_000))


def _truncated(path: Path) -> None:
    _filled(path)
    os.truncate(path, path.stat().st_size // 2)


def _garbage_pages(path: Path) -> None:
    # A valid header and schema page, then noise where the tables are.
    _filled(path)
    data = bytearray(path.read_bytes())
    data[4096 * 2 :] = os.urandom(len(data) - 4096 * 2)
    path.write_bytes(bytes(data))


def _garbage_schema_page(path: Path) -> None:
    _filled(path)
    data = bytearray(path.read_bytes())
    data[100:4096] = os.urandom(4096 - 100)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage", [_random_bytes, _truncated, _garbage_pages, _garbage_schema_page]
)
def test_corrupt_file_is_moved_aside_and_a_fresh_buffer_starts(
    tmp_path: Path, damage: Callable[[Path], None], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "buffer.db"
    damage(path)
    damaged = path.read_bytes()
    before = datetime.now(UTC)
    with caplog.at_level(logging.CRITICAL, logger="edge.buffer"):
        buf = StoreAndForwardBuffer(path, min_free_bytes=0)
    moved = buf.recovered_from
    assert moved is not None
    assert moved.parent == path.parent
    assert moved.name.startswith("buffer.db.corrupt-")
    stamp = datetime.strptime(moved.name.removeprefix("buffer.db.corrupt-"), "%Y%m%dT%H%M%S.%fZ")
    assert abs(stamp.replace(tzinfo=UTC) - before).total_seconds() < 60
    assert moved.read_bytes() == damaged  # kept for a technician, untouched
    assert any(
        r.levelno == logging.CRITICAL and str(moved) in str(r.fields) for r in caplog.records
    )
    # The fresh buffer works and starts above anything the old file can have used.
    seqs = buf.append_many(_readings(3), [b"m"])
    assert seqs[0] > before.timestamp() * 1_000_000
    assert buf.has_message(b"m") and not buf.has_message(b"old-message")
    stats = buf.stats()
    assert (stats.depth, stats.dropped_total, stats.rejected) == (3, 0, 0)
    buf.close()
    # And the next start is an ordinary one.
    buf = StoreAndForwardBuffer(path, min_free_bytes=0)
    assert buf.recovered_from is None
    assert [b.seq for b in buf.peek(10)] == seqs
    buf.close()


def test_corrupt_wal_goes_aside_with_its_file(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    path.write_bytes(os.urandom(20_000))
    Path(f"{path}-wal").write_bytes(b"wal of the damaged file")
    buf = StoreAndForwardBuffer(path, min_free_bytes=0)
    assert buf.recovered_from is not None
    assert Path(f"{buf.recovered_from}-wal").read_bytes() == b"wal of the damaged file"
    assert buf.stats().depth == 0
    buf.close()


def _crash_with_wal(path: Path, batches: int) -> None:
    """Commit ``batches`` batches in a process SIGKILLed right after the last commit, so the
    commits are still in the WAL (no checkpoint at close)."""
    code = textwrap.dedent(
        f"""
        from datetime import UTC, datetime
        from pathlib import Path
        from edge.buffer import StoreAndForwardBuffer
        from shared.message import Reading
        buf = StoreAndForwardBuffer(Path({str(path)!r}), min_free_bytes=0)
        for b in range({batches}):
            now = datetime.now(UTC)
            readings = [Reading("A", "edge-1", 0, now, {{"t": float(i)}}) for i in range(50)]
            buf.append_many(readings, [b"msg-%d" % b])
        raise SystemExit("the failpoint did not fire")
        """
    )
    env = {**os.environ, "RIG_FAILPOINTS": f"edge.buffer.after_commit={batches}"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()


def test_torn_wal_tail_is_not_corruption(tmp_path: Path) -> None:
    """A power cut mid-write leaves a partial last frame: SQLite ignores frames after the
    last intact commit. The buffer must start normally with every commit before it."""
    path = tmp_path / "buffer.db"
    _crash_with_wal(path, batches=5)
    wal = Path(f"{path}-wal")
    assert wal.stat().st_size > 0
    os.truncate(wal, wal.stat().st_size - 1000)
    buf = StoreAndForwardBuffer(path, min_free_bytes=0)
    assert buf.recovered_from is None
    depth = buf.stats().depth
    assert depth % 50 == 0 and 0 < depth < 250  # whole batches only, the torn one gone
    kept = depth // 50
    assert [buf.has_message(b"msg-%d" % b) for b in range(5)] == [True] * kept + [False] * (
        5 - kept
    )
    buf.close()


def test_garbage_wal_is_not_corruption(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    seqs = _filled(path, 10)
    Path(f"{path}-wal").write_bytes(os.urandom(10_000))
    buf = StoreAndForwardBuffer(path, min_free_bytes=0)
    assert buf.recovered_from is None
    assert [b.seq for b in buf.peek(100)] == seqs
    buf.close()


def test_errors_that_are_not_corruption_stop_the_start_and_name_the_path(
    tmp_path: Path,
) -> None:
    # A directory where the file should be: SQLite cannot open it; nothing is moved.
    path = tmp_path / "buffer.db"
    path.mkdir()
    with pytest.raises(sqlite3.OperationalError, match=str(path)):
        StoreAndForwardBuffer(path, min_free_bytes=0)
    assert path.is_dir() and list(tmp_path.iterdir()) == [path]
    # A file where its directory should be.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(OSError, match="not-a-dir"):
        StoreAndForwardBuffer(blocker / "buffer.db", min_free_bytes=0)


def test_a_newer_schema_is_refused_not_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    _filled(path, 1)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="schema version 99"):
        StoreAndForwardBuffer(path, min_free_bytes=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["buffer.db"]


def test_schema_2_file_gains_sample_marks_and_keeps_its_readings(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    buf = StoreAndForwardBuffer(path, min_free_bytes=0)
    seqs = buf.append_many(_readings(2), [b"k"])
    buf.close()
    # What a schema-2 rig-edge left: no sample_marks table.
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE sample_marks")
    conn.execute("UPDATE meta SET value = 2 WHERE key = 'schema_version'")
    conn.commit()
    conn.close()

    buf = StoreAndForwardBuffer(path, min_free_bytes=0)
    assert buf._meta("schema_version") == 3
    assert [r.seq for r in buf.peek(10)] == seqs and buf.has_message(b"k")
    buf.append_many(_readings(1), sample_marks={("plc", "A"): 5})
    buf.close()
    buf = StoreAndForwardBuffer(path, min_free_bytes=0)
    assert buf.sample_marks("plc") == {"A": 5}
    buf.close()


# -- schema 1 files --------------------------------------------------------------------------
# Exactly what the schema-1 buffer (sqlite_utils) created.
_V1_SCHEMA = """
CREATE TABLE "readings" (
   "seq" INTEGER PRIMARY KEY,
   "machine_id" TEXT,
   "payload" BLOB,
   "bytes" INTEGER
);
CREATE TABLE "rejected" (
   "seq" INTEGER PRIMARY KEY,
   "machine_id" TEXT,
   "payload" BLOB,
   "reason" TEXT,
   "at" REAL
);
CREATE TABLE "meta" (
   "key" TEXT PRIMARY KEY,
   "value" INTEGER
);
INSERT INTO meta VALUES ('schema_version', 1), ('dropped_total', 7), ('last_seq', 1010);
PRAGMA journal_mode=WAL;
"""


def test_schema_1_file_migrates_in_place(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    conn = sqlite3.connect(path)
    conn.executescript(_V1_SCHEMA)
    old = _readings(3)
    for seq, reading in zip((1008, 1009, 1010), old, strict=True):
        reading.seq = seq
        from shared.message import encode_reading

        payload = encode_reading(reading)
        conn.execute("INSERT INTO readings VALUES (?, ?, ?, ?)", (seq, "A", payload, len(payload)))
    conn.execute("INSERT INTO rejected VALUES (1001, 'A', x'7b7d', 'HTTP 422: old', 100.0)")
    conn.execute("INSERT INTO rejected VALUES (1000, 'B', x'7b7d', 'HTTP 422: older', 50.0)")
    conn.commit()
    conn.close()

    # rig-edge status on the old file, before any daemon of this version touched it.
    old_stats = read_stats_readonly(path)
    assert (old_stats.depth, old_stats.dropped_total, old_stats.next_seq) == (3, 7, 1011)
    assert (old_stats.rejected, old_stats.rejected_dropped_total) == (2, 0)

    buf = StoreAndForwardBuffer(path, min_free_bytes=0)
    assert buf.recovered_from is None
    stats = buf.stats()
    assert (stats.depth, stats.dropped_total, stats.next_seq, stats.oldest_seq) == (
        3,
        7,
        1011,
        1008,
    )
    assert (stats.rejected, stats.rejected_dropped_total) == (2, 0)
    rows = buf._conn.execute("SELECT id, seq, reason, bytes FROM rejected ORDER BY id").fetchall()
    # Old rows keep their seq, get ids in the order they were rejected, and a byte count.
    assert [(r[1], r[2]) for r in rows] == [(1000, "HTTP 422: older"), (1001, "HTTP 422: old")]
    assert rows[0][0] < rows[1][0]
    assert all(r[3] == 2 + len(r[2]) for r in rows)
    assert buf._meta("schema_version") == 3
    # Everything new works on the migrated file.
    assert buf.append_many(_readings(1), [b"k"]) == [1011]
    assert buf.set_aside([("A", b"?", "unencodable")]) == 1
    assert buf.reject({1008: "HTTP 422: new"}) == 1
    assert decode_reading(buf.peek(1)[0].payload).seq == 1009
    buf.close()
    buf = StoreAndForwardBuffer(path, min_free_bytes=0)
    assert buf.has_message(b"k")
    assert buf.stats().rejected == 4
    buf.close()
    assert read_stats_readonly(path).rejected == 4


# -- crash right after a commit ------------------------------------------------------------
def test_sigkill_after_commit_keeps_readings_and_message_keys_together(tmp_path: Path) -> None:
    """The failpoint kills the process right after the second commit, before anything could
    acknowledge the messages: after a restart both batches and both digests are there, so
    the redelivered messages are recognised and not committed again."""
    path = tmp_path / "buffer.db"
    _crash_with_wal(path, batches=2)
    buf = StoreAndForwardBuffer(path, min_free_bytes=0)
    assert buf.recovered_from is None
    assert buf.stats().depth == 100
    assert buf.has_message(b"msg-0") and buf.has_message(b"msg-1")
    assert not buf.has_message(b"msg-2")
    seqs = [b.seq for b in buf.peek(1000)]
    assert seqs == list(range(seqs[0], seqs[0] + 100))
    assert buf.append_many(_readings(1)) == [seqs[-1] + 1]
    buf.close()


def test_wal_of_a_corrupt_file_is_kept_byte_for_byte(tmp_path: Path) -> None:
    """The newest commits of a damaged buffer live in its WAL: SQLite would delete it when the
    failed connection closes, so it must reach the moved-aside copy unchanged."""
    path = tmp_path / "buffer.db"
    _filled(path)  # checkpointed into the file at close
    _crash_with_wal(path, batches=3)  # these only in the WAL
    wal = Path(f"{path}-wal").read_bytes()
    assert wal
    # Damage pages the WAL does not supersede: the old readings in the middle of the file.
    data = bytearray(path.read_bytes())
    middle = len(data) // 2 // 4096 * 4096
    data[middle : middle + 8 * 4096] = os.urandom(8 * 4096)
    path.write_bytes(bytes(data))
    # A clock gone back to 1970 µs: the fresh buffer still starts above the old sequence,
    # read from the copy (its WAL holds the last one).
    buf = StoreAndForwardBuffer(path, min_free_bytes=0, clock_us=lambda: 1)
    assert buf.recovered_from is not None
    assert Path(f"{buf.recovered_from}-wal").read_bytes() == wal
    assert not Path(f"{path}-wal.opening").exists()
    assert buf.stats().depth == 0
    copy = sqlite3.connect(f"file:{buf.recovered_from}?mode=ro", uri=True)
    last_crashed = copy.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()[0]
    copy.close()
    assert buf.append_many(_readings(1)) == [last_crashed + 1]
    buf.close()


def test_is_corruption_tells_damage_from_other_errors(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(os.urandom(8192))
    conn = sqlite3.connect(damaged)
    with pytest.raises(sqlite3.DatabaseError) as corrupt:
        conn.execute("SELECT * FROM sqlite_master").fetchall()
    conn.close()
    assert is_corruption(corrupt.value)
    with pytest.raises(sqlite3.OperationalError) as cannot_open:
        sqlite3.connect(tmp_path / "missing-dir" / "x.db")
    assert not is_corruption(cannot_open.value)
    assert not is_corruption(ValueError("x"))
