"""The edge's disk: full, and a buffer file that is no database any more.

``edge_disk_full``: the buffer lives on a small tmpfs mostly taken by another file, and the
output is unreachable, so the buffer (database and WAL) grows until the file system is nearly
full. The edge must keep going — drop-oldest at its free-space watermark, or a bounded
in-memory queue while commits fail — and every reading it gives up must be counted. Then the
output comes back (SIGHUP with a corrected config) and the buffer drains.

``corrupt_buffer``: the edge is stopped, its buffer file overwritten with garbage, and started
again: it must move the file aside, start a fresh buffer and raise its alarm, instead of
failing at start-up (and being restarted by systemd for ever).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from benchmarks.faults.harness import Scenario, ScenarioFailed, free_port, say, wait_for
from benchmarks.faults.processes import TAIL_S, WARM_S

TMPFS_BYTES = 8 << 20
# What is left for the buffer once the filler is written.
FREE_BYTES = 1280 << 10
WATERMARK_BYTES = 512 << 10


def _buffer_settings() -> dict[str, int]:
    """The free-space watermark, where the edge's config has one (older edges: the cap)."""
    from edge.config import BufferConfig

    if "min_free_bytes" in BufferConfig.model_fields:
        return {"min_free_bytes": WATERMARK_BYTES}
    return {}


def _mount_tmpfs(sc: Scenario, size: int) -> Path:
    if os.geteuid() != 0:
        raise ScenarioFailed("mounting a tmpfs needs root")
    mount = sc.dir / "disk"
    mount.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise ScenarioFailed(f"mount -t tmpfs failed: {result.stderr.strip()}")
    sc.teardown.append(lambda: _unmount(mount))
    return mount


def _unmount(mount: Path) -> None:
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def edge_disk_full(sc: Scenario) -> None:
    mount = _mount_tmpfs(sc, TMPFS_BYTES)
    filler = mount / "other-data"
    with filler.open("wb") as out:
        out.write(b"\0" * (TMPFS_BYTES - FREE_BYTES))
    sc.buffer_path = mount / "buffer.db"
    unreachable = f"127.0.0.1:{free_port()}"
    sc.start_aggregator()
    sc.start_sim()
    sc.write_edge_config(bootstrap=unreachable, buffer=_buffer_settings())
    sc.start_edge()
    say(f"  output unreachable; buffer on a tmpfs with {FREE_BYTES >> 10} KiB free")

    def giving_up() -> bool:
        metrics = sc.edge_metrics() or {}
        return (
            metrics.get("rig_edge_buffer_dropped_total", 0) > 0
            or metrics.get("rig_edge_writer_dropped_total", 0) > 0
            or metrics.get("rig_edge_commit_failures_total", 0) > 0
            or _free_bytes(mount) < 64 << 10
        )

    waited = wait_for(giving_up, 150, "the disk to fill", [sc.edge])
    sc.notes["filled_after_s"] = round(waited, 1)
    time.sleep(8.0)  # stay full for a while: several commits at the limit
    metrics = sc.edge_metrics() or {}
    sc.notes["at_full"] = {
        "free_bytes": _free_bytes(mount),
        "buffer_depth": metrics.get("rig_edge_buffer_depth"),
        "dropped": metrics.get("rig_edge_buffer_dropped_total"),
        "commit_failures": metrics.get("rig_edge_commit_failures_total"),
        "writer_dropped": metrics.get("rig_edge_writer_dropped_total"),
    }
    say("  output back (SIGHUP with the broker's address)")
    sc.write_edge_config(buffer=_buffer_settings())
    assert sc.edge is not None and sc.edge.proc is not None
    if sc.edge.running:
        os.kill(sc.edge.proc.pid, signal.SIGHUP)
    sc.fault_ended()
    time.sleep(TAIL_S)


def _corrupt(path: Path) -> None:
    """Overwrite the header and the first pages: SQLite sees "file is not a database"."""
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.write(os.urandom(min(size, 16384)))
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def corrupt_buffer(sc: Scenario) -> None:
    sc.start_aggregator()
    sc.start_sim()
    sc.start_edge()
    sc.wait_flowing()
    time.sleep(WARM_S)
    assert sc.edge is not None
    # Everything the first buffer committed is delivered before its file is destroyed: what
    # this scenario tests is the start on a corrupt file, not the readings inside it.
    # A frozen simulator answers no polls, so nothing new is committed while the buffer
    # drains and the edge stops.
    sc.mark_edge_down()  # a frozen device cannot be polled: from now on, nothing is read
    sc.pause_sim(True)
    try:
        wait_for(sc.drained_now, 60, "the edge to deliver its buffer", [sc.edge])
        sc.edge.stop()
    finally:
        sc.pause_sim(False)
    sc.ledger_close_from_file()
    _corrupt(sc.buffer_path)
    say("  buffer file corrupted; starting the edge on it")
    attempts = []
    for attempt in range(3):  # what systemd's Restart= would do, a few times
        try:
            sc.start_edge()
            break
        except ScenarioFailed as exc:
            attempts.append(str(exc).splitlines()[0])
            say(f"  edge failed to start on the corrupt buffer (attempt {attempt + 1})")
            time.sleep(1.0)
    else:
        sc.notes["start_failures"] = attempts
        raise ScenarioFailed(
            "the edge does not start on a corrupt buffer file: "
            + (sc.edge.tail(6) if sc.edge else "")
        )
    moved = sorted(p.name for p in sc.buffer_path.parent.glob(f"{sc.buffer_path.name}.corrupt*"))
    sc.notes["moved_aside"] = moved
    metrics = sc.edge_metrics() or {}
    sc.notes["alarm_metric"] = metrics.get("rig_edge_buffer_recovered")
    if not moved:
        sc.notes["problem"] = "corrupt buffer file not moved aside"
    sc.fault_ended()
    time.sleep(TAIL_S)


HARD_FREE_BYTES = 160 << 10
HARD_FULL_FOR_S = 10.0


def edge_disk_full_hard(sc: Scenario) -> None:
    """No watermark (``min_free_bytes: 0``): while Kafka is down the buffer grows until the
    file system runs out under SQLite. Commits fail; the edge must hold what it acquired in
    its bounded queue, drop (and count) polled readings beyond it, keep polling, and commit
    again once space is freed and deliver everything once Kafka is back."""
    from edge.config import BufferConfig

    if "max_pending_readings" not in BufferConfig.model_fields:
        raise ScenarioFailed("this edge has no bounded writer queue (buffer.max_pending_readings)")
    mount = _mount_tmpfs(sc, TMPFS_BYTES)
    filler = mount / "other-data"
    with filler.open("wb") as out:
        out.write(b"\0" * (TMPFS_BYTES - HARD_FREE_BYTES))
    sc.buffer_path = mount / "buffer.db"
    sc.start_aggregator()
    sc.start_sim()
    sc.write_edge_config(buffer={"min_free_bytes": 0, "max_pending_readings": 100})
    sc.start_edge()
    sc.wait_flowing()
    say(f"  Kafka killed; buffer on a tmpfs with {HARD_FREE_BYTES >> 10} KiB free, no watermark")
    sc.infra.broker.kill()

    def failing() -> bool:
        return (sc.edge_metrics() or {}).get("rig_edge_commit_failures_total", 0) > 0

    waited = wait_for(failing, 90, "buffer commits to fail on the full disk", [sc.edge])
    sc.notes["full_after_s"] = round(waited, 1)
    time.sleep(HARD_FULL_FOR_S)
    metrics = sc.edge_metrics() or {}
    health = sc.edge_health() or {}
    sc.notes["at_full"] = {
        "free_bytes": _free_bytes(mount),
        "commit_failures": metrics.get("rig_edge_commit_failures_total"),
        "writer_queue": metrics.get("rig_edge_writer_queue"),
        "writer_dropped": metrics.get("rig_edge_writer_dropped_total"),
        "health": health.get("status"),
    }
    say("  freeing space, Kafka back")
    filler.unlink()
    sc.infra.broker.start()
    sc.fault_ended()
    time.sleep(TAIL_S)
    sc.notes["health_after"] = (sc.edge_health() or {}).get("status")
