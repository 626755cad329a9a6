"""The RUL model's lifecycle at the edge, against the real cloud API on PostgreSQL: the edge's
model sync (``kind="rul"``) installs the registry's RUL model, hot-swaps a newer one, refuses a
bundle signed by another key (keeping the model in use), follows a cloud rollback, and after a
restart without the cloud runs the last verified model from disk. The detector's slot stays
untouched throughout."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cloud.lifecycle import registry
from edge.config import ModelsConfig
from edge.detection import CombinedDetector
from edge.metrics import EdgeMetrics
from edge.model_sync import ModelSync
from shared.model_bundle import generate_keypair, pack_bundle
from tests.support.processes import Service, free_port, http_ok, wait_until
from tests.support.rul_bundle import write_test_rul_bundle

pytest.importorskip("onnx")
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
KEY = "k" * 32


def _publish(database_url: str, tmp: Path, private: bytes, version: str) -> int:
    folder = tmp / version
    write_test_rul_bundle(folder, private_key=private, version=version)
    archive = pack_bundle(folder, tmp / f"{version}.tar.gz").read_bytes()
    manifest = json.loads((folder / "manifest.json").read_text())
    with psycopg.connect(database_url) as conn, conn.transaction():
        row = registry.register(
            conn,
            registry.Candidate("A", "rul", {}, manifest, archive, None, None, 0, "t", kind="rul"),
            accepted=True,
            reason="test",
            baseline_metrics=None,
        )
    return int(row["id"])


@pytest.fixture
def cloud(database_url: str, tmp_path: Path) -> Iterator[tuple[str, Service]]:
    port = free_port()
    env = {"DATABASE_URL": database_url, "RIG_INGEST_API_KEY": KEY}
    service = Service("cloud", ["cloud.cli", "serve", "--port", str(port)], tmp_path, env).start()
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{base}/readyz"), 60, "cloud API", services=[service])
    yield base, service
    service.stop()


def test_rul_models_hot_swap_refuse_foreign_follow_rollback_and_survive_offline(
    cloud: tuple[str, Service], database_url: str, tmp_path: Path
) -> None:
    base, service = cloud
    private, public = generate_keypair()
    (tmp_path / "signing.pub").write_bytes(public)
    (tmp_path / "api-key").write_text(KEY)
    config = ModelsConfig(
        cloud_url=base,
        api_key_file=tmp_path / "api-key",
        public_key_file=tmp_path / "signing.pub",
        directory=tmp_path / "models",
        poll_interval_s=1.0,
        timeout_s=5.0,
    )

    def edge() -> tuple[ModelSync, CombinedDetector]:
        detector = CombinedDetector()
        return ModelSync(config, ["A"], detector, EdgeMetrics(), kind="rul"), detector

    sync, detector = edge()
    assert sync.poll_once() == [] and detector.rul_versions() == {}  # nothing in service

    v1 = _publish(database_url, tmp_path, private, "v1")
    assert sync.poll_once() == ["A"]
    assert detector.rul_versions() == {"A": "v1"} and detector.versions() == {}

    _publish(database_url, tmp_path, private, "v2")
    assert sync.poll_once() == ["A"]
    assert detector.rul_versions() == {"A": "v2"}  # hot-swapped

    foreign, _ = generate_keypair()
    _publish(database_url, tmp_path, foreign, "forged")
    assert sync.poll_once() == []
    health = sync.health()
    assert "signed by key" in health["refused"]["A"]["reason"], health
    assert detector.rul_versions() == {"A": "v2"}  # the verified model stays

    # The registry put the forged bundle in service (the edge refused it); two rollbacks
    # go back past it and past v2 to v1.
    with psycopg.connect(database_url) as conn, conn.transaction():
        registry.rollback(conn, "A", "admin", "rul")
        back = registry.rollback(conn, "A", "admin", "rul")
        assert registry.active(conn, "A") is None  # the detector slot is untouched
    assert back["id"] == v1
    assert sync.poll_once() == ["A"]
    assert detector.rul_versions() == {"A": "v1"}  # the rollback reached the edge
    assert (tmp_path / "models" / ".rul" / "A" / "current.json").is_file()
    sync.stop()

    service.stop()  # offline: the restart loads the last verified model from disk
    restarted, detector = edge()
    restarted.load_installed()
    assert detector.rul_versions() == {"A": "v1"}
    restarted.stop()
