"""The edge daemon as a process: bad configs never start it half-configured, the disk cap
drops oldest first and says so in its metrics, status reports the buffer."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.pipeline import edge_config, edge_health, start_simulator
from tests.support.processes import Service, free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _metric(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_buffer_cap_drops_oldest_and_counts_in_metrics(tmp_path: Path, log_dir: Path) -> None:
    sim, sim_port = start_simulator(log_dir, tmp_path / "rec.db", ["A", "B", "C"], 20.0)
    metrics_port = free_port()
    dead_port = free_port()  # the cloud is unreachable: everything stays buffered
    cfg = edge_config(
        tmp_path,
        sim_port=sim_port,
        machines=["A", "B", "C"],
        poll_interval_s=0.02,
        metrics_port=metrics_port,
        output={"kind": "http", "url": f"http://127.0.0.1:{dead_port}/x", "api_key_env": "PATH"},
    )
    doc = yaml.safe_load(cfg.read_text())
    doc["buffer"]["max_bytes"] = 65536
    cfg.write_text(yaml.safe_dump(doc))
    edge = Service("rig-edge", ["edge.cli", "run", "-c", str(cfg)], log_dir).start()
    try:
        wait_until(
            lambda: (h := edge_health(cfg)) is not None and h["buffer"]["dropped_total"] > 0,
            60,
            "the cap to drop readings",
            services=[edge, sim],
        )
        time.sleep(1.0)
        dropped = _metric(metrics_port, "rig_edge_buffer_dropped_total")
        assert dropped > 0
        assert _metric(metrics_port, "rig_edge_buffer_bytes") <= 65536
        health = edge_health(cfg)
        assert health is not None and health["buffer"]["bytes"] <= 65536
        status = subprocess.run(
            [sys.executable, "-m", "edge.cli", "status", "-c", str(cfg)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert status.returncode == 0, status.stderr
        assert '"dropped_total"' in status.stdout
    finally:
        edge.stop()
        sim.stop()
    # What is left is the newest readings: the oldest seq still buffered is well past the
    # first one ever assigned.
    import sqlite3

    conn = sqlite3.connect(tmp_path / "edge-e2e-buffer.db")
    oldest, newest, depth = conn.execute(
        "SELECT min(seq), max(seq), count(*) FROM readings"
    ).fetchone()
    assert newest - oldest + 1 == depth  # contiguous: only the oldest were dropped


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["sources"]["modbus"][0].update(port=0), "sources.modbus[0].port"),
        (lambda d: d.update(output={"kind": "kafka"}), "bootstrap_servers"),
        (
            lambda d: d["sources"]["modbus"][0]["devices"][0]["fields"].append(
                {"name": "rpm", "address": 1}
            ),
            "mapped twice",
        ),
        (lambda d: d.update(sources={}), "at least one of"),
        (lambda d: d["buffer"].update(synchronous="SOMETIMES"), "buffer.synchronous"),
    ],
)
def test_bad_config_never_starts_a_half_configured_daemon(
    tmp_path: Path,
    mutate,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    metrics_port = free_port()
    cfg = edge_config(
        tmp_path,
        sim_port=free_port(),
        machines=["A"],
        poll_interval_s=1,
        metrics_port=metrics_port,
        output={"kind": "http", "url": "http://127.0.0.1:1/x", "api_key_env": "PATH"},
    )
    doc = yaml.safe_load(cfg.read_text())
    mutate(doc)
    cfg.write_text(yaml.safe_dump(doc))
    result = subprocess.run(
        [sys.executable, "-m", "edge.cli", "run", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert str(cfg) in result.stderr and message in result.stderr, result.stderr
    assert not (tmp_path / "edge-e2e-buffer.db").exists()


def _buffered_machines(path: Path) -> dict[str, int]:
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows = dict(conn.execute("SELECT machine_id, count(*) FROM readings GROUP BY 1").fetchall())
    conn.close()
    return rows


def test_sighup_reloads_sources_without_losing_buffered_data(tmp_path: Path, log_dir: Path) -> None:
    import signal

    sim, sim_port = start_simulator(log_dir, tmp_path / "rec.db", ["A", "B"], 10.0)
    out = {"kind": "http", "url": f"http://127.0.0.1:{free_port()}/x", "api_key_env": "PATH"}
    cfg = edge_config(tmp_path, sim_port=sim_port, machines=["A"], poll_interval_s=0.05, output=out)
    buffer = tmp_path / "edge-e2e-buffer.db"
    edge = Service("rig-edge", ["edge.cli", "run", "-c", str(cfg)], log_dir).start()
    try:
        wait_until(
            lambda: buffer.exists() and _buffered_machines(buffer).get("A", 0) > 10,
            30,
            "machine A buffered",
            services=[edge],
        )
        assert "B" not in _buffered_machines(buffer)
        # Add machine B and send SIGHUP: B starts, A carries on, nothing buffered is lost.
        both = edge_config(
            tmp_path,
            sim_port=sim_port,
            machines=["A", "B"],
            poll_interval_s=0.05,
            output=out,
            metrics_port=yaml.safe_load(cfg.read_text())["metrics"]["port"],
        )
        assert both == cfg
        edge.signal(signal.SIGHUP)
        wait_until(
            lambda: _buffered_machines(buffer).get("B", 0) > 10,
            30,
            "machine B after reload",
            services=[edge],
        )
        # A broken config on SIGHUP is refused; the daemon keeps running the old one.
        good = cfg.read_text()
        cfg.write_text(good.replace("port: ", "port: -", 1))
        a_before = _buffered_machines(buffer)["A"]
        edge.signal(signal.SIGHUP)
        time.sleep(1.5)
        assert edge.running
        assert _buffered_machines(buffer)["A"] > a_before
        assert "reload refused" in edge.log_path.read_text()
    finally:
        edge.stop()
        sim.stop()
    import sqlite3

    conn = sqlite3.connect(buffer)
    seqs = [s for (s,) in conn.execute("SELECT seq FROM readings ORDER BY seq")]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap across the reloads
