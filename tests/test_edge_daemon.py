"""The edge daemon as a process: bad configs never start it half-configured, the disk cap
drops oldest first and says so in its metrics, status reports the buffer, SIGHUP swaps the
sources without losing or repeating a reading."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.pipeline import (
    EdgeRun,
    check_delivery,
    edge_config,
    read_buffer_facts,
    read_buffered,
    read_record,
    start_edge,
    start_simulator,
    wait_health,
    wait_log,
)
from tests.support.processes import free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _metric(port: int, name: str) -> float | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


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
    edge = start_edge(cfg, log_dir)
    try:
        wait_health(
            cfg,
            lambda h: h["buffer"]["dropped_total"] > 0,
            "the cap to drop readings",
            services=[edge, sim],
        )
        # The gauges follow the forwarder's rounds (every retry back-off): wait for them.
        wait_until(
            lambda: (_metric(metrics_port, "rig_edge_buffer_dropped_total") or 0) > 0,
            30,
            "the drop in /metrics",
            services=[edge, sim],
        )
        assert (_metric(metrics_port, "rig_edge_buffer_bytes") or 0) <= 65536
        health = wait_health(cfg, lambda h: True, "health")
        assert health["buffer"]["bytes"] <= 65536
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
    # Every number the edge ever assigned is either still buffered or counted as dropped,
    # and the ones still buffered are the newest: drop-oldest, never drop-newest.
    first = EdgeRun.of(cfg, log_dir).first_seq()
    facts = read_buffer_facts(tmp_path / "edge-e2e-buffer.db")
    seqs = [r.seq for r in read_buffered(tmp_path / "edge-e2e-buffer.db")]
    assert seqs == list(range(facts.next_seq - len(seqs), facts.next_seq))
    assert seqs[0] > first  # the head went
    assert facts.dropped_total == facts.next_seq - first - len(seqs)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["inputs"]["modbus"][0].update(port=0), "inputs.modbus[0].port"),
        (lambda d: d.update(output={"kind": "kafka"}), "bootstrap_servers"),
        (
            lambda d: d["inputs"]["modbus"][0]["devices"][0]["fields"].append(
                {"name": "rpm", "address": 1}
            ),
            "mapped twice",
        ),
        (lambda d: d.update(inputs={}), "at least one input"),
        (lambda d: d["buffer"].update(synchronous="SOMETIMES"), "buffer.synchronous"),
    ],
)
def test_bad_config_never_starts_a_half_configured_daemon(
    tmp_path: Path,
    mutate,
    message: str,
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

    if not path.exists():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = dict(conn.execute("SELECT machine_id, count(*) FROM readings GROUP BY 1").fetchall())
    except sqlite3.OperationalError:
        return {}  # the daemon has not created its tables yet
    finally:
        conn.close()
    return rows


def test_sighup_reloads_sources_without_losing_buffered_data(tmp_path: Path, log_dir: Path) -> None:
    import signal

    record = tmp_path / "rec.db"
    # Each sample stays on show 400 ms: an edge held up for less than that by a loaded
    # machine still reads every one (the checker requires them all).
    sim, sim_port = start_simulator(log_dir, record, ["A", "B"], 2.5)
    out = {"kind": "http", "url": f"http://127.0.0.1:{free_port()}/x", "api_key_env": "PATH"}
    cfg = edge_config(tmp_path, sim_port=sim_port, machines=["A"], poll_interval_s=0.02, output=out)
    buffer = tmp_path / "edge-e2e-buffer.db"
    edge = start_edge(cfg, log_dir)
    try:
        wait_until(
            lambda: buffer.exists() and _buffered_machines(buffer).get("A", 0) > 10,
            30,
            "machine A buffered",
            services=[edge],
        )
        assert "B" not in _buffered_machines(buffer)
        before_reload = {r.seq for r in read_buffered(buffer)}
        # Add machine B and send SIGHUP: B starts, A carries on, nothing buffered is lost.
        both = edge_config(
            tmp_path,
            sim_port=sim_port,
            machines=["A", "B"],
            poll_interval_s=0.02,
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
        wait_log(edge.log_path, "reload refused", "the broken config refused", services=[edge])
        wait_until(
            lambda: _buffered_machines(buffer)["A"] > a_before + 10,
            30,
            "machine A still polled after the refused reload",
            services=[edge],
        )
        assert edge.running
    finally:
        edge.stop()
        sim.stop()
    buffered = read_buffered(buffer)
    assert before_reload <= {r.seq for r in buffered}  # nothing buffered went missing
    # The buffer holds every sample of A from the first one the edge saw to the end and
    # every sample of B from the reload on, each once, with the values served; the numbers
    # run on without a gap across both reloads.
    result = check_delivery(
        read_record(record),
        buffered,
        EdgeRun.of(cfg, log_dir).incarnations(),
        next_seq=read_buffer_facts(buffer).next_seq,
    )
    assert result.per_machine["B"] > 10
