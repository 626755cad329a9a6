import time
from datetime import UTC, datetime
from pathlib import Path

from edge.buffer import StoreAndForwardBuffer, read_stats_readonly
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


def test_cap_drops_oldest_first_and_counts(tmp_path: Path) -> None:
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
