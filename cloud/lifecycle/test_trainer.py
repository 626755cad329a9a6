"""Retraining from stored history on a real PostgreSQL, with the real models: the first model
goes into service, a worse one is refused with the reason recorded, edges download a signed
bundle that verifies (and a tampered one does not), and rollback restores the previous model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.cli_models import run_trainer
from cloud.db.partitions import maintain_partitions
from cloud.lifecycle import registry
from cloud.lifecycle.trainer import TrainingSettings, train_machine
from cloud.settings import CloudSettings
from cloud.storage import store_readings
from shared.catalog import CORE_SENSOR_NAMES
from shared.message import Reading
from shared.model_bundle import (
    BundleError,
    TamperedBundleError,
    extract_bundle,
    generate_keypair,
    pack_bundle,
)
from shared.model_statement import trusted_keys, verify_statement
from simulator.signals import MachineSignals
from tests.support.accounts import add_user, bearer, login

pytest.importorskip("tensorflow")
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]
KEY = "k" * 32
NOW = datetime.now(UTC).replace(microsecond=0)  # the trainer daemon learns up to "now"
# The default strategy (hybrid_smart) with a short LSTM training: the test is about the
# lifecycle, not the last point of accuracy.
FAST = TrainingSettings(days=1, lstm_epochs=2)


@pytest.fixture
def history(database_url: str) -> str:
    """40 minutes of one simulated machine at 1 Hz, stored through the ingest path."""
    signals = MachineSignals("A", seed=11)
    start = NOW - timedelta(seconds=2400)
    readings = [
        Reading(
            "A",
            "rig-a",
            i,
            start + timedelta(seconds=i),
            dict(zip(CORE_SENSOR_NAMES, signals.step(float(i)).tolist(), strict=True)),
        )
        for i in range(2400)
    ]
    maintain_partitions(database_url, now=NOW)
    with psycopg.connect(database_url) as conn, conn.transaction():
        store_readings(conn, readings)
    return database_url


@pytest.fixture
def keys(tmp_path: Path) -> tuple[bytes, Path]:
    private, public = generate_keypair()
    public_file = tmp_path / "model-signing.pub"
    public_file.write_bytes(public)
    return private, public_file


@pytest.fixture
def api(history: str) -> Iterator[tuple[TestClient, str]]:
    with TestClient(create_app(CloudSettings(database_url=history, ingest_api_key=KEY))) as c:
        token = login(c, "admin", add_user(history, "admin", "admin"))
        c.cookies.clear()
        yield c, token


def test_first_model_in_service_worse_model_refused_bundle_signed_rollback(
    history: str, keys: tuple[bytes, Path], api: tuple[TestClient, str], tmp_path: Path
) -> None:
    private, public_file = keys
    first = train_machine(history, "A", private, settings=FAST, now=NOW, created_by="test")
    assert first["status"] == "active", first["reason"]
    assert first["metrics"]["validation"]["f1"] >= 0.05
    assert first["training_rows"] == 1920  # 80 % of 2,400; the newest 20 % is held out

    # A model that (by construction) never raises an alarm must not replace it.
    worse = train_machine(
        history,
        "A",
        private,
        now=NOW,
        created_by="test",
        settings=TrainingSettings(days=1, lstm_epochs=2, decision_factor=1000.0),
    )
    assert worse["status"] == "rejected"
    assert "worse than the model in service" in worse["reason"]
    assert worse["baseline_metrics"]["model_id"] == first["id"]

    client, token = api
    listed = client.get("/api/v1/models", params={"machine_id": "A"}, headers=bearer(token)).json()[
        "models"
    ]
    assert [(m["version"], m["status"]) for m in listed] == [(2, "rejected"), (1, "active")]

    # The edge's view: the model in service, and its bundle, which verifies with the key.
    info = client.get("/api/v1/edge/models/A", headers={"X-API-KEY": KEY}).json()
    assert info["version"] == 1
    # Approved for machine A, version 1, by the trainer's key; the refused candidate has
    # no statement an edge could accept.
    approved = verify_statement(
        info["statement"],
        trusted_keys([public_file.read_bytes()]),
        machine_id="A",
        kind="detector",
        model_id=first["id"],
        bundle_sha256=info["bundle_sha256"],
        running=None,
    )
    assert (approved.version, approved.purpose) == (1, "deploy")
    with psycopg.connect(history) as conn:
        refused = conn.execute(
            "SELECT statement FROM model_registry WHERE id = %s", (worse["id"],)
        ).fetchone()
    assert refused == (None,)
    bundle = client.get(info["bundle_url"], headers={"X-API-KEY": KEY})
    assert bundle.status_code == 200
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(bundle.content)
    manifest = extract_bundle(archive, tmp_path / "unpacked", public_file.read_bytes())
    assert manifest.name == "unpacked"
    # A model file changed after signing: refused, nothing unpacked.
    onnx = next((tmp_path / "unpacked").glob("*.onnx"))
    onnx.write_bytes(onnx.read_bytes()[:-1] + b"\x00")
    pack_bundle(tmp_path / "unpacked", tmp_path / "tampered.tar.gz")
    with pytest.raises(TamperedBundleError, match="does not match its SHA-256"):
        extract_bundle(tmp_path / "tampered.tar.gz", tmp_path / "bad", public_file.read_bytes())
    assert not (tmp_path / "bad").exists()
    # A damaged download is no bundle at all.
    (tmp_path / "cut.tar.gz").write_bytes(bundle.content[: len(bundle.content) // 2])
    with pytest.raises(BundleError):
        extract_bundle(tmp_path / "cut.tar.gz", tmp_path / "cut", public_file.read_bytes())

    # A second accepted model, then rollback puts version 1 back in service.
    with psycopg.connect(history) as conn, conn.transaction():
        row = registry.register(
            conn,
            registry.Candidate(
                "A", first["strategy"], {}, first["manifest"], bundle.content, None, None, 0, "test"
            ),
            accepted=True,
            reason="re-registered for the rollback test",
            baseline_metrics=None,
        )
    assert row["version"] == 3 and row["status"] == "active"
    rolled = client.post("/api/v1/machines/A/model/rollback", headers=bearer(token))
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["version"] == 1
    statuses = {
        m["version"]: m["status"]
        for m in client.get("/api/v1/models", headers=bearer(token)).json()["models"]
    }
    assert statuses == {1: "active", 2: "rejected", 3: "retired"}


def test_retrain_requested_over_the_api_is_done_by_the_trainer(
    api: tuple[TestClient, str], history: str, keys: tuple[bytes, Path]
) -> None:
    client, token = api
    rollback = client.post("/api/v1/machines/A/model/rollback", headers=bearer(token))
    assert rollback.status_code == 404  # nothing in service yet
    first = client.post("/api/v1/machines/A/retrain", headers=bearer(token))
    again = client.post("/api/v1/machines/A/retrain", headers=bearer(token))
    assert first.status_code == 202 and again.json()["job_id"] == first.json()["job_id"]
    status_url = first.json()["status_url"]
    job = client.get(status_url, headers=bearer(token)).json()
    assert (job["status"], job["machine_id"], job["requested_by"]) == ("queued", "A", "admin")

    stop = threading.Event()
    trainer = threading.Thread(
        target=run_trainer, args=(history, keys[0], FAST, 0.0, stop), kwargs={"poll_s": 0.2}
    )
    trainer.start()
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            job = client.get(status_url, headers=bearer(token)).json()
            if job["status"] in ("done", "failed"):
                break
            time.sleep(0.5)
    finally:
        stop.set()
        trainer.join(60)
    assert job["status"] == "done", job
    model = client.get("/api/v1/machines/A/model", headers=bearer(token)).json()
    assert model["id"] == job["model_id"] and model["created_by"] == f"job:{job['id']}"
