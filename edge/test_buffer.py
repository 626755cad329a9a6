import os
import sqlite3
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from edge.buffer import SET_ASIDE_PAYLOAD_LIMIT, StoreAndForwardBuffer, read_stats_readonly
from shared.message import Reading, decode_reading


def _readings(n: int, machine: str = "A") -> list[Reading]:
    now = datetime.now(UTC)
    return [Reading(machine, "edge-1", 0, now, {"temperature": float(i)}) for i in range(n)]


def test_sequence_numbers_are_assigned_at_commit_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    buf = StoreAndForwardBuffer(path, clock_us=lambda: 1000)
    assert buf.append_many(_readings(3)) == [1000, 1001, 1002]
    batch = buf.peek(10)
    assert [b.seq for b in batch] == [1000, 1001, 1002]
    assert decode_reading(batch[1].payload).seq == 1001
    buf.ack([1000, 1001, 1002])
    buf.close()
    # Everything was forwarded and deleted; the sequence still continues after a restart.
    buf = StoreAndForwardBuffer(path, clock_us=lambda: 1)
    assert buf.append_many(_readings(1)) == [1003]
    buf.close()


def test_fresh_buffer_starts_above_a_deleted_one(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    buf = StoreAndForwardBuffer(path)
    first = buf.append_many(_readings(5))
    buf.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    time.sleep(0.001)
    buf = StoreAndForwardBuffer(path)
    assert buf.append_many(_readings(1))[0] > first[-1]
    buf.close()


def test_ack_deletes_only_confirmed(tmp_path: Path) -> None:
    buf = StoreAndForwardBuffer(tmp_path / "b.db")
    seqs = buf.append_many(_readings(4))
    assert buf.ack([seqs[0], seqs[2]]) == 2
    assert [b.seq for b in buf.peek(10)] == [seqs[1], seqs[3]]
    assert buf.stats().depth == 2
    buf.close()


def test_cap_drops_oldest_first_and_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="edge.buffer")
    buf = StoreAndForwardBuffer(tmp_path / "b.db", max_bytes=1 << 16)
    all_seqs = []
    for _ in range(40):
        all_seqs += buf.append_many(_readings(20))
    stats = buf.stats()
    assert stats.bytes <= 1 << 16
    assert stats.dropped_total > 0
    assert stats.dropped_total + stats.depth == len(all_seqs)
    remaining = [b.seq for b in buf.peek(100_000)]
    # What is left is exactly the newest readings, in order.
    assert remaining == all_seqs[-len(remaining) :]
    # Counted, and said in the log too (once: the line is rate-limited).
    said = [r for r in caplog.records if "dropped its oldest readings" in r.getMessage()]
    assert len(said) == 1
    buf.close()
    assert read_stats_readonly(tmp_path / "b.db").dropped_total == stats.dropped_total


def test_rejected_readings_are_kept_aside(tmp_path: Path) -> None:
    buf = StoreAndForwardBuffer(tmp_path / "b.db")
    seqs = buf.append_many(_readings(2))
    assert buf.reject({seqs[0]: "HTTP 422: bad"}) == 1
    assert [b.seq for b in buf.peek(10)] == [seqs[1]]
    row = buf._conn.execute("SELECT reason FROM rejected").fetchone()
    assert row == ("HTTP 422: bad",)
    buf.close()


# -- message digests ------------------------------------------------------------------------
def test_message_keys_are_committed_with_their_readings_and_survive_reopen(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.db"
    buf = StoreAndForwardBuffer(path)
    assert not buf.has_message(b"k1")
    buf.append_many(_readings(2), [b"k1", b"k2"])
    assert buf.has_message(b"k1") and buf.has_message(b"k2")
    # A message whose readings were all set aside still has to be recognised.
    assert buf.append_many([], [b"k3"]) == []
    buf.close()
    buf = StoreAndForwardBuffer(path)
    assert all(buf.has_message(k) for k in (b"k1", b"k2", b"k3"))
    assert not buf.has_message(b"k4")
    buf.close()


def test_only_the_newest_message_keys_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    buf = StoreAndForwardBuffer(path, recent_message_keys=100)
    keys = [i.to_bytes(8, "big") for i in range(250)]
    for start in range(0, 250, 25):
        buf.append_many(_readings(1), keys[start : start + 25])
    assert [buf.has_message(k) for k in keys] == [False] * 150 + [True] * 100
    # A key seen again is not stored twice (the table would hold fewer distinct keys).
    buf.append_many(_readings(1), [keys[-1], keys[-1]])
    assert buf._conn.execute("SELECT count(*) FROM recent_messages").fetchone()[0] == 100
    buf.close()
    buf = StoreAndForwardBuffer(path, recent_message_keys=100)
    assert [buf.has_message(k) for k in keys] == [False] * 150 + [True] * 100
    buf.close()
    # A smaller limit at the next start keeps the newest.
    buf = StoreAndForwardBuffer(path, recent_message_keys=70)
    assert [buf.has_message(k) for k in keys] == [False] * 180 + [True] * 70
    buf.append_many(_readings(1), [b"new"])
    assert buf.has_message(b"new") and not buf.has_message(keys[180])
    buf.close()


@pytest.mark.parametrize("bad", [b"", b"x" * 33, "text"])
def test_a_bad_message_key_is_refused_before_anything_is_written(
    tmp_path: Path, bad: object
) -> None:
    buf = StoreAndForwardBuffer(tmp_path / "b.db")
    with pytest.raises(ValueError, match="message_keys"):
        buf.append_many(_readings(1), [b"good", bad])  # type: ignore[list-item]  # on purpose
    assert buf.stats().depth == 0 and not buf.has_message(b"good")
    buf.close()


def test_sample_marks_are_committed_with_readings_or_set_asides_and_survive_reopen(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.db"
    buf = StoreAndForwardBuffer(path)
    assert buf.sample_marks("plc") == {}
    buf.append_many(_readings(1), sample_marks={("plc", "A"): 41, ("plc", "B"): 7})
    buf.append_many(_readings(1), sample_marks={("plc", "A"): 42, ("opc", "A"): 3})
    # A reading set aside was recorded all the same: its mark moves too.
    buf.set_aside([("B", b"{}", "refused")], sample_marks={("plc", "B"): 8})
    buf.close()
    buf = StoreAndForwardBuffer(path)
    assert buf.sample_marks("plc") == {"A": 42, "B": 8}
    assert buf.sample_marks("opc") == {"A": 3}
    buf.close()


def test_a_mark_beyond_64_bits_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    buf = StoreAndForwardBuffer(tmp_path / "b.db")
    with pytest.raises(ValueError, match=r"sample_marks\['plc', 'A'\]"):
        buf.append_many(_readings(1), sample_marks={("plc", "A"): 1 << 64})
    assert buf.stats().depth == 0 and buf.sample_marks("plc") == {}
    buf.close()


# -- readings that never got a seq, and the rejected table ---------------------------------
def test_an_unencodable_reading_leaves_the_buffer_untouched(tmp_path: Path) -> None:
    buf = StoreAndForwardBuffer(tmp_path / "b.db")
    before = buf.stats().next_seq
    bad = Reading("A", "edge-1", 0, datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))), {})
    with pytest.raises(OverflowError):
        buf.append_many([*_readings(1), bad], [b"m"])
    stats = buf.stats()
    assert (stats.depth, stats.next_seq) == (0, before)
    assert not buf.has_message(b"m")
    assert buf.append_many(_readings(1)) == [before]
    buf.close()


def test_set_aside_keeps_odd_input_with_its_reason(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    buf = StoreAndForwardBuffer(path)
    seqs = buf.append_many(_readings(1))
    huge = b"{" + b"x" * 200_000
    stored = buf.set_aside(
        [
            ("A", b'{"time":"0001-01-01T00:00:00+01:00"}', "timestamp: date value out of range"),
            ("bad\udcff\x00id", huge, "reading is 200001 bytes"),
            ("B", "not bytes \udc80", 12345),  # type: ignore[list-item]  # wrong on purpose
        ]
    )
    assert stored == 3
    rows = buf._conn.execute(
        "SELECT id, seq, machine_id, length(payload), reason FROM rejected ORDER BY id"
    ).fetchall()
    assert [r[1] for r in rows] == [None, None, None]  # never got a seq
    assert rows[0][4] == "timestamp: date value out of range"
    assert rows[1][2] == "bad\\udcff\x00id"
    assert rows[1][3] == SET_ASIDE_PAYLOAD_LIMIT
    assert "payload truncated from 200001 bytes" in rows[1][4]
    assert rows[2][4] == "12345"
    # Readings are not affected, and a refused reading keeps its seq beside them.
    assert buf.reject({seqs[0]: "HTTP 422: bad"}) == 1
    assert buf._conn.execute("SELECT seq FROM rejected ORDER BY id DESC LIMIT 1").fetchone() == (
        seqs[0],
    )
    stats = buf.stats()
    assert (stats.depth, stats.rejected, stats.rejected_dropped_total) == (0, 4, 0)
    buf.close()
    assert read_stats_readonly(path).rejected == 4


def test_rejected_table_is_capped_oldest_first_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    buf = StoreAndForwardBuffer(path, max_rejected_bytes=20_000)
    for i in range(30):
        buf.set_aside([("A", bytes([i]) * 1000, f"bad {i}")])
    seqs = buf.append_many(_readings(10))
    buf.reject({s: "HTTP 422: refused" for s in seqs})
    stats = buf.stats()
    total_bytes = buf._conn.execute("SELECT sum(bytes) FROM rejected").fetchone()[0]
    assert total_bytes <= 20_000
    assert stats.rejected + stats.rejected_dropped_total == 40
    assert stats.rejected_dropped_total > 0
    reasons = [r[0] for r in buf._conn.execute("SELECT reason FROM rejected ORDER BY id")]
    # What is left is the newest: all ten refused readings and the last set-aside rows.
    assert reasons[-10:] == ["HTTP 422: refused"] * 10
    kept = [int(r.split()[1]) for r in reasons[:-10]]
    assert kept == list(range(30 - len(kept), 30))
    buf.close()
    again = read_stats_readonly(path)
    assert (again.rejected, again.rejected_dropped_total) == (
        stats.rejected,
        stats.rejected_dropped_total,
    )
    buf = StoreAndForwardBuffer(path, max_rejected_bytes=20_000)
    assert buf.stats().rejected_dropped_total == stats.rejected_dropped_total
    buf.close()


# -- disk ---------------------------------------------------------------------------------
def _big_readings(n: int) -> list[Reading]:
    now = datetime.now(UTC)
    return [
        Reading("A", "edge-1", 0, now, {f"sensor_{j}": float(j) for j in range(30)})
        for _ in range(n)
    ]


def test_cap_bounds_the_files_not_just_the_payload(tmp_path: Path) -> None:
    """Digests, set-aside rows and page overhead count against the cap too: the database file
    plus its WAL stay within max_bytes."""
    path = tmp_path / "b.db"
    cap = 256 * 1024
    buf = StoreAndForwardBuffer(path, max_bytes=cap, min_free_bytes=0, synchronous="NORMAL")
    total = 0
    for i in range(300):
        buf.append_many(_big_readings(20), [os.urandom(32) for _ in range(20)])
        total += 20
        if i % 10 == 0:
            buf.set_aside([("A", os.urandom(2000), "bad")])
        on_disk = sum(Path(f"{path}{s}").stat().st_size for s in ("", "-wal"))
        assert on_disk <= cap, f"after batch {i}: {on_disk} bytes on disk"
    stats = buf.stats()
    assert stats.dropped_total > 0
    assert stats.dropped_total + stats.depth == total
    assert stats.disk_bytes >= on_disk  # plus the -shm index
    remaining = [b.seq for b in buf.peek(100_000)]
    assert remaining == list(range(stats.next_seq - len(remaining), stats.next_seq))
    buf.close()


def test_free_space_watermark_drops_oldest_first_and_counts(tmp_path: Path) -> None:
    # A watermark above the disk's free space: the buffer must not grow at all, so each new
    # batch takes the room of the oldest readings.
    path = tmp_path / "b.db"
    buf = StoreAndForwardBuffer(path, min_free_bytes=1 << 62)
    all_seqs: list[int] = []
    for _ in range(30):
        all_seqs += buf.append_many(_big_readings(20))
    stats = buf.stats()
    assert stats.dropped_total > 0
    assert stats.dropped_total + stats.depth == len(all_seqs)
    remaining = [b.seq for b in buf.peek(100_000)]
    assert remaining == all_seqs[-len(remaining) :]
    assert len(remaining) >= 20  # the batch being written is never dropped for the watermark
    buf.close()
    assert read_stats_readonly(path).dropped_total == stats.dropped_total


def test_sqlite_full_rolls_back_without_masking_and_the_buffer_recovers(
    tmp_path: Path,
) -> None:
    """SQLITE_FULL (forced with max_page_count): the real error propagates, SQLite's own
    rollback is not followed by a second one that would raise "no transaction is active",
    nothing of the batch is committed, counters stay exact, and appends work again once
    there is room."""
    path = tmp_path / "b.db"
    buf = StoreAndForwardBuffer(path, min_free_bytes=0)
    committed: list[int] = []
    committed_keys: list[bytes] = []
    pages = buf._conn.execute("PRAGMA page_count").fetchone()[0]
    buf._conn.execute(f"PRAGMA max_page_count={pages + 40}")
    failed_keys: list[bytes] = []
    for _ in range(200):
        keys = [os.urandom(32) for _ in range(5)]
        try:
            committed += buf.append_many(_big_readings(20), keys)
            committed_keys += keys
        except sqlite3.Error as exc:
            assert exc.sqlite_errorcode == sqlite3.SQLITE_FULL, exc
            failed_keys = keys
            break
    else:
        pytest.fail("max_page_count never stopped the buffer")
    assert not buf._conn.in_transaction
    stats = buf.stats()
    count, low, high = buf._conn.execute(
        "SELECT count(*), min(seq), max(seq) FROM readings"
    ).fetchone()
    assert (stats.depth, count, low, high) == (
        len(committed),
        len(committed),
        committed[0],
        committed[-1],
    )
    assert stats.bytes == buf._conn.execute("SELECT sum(bytes) FROM readings").fetchone()[0]
    assert stats.next_seq == committed[-1] + 1
    assert all(buf.has_message(k) for k in committed_keys)
    assert not any(buf.has_message(k) for k in failed_keys)
    # Still failing while full: same error, nothing changes.
    with pytest.raises(sqlite3.OperationalError, match="full"):
        buf.append_many(_big_readings(20))
    buf._conn.execute("PRAGMA max_page_count=1073741823")
    more = buf.append_many(_big_readings(3), failed_keys)
    assert more[0] == committed[-1] + 1
    assert all(buf.has_message(k) for k in failed_keys)
    assert buf.ack(committed) == len(committed)
    buf.close()
    buf = StoreAndForwardBuffer(path, min_free_bytes=0)
    assert buf.recovered_from is None
    assert [b.seq for b in buf.peek(10)] == more
    buf.close()


def test_wal_stays_bounded_and_is_truncated_once_a_reader_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    buf = StoreAndForwardBuffer(path, max_bytes=1 << 20, min_free_bytes=0)
    wal = Path(f"{path}-wal")
    for _ in range(100):
        buf.append_many(_big_readings(20))
        assert wal.stat().st_size <= 2 * buf._wal_limit + 256 * 1024
    # Someone inspecting the file holds a read transaction: no checkpoint can reset the WAL.
    reader = sqlite3.connect(path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM readings").fetchone()
    for _ in range(100):
        buf.append_many(_big_readings(20))
    assert wal.stat().st_size > 4 * buf._wal_limit
    reader.close()
    buf.append_many(_big_readings(1))
    assert wal.stat().st_size <= 2 * buf._wal_limit
    buf.close()


def test_stats_report_rows_files_and_free_space_while_open(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    buf = StoreAndForwardBuffer(path)
    seqs = buf.append_many(_readings(5))
    buf.set_aside([("A", b"?", "bad")])
    stats = buf.stats()
    assert stats.rejected == 1 and stats.rejected_dropped_total == 0
    assert stats.disk_bytes > 0 and stats.free_bytes > 0
    # rig-edge status reads the file while the daemon holds it.
    live = read_stats_readonly(path)
    assert (live.depth, live.bytes, live.next_seq, live.oldest_seq, live.rejected) == (
        5,
        stats.bytes,
        seqs[-1] + 1,
        seqs[0],
        1,
    )
    assert live.disk_bytes > 0 and live.free_bytes > 0
    buf.close()
