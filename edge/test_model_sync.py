"""Model updates on a running edge, end to end with real processes: the simulator's Modbus
server, the edge daemon, the cloud API on PostgreSQL. Models are hot-swapped while readings
stream and none is lost; a bundle signed with another key is refused and the model in use
stays; after a restart without the cloud the last verified model runs again.

Every wait is on a condition (rows stored, a version seen, a metric), never on elapsed time:
edge seqs come from a microsecond clock, so progress is measured by counting rows."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import yaml

from cloud.lifecycle import registry
from shared.catalog import CORE_SENSOR_NAMES
from shared.model_bundle import generate_keypair, pack_bundle
from simulator.signals import MachineSignals
from tests.support.pipeline import (
    edge_config,
    edge_health,
    start_simulator,
    verify_exactly_once,
    wait_all_stored,
)
from tests.support.processes import Service, free_port, http_ok, wait_until

pytest.importorskip("sklearn")
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
MACHINES = ["A", "B"]
KEY = "k" * 32


def _bundle(private_key: bytes, seed: int, version: str) -> tuple[bytes, dict[str, Any]]:
    """A real signed bundle (isolation forest + PCA: no TensorFlow needed) trained on the
    simulator's own signal model."""
    from models.ensemble import EnsembleConfig, HybridDetector
    from models.export import export_bundle

    signals = MachineSignals("A", seed)
    X = np.array([signals.step(float(i)) for i in range(600)])
    detector = HybridDetector(EnsembleConfig(components=("isolation_forest", "pca")))
    detector.fit(X, sensors=list(CORE_SENSOR_NAMES))
    with tempfile.TemporaryDirectory() as tmp:
        manifest = export_bundle(
            detector, Path(tmp) / "b", version=version, private_key=private_key
        )
        return pack_bundle(Path(tmp) / "b", Path(tmp) / "b.tar.gz").read_bytes(), manifest


def _publish(database_url: str, machine: str, bundle: bytes, manifest: dict[str, Any]) -> int:
    with psycopg.connect(database_url) as conn, conn.transaction():
        row = registry.register(
            conn,
            registry.Candidate(
                machine, manifest["strategy"], {}, manifest, bundle, None, None, 600, "test"
            ),
            accepted=True,
            reason="test",
            baseline_metrics=None,
        )
    return int(row["id"])


def _versions_seen(database_url: str, since_seq: int = 0) -> dict[str, set[str]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT machine_id, detection->>'model_version' FROM sensor_readings "
            "WHERE seq > %s AND detection ? 'model_version'",
            (since_seq,),
        ).fetchall()
    seen: dict[str, set[str]] = {}
    for machine, version in rows:
        seen.setdefault(machine, set()).add(version)
    return seen


def _max_seq(database_url: str) -> int:
    """A boundary between phases, not a count: seqs start near 1.8e15 (microseconds)."""
    with psycopg.connect(database_url) as conn:
        return int(conn.execute("SELECT coalesce(max(seq), 0) FROM sensor_readings").fetchone()[0])


def _rows_per_machine(database_url: str, since_seq: int = 0) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT machine_id, count(*) FROM sensor_readings WHERE seq > %s GROUP BY machine_id",
            (since_seq,),
        ).fetchall()
    return {machine: int(n) for machine, n in rows}


def _version_phases(database_url: str, machine: str) -> list[str | None]:
    """The model versions that scored ``machine``'s readings, in seq order, one entry per
    unbroken run (None: thresholds only). Hot swaps while streaming give [None, v1, v2]."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT detection->>'model_version' FROM sensor_readings WHERE machine_id = %s "
            "ORDER BY seq",
            (machine,),
        ).fetchall()
    phases: list[str | None] = []
    for (version,) in rows:
        if not phases or phases[-1] != version:
            phases.append(version)
    return phases


def _next_seq(cfg: Path, services: list[Service]) -> int:
    """The seq the edge will give its next committed reading (health is read until it
    answers: a busy edge may be slow to)."""
    health: dict[str, Any] = {}

    def answered() -> bool:
        health.update(edge_health(cfg) or {})
        return bool(health)

    wait_until(answered, 60, "edge health", services=services)
    return int(health["buffer"]["next_seq"])


def test_models_hot_swap_while_streaming_refuse_foreign_bundles_and_survive_offline(
    tmp_path: Path, log_dir: Path, database_url: str
) -> None:
    private, public = generate_keypair()
    (tmp_path / "signing.pub").write_bytes(public)
    (tmp_path / "api-key").write_text(KEY)
    v1 = _bundle(private, seed=1, version="v1")
    v2 = _bundle(private, seed=2, version="v2")
    foreign_private, _ = generate_keypair()
    foreign = _bundle(foreign_private, seed=3, version="forged")

    record = tmp_path / "served.db"
    sim, sim_port = start_simulator(log_dir, record, MACHINES, 5.0)
    api_port = free_port()
    env = {"DATABASE_URL": database_url, "RIG_INGEST_API_KEY": KEY}
    cloud_args = ["cloud.cli", "serve", "--port", str(api_port)]
    cloud = Service("cloud", cloud_args, log_dir, env).start()
    base = f"http://127.0.0.1:{api_port}"
    wait_until(lambda: http_ok(f"{base}/readyz"), 60, "cloud API", services=[cloud])
    cfg = edge_config(
        tmp_path,
        sim_port=sim_port,
        machines=MACHINES,
        poll_interval_s=0.05,
        output={
            "kind": "http",
            "url": f"{base}/api/v1/ingest",
            "api_key_file": str(tmp_path / "api-key"),
            "batch_readings": 200,
            "timeout_s": 5,
        },
    )
    doc = yaml.safe_load(cfg.read_text())
    doc["models"] = {
        "cloud_url": base,
        "api_key_file": str(tmp_path / "api-key"),
        "public_key_file": str(tmp_path / "signing.pub"),
        "directory": str(tmp_path / "models"),
        "poll_interval_s": 1,
    }
    cfg.write_text(yaml.safe_dump(doc))
    edge = Service("rig-edge", ["edge.cli", "run", "-c", str(cfg)], log_dir).start()
    services = [sim, cloud, edge]
    try:
        wait_until(
            lambda: min(_rows_per_machine(database_url).get(m, 0) for m in MACHINES) >= 10,
            60,
            "10 readings of each machine",
            services=services,
        )
        assert _versions_seen(database_url) == {}  # no model yet: thresholds only

        _publish(database_url, "A", *v1)
        wait_until(
            lambda: "v1" in _versions_seen(database_url).get("A", set()),
            60,
            "machine A scored by v1",
            services=services,
        )
        assert "B" not in _versions_seen(database_url)  # B has no model in service

        swap_seq = _max_seq(database_url)
        _publish(database_url, "A", *v2)
        wait_until(
            lambda: "v2" in _versions_seen(database_url, swap_seq).get("A", set()),
            60,
            "machine A scored by v2",
            services=services,
        )
        # Info-style: the version in use is a label; the swap removed v1's series.
        wait_until(
            lambda: _metric(cfg, 'rig_edge_model_info{machine="A",version="v2"}') == 1,
            60,
            "rig_edge_model_info naming v2 for A",
            services=services,
        )
        assert _metric(cfg, 'rig_edge_model_info{machine="A",version="v1"}') == 0
        assert _metric(cfg, 'rig_edge_model_info{machine="B"') == 0  # B has no model

        forged_seq = _max_seq(database_url)
        _publish(database_url, "A", *foreign)
        wait_until(
            lambda: _metric(cfg, 'rig_edge_model_updates_total{machine="A",result="refused"}') >= 1,
            60,
            "forged bundle refused",
            services=services,
        )
        # Readings committed from here on were scored after the refusal: wait for some of
        # them to be stored, however long forwarding takes on this machine.
        refused_seq = _next_seq(cfg, services) - 1
        wait_until(
            lambda: _rows_per_machine(database_url, refused_seq).get("A", 0) >= 10,
            60,
            "10 readings of A scored after the refusal",
            services=services,
        )
        after = _versions_seen(database_url, forged_seq)
        assert after.get("A") == {"v2"}, after  # the verified model stays in use
        wait_until(
            lambda: (edge_health(cfg) or {}).get("models") == {"A": "v2"},
            60,
            "edge health naming v2 for A",
            services=services,
        )

        assert sim.stop() == 0
        wait_all_stored(database_url, cfg, [edge, cloud])
    finally:
        for service in (edge, cloud, sim):
            service.stop()
    # Two swaps while streaming, and every served sample is stored exactly once.
    result = verify_exactly_once(database_url, record, "edge-e2e", max_runs=1)
    assert set(result.per_machine) == set(MACHINES)
    assert _version_phases(database_url, "A") == [None, "v1", "v2"]  # never back, never forged
    assert _version_phases(database_url, "B") == [None]  # B never had a model

    # Offline restart: no cloud, the last verified model is loaded from disk.
    edge = Service("rig-edge", ["edge.cli", "run", "-c", str(cfg)], log_dir).start()
    try:
        wait_until(
            lambda: (edge_health(cfg) or {}).get("models") == {"A": "v2"},
            60,
            "model loaded offline",
            services=[edge],
        )
    finally:
        edge.stop()


def _metric(cfg: Path, series: str) -> float:
    import httpx

    port = yaml.safe_load(cfg.read_text())["metrics"]["port"]
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(series):
            return float(line.split()[-1])
    return 0.0
