"""The buffer on a really small disk (a 4 MiB tmpfs): a full disk is an error the caller can
retry with nothing half-committed, and the free-space watermark keeps the disk from filling
at all, giving space back when something else takes it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.buffer import StoreAndForwardBuffer, free_bytes
from shared.message import Reading

MiB = 1024 * 1024


def _unavailable(reason: str) -> None:
    # In CI these tests must run: a skip there would hide that the disk-full path is untested.
    if os.environ.get("CI"):
        pytest.fail(f"small tmpfs needed for the disk tests: {reason}")
    pytest.skip(f"small tmpfs needed for the disk tests: {reason}")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        _unavailable("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        _unavailable(f"mount refused: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            # Something still holds a file open (a failed test's buffer): detach anyway.
            subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _batch(n: int = 50) -> list[Reading]:
    now = datetime.now(UTC)
    return [
        Reading("A", "edge-1", 0, now, {f"sensor_{j}": float(j) for j in range(50)})
        for _ in range(n)
    ]


def test_full_disk_raises_commits_nothing_and_recovers(small_disk: Path) -> None:
    filler = small_disk / "other-service.log"
    filler.write_bytes(b"\0" * MiB)
    path = small_disk / "buffer.db"
    buf = StoreAndForwardBuffer(path, min_free_bytes=0)
    committed: list[int] = []
    committed_keys: list[bytes] = []
    error: sqlite3.Error | None = None
    for i in range(10_000):
        keys = [b"message-%d-%d" % (i, k) for k in range(5)]
        try:
            committed += buf.append_many(_batch(), keys)
        except sqlite3.Error as exc:
            error = exc
            break
        committed_keys += keys
    assert error is not None, "the disk never filled"
    assert isinstance(error, sqlite3.OperationalError)
    assert error.sqlite_errorcode == sqlite3.SQLITE_FULL
    assert free_bytes(small_disk) < MiB // 4
    # Nothing of the failed batch, everything before it, and exact counters.
    stats = buf.stats()
    count, total, low, high = buf._conn.execute(
        "SELECT count(*), sum(bytes), min(seq), max(seq) FROM readings"
    ).fetchone()
    assert (stats.depth, stats.bytes, stats.oldest_seq) == (count, total, low)
    assert (count, low, high) == (len(committed), committed[0], committed[-1])
    assert stats.next_seq == committed[-1] + 1
    assert all(buf.has_message(k) for k in committed_keys)
    assert not any(buf.has_message(b"message-%d-%d" % (i, k)) for k in range(5))
    # Still full: the same error, and still nothing changes.
    with pytest.raises(sqlite3.OperationalError, match="full"):
        buf.append_many(_batch(), [b"retry"])
    assert buf.stats().depth == len(committed) and not buf.has_message(b"retry")
    # Room again: the retry goes through, numbered right after the last commit.
    filler.unlink()
    retried = buf.append_many(_batch(), [b"retry"])
    assert retried[0] == committed[-1] + 1
    assert buf.has_message(b"retry")
    # The forwarder catches up batch by batch (one huge delete would need WAL room for every
    # page it touches).
    for start in range(0, len(committed), 200):
        assert buf.ack(committed[start : start + 200]) == len(committed[start : start + 200])
    buf.close()
    buf = StoreAndForwardBuffer(path, min_free_bytes=0)
    assert buf.recovered_from is None
    assert [b.seq for b in buf.peek(1000)] == retried
    buf.close()


def test_watermark_keeps_the_disk_from_filling_and_gives_space_back(small_disk: Path) -> None:
    path = small_disk / "buffer.db"
    watermark = MiB
    # Slack: the -shm index and one transaction's WAL may dip below the watermark briefly.
    slack = 128 * 1024
    buf = StoreAndForwardBuffer(path, min_free_bytes=watermark)
    appended = 0
    for i in range(300):
        buf.append_many(_batch(), [b"message-%d" % i])
        appended += 50
        stats = buf.stats()
        assert stats.free_bytes >= watermark - slack, f"batch {i}: {stats}"
        assert stats.depth + stats.dropped_total == appended
    assert stats.dropped_total > 0, "the watermark never started dropping"
    remaining = [b.seq for b in buf.peek(100_000)]
    assert remaining == list(range(stats.next_seq - len(remaining), stats.next_seq))
    assert buf.has_message(b"message-299")

    # Another service takes 800 KiB: the buffer shrinks until the watermark holds again.
    (small_disk / "other-service.log").write_bytes(b"\0" * 800 * 1024)
    assert free_bytes(small_disk) < watermark - slack
    size_before = stats.disk_bytes
    buf.append_many(_batch())
    appended += 50
    after = buf.stats()
    assert after.free_bytes >= watermark - slack
    assert after.disk_bytes < size_before - 600 * 1024
    assert after.depth + after.dropped_total == appended
    assert after.dropped_total > stats.dropped_total
    buf.close()
    buf = StoreAndForwardBuffer(path, min_free_bytes=watermark)
    assert buf.recovered_from is None
    assert buf.stats().depth == after.depth
    buf.close()


def test_a_disk_that_refuses_writes_is_an_error_naming_the_path_not_corruption(
    small_disk: Path,
) -> None:
    """What root sees instead of "permission denied": a read-only filesystem. The buffer must
    say which file it cannot open, and must not take the file for corrupt."""
    path = small_disk / "buffer.db"
    buf = StoreAndForwardBuffer(path, min_free_bytes=0)
    seqs = buf.append_many(_batch(3))
    buf.close()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(sqlite3.OperationalError, match=str(path)):
        StoreAndForwardBuffer(path, min_free_bytes=0)
    with pytest.raises(sqlite3.OperationalError, match=str(small_disk / "new.db")):
        StoreAndForwardBuffer(small_disk / "new.db", min_free_bytes=0)
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert sorted(p.name for p in small_disk.iterdir()) == ["buffer.db"]
    buf = StoreAndForwardBuffer(path, min_free_bytes=0)
    assert buf.recovered_from is None
    assert [b.seq for b in buf.peek(10)] == seqs
    buf.close()
