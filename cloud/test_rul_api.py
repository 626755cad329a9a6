"""Remaining useful life in the cloud, on a real PostgreSQL: estimates arriving in readings are
kept per machine (migration 0015's trigger), the API answers the manifest's shape and says so
when it has nothing honest to say, the bands are an admin setting, and the RUL model goes
through the signed lifecycle with a gate that refuses a worse candidate with the reason."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.lifecycle import registry
from cloud.lifecycle.rul import submit_rul_bundle
from cloud.settings import CloudSettings
from cloud.storage import store_readings
from cloud.store.rul import trend
from shared.message import Reading
from shared.model_bundle import generate_keypair
from tests.support.accounts import add_user, login
from tests.support.rul_bundle import write_test_rul_bundle

pytestmark = pytest.mark.integration
KEY = "k" * 32
# Fixed for the pure trend test only: readings stored for the API are stamped when the test
# runs (a whole suite runs long after this module is imported, and old estimates are stale).
NOW = datetime.now(UTC).replace(microsecond=0)


def _rul(hours: float, *, capped: bool = False) -> dict[str, Any]:
    return {
        "rul_hours": hours,
        "low_hours": hours * 0.8,
        "high_hours": hours * 1.2,
        "max_hours": 240.0,
        "capped": capped,
        "rows": 30,
        "critical_sensors": [] if capped else [{"sensor": "vibration", "share": 0.8}],
        "model_version": "rul-v1",
    }


def _reading(machine: str, seq: int, ts: datetime, rul: dict[str, Any] | None) -> Reading:
    detection: dict[str, Any] = {"method": "thresholds", "is_anomaly": False, "score": 0.0}
    if rul is not None:
        detection["rul"] = rul
    return Reading(machine, "e1", seq, ts, {"vibration": 2.0, "rpm": 3000.0}, detection=detection)


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    now = datetime.now(UTC).replace(microsecond=0)
    readings = [
        # W wears out: 20 estimates a minute apart, falling as fast as the clock and faster.
        _reading("W", i, now - timedelta(minutes=20 - i), _rul(30.0 - i * (1 + i / 10) / 60))
        for i in range(20)
    ]
    readings += [_reading("H", 100 + i, now - timedelta(minutes=5 - i), None) for i in range(5)]
    readings += [
        _reading("F", 200 + i, now - timedelta(minutes=2 - i), _rul(50.0)) for i in range(2)
    ]
    readings += [
        _reading("G", 300 + i, now - timedelta(minutes=10 - i), _rul(240.0, capped=True))
        for i in range(10)
    ]
    with psycopg.connect(database_url) as conn, conn.transaction():
        store_readings(conn, readings)
        store_readings(conn, readings[:3])  # redelivered: no second estimate
    settings = CloudSettings(database_url=database_url, ingest_api_key=KEY)
    password = add_user(database_url, "viewer", "viewer")
    with TestClient(create_app(settings)) as test_client:
        login(test_client, "viewer", password)
        yield test_client


def test_a_degrading_machine_gets_the_manifest_shape(client: TestClient) -> None:
    doc = client.get("/api/v1/machines/W/rul").json()
    assert doc["status"] == "ok" and doc["estimates"] == 20  # the redelivery added none
    assert doc["rul_hours"] == pytest.approx(30.0 - 19 * 2.9 / 60, abs=1e-3)
    assert doc["interval"]["low_hours"] < doc["rul_hours"] < doc["interval"]["high_hours"]
    assert doc["confidence"] == 0.8 and doc["interval"]["level"] == 0.8
    assert doc["degradation_trend"] in ("degrading", "accelerating")
    assert doc["critical_sensors"] == [{"sensor": "vibration", "share": 0.8}]
    assert doc["model"]["version"] == "rul-v1" and doc["time"] is not None
    history = client.get("/api/v1/machines/W/rul/history").json()["points"]
    assert len(history) == 20
    assert [p["rul_hours"] for p in history] == sorted(
        (p["rul_hours"] for p in history), reverse=True
    )


def test_no_model_and_too_little_history_say_so_without_a_number(client: TestClient) -> None:
    doc = client.get("/api/v1/machines/H/rul").json()
    assert doc["status"] == "no_model" and doc["rul_hours"] is None and doc["interval"] is None
    assert "no RUL model" in doc["message"]
    doc = client.get("/api/v1/machines/F/rul").json()
    assert doc["status"] == "insufficient_history" and doc["rul_hours"] is None
    doc = client.get("/api/v1/machines/NOBODY/rul").json()
    assert doc["status"] == "no_model" and doc["rul_hours"] is None


def test_a_healthy_machine_is_stable_at_the_cap(client: TestClient) -> None:
    doc = client.get("/api/v1/machines/G/rul").json()
    assert doc["status"] == "ok" and doc["at_least"] and doc["rul_hours"] == 240.0
    assert doc["degradation_trend"] == "stable" and doc["critical_sensors"] == []
    fleet = client.get("/api/v1/rul").json()
    by_machine = {m["machine_id"]: m for m in fleet["machines"]}
    assert set(by_machine) >= {"W", "H", "F", "G"}
    assert fleet["bands"] == {"green_hours": 168.0, "yellow_hours": 24.0}


def test_bands_are_an_admin_setting(client: TestClient, database_url: str) -> None:
    assert (
        client.put("/api/v1/rul/bands", json={"green_hours": 100, "yellow_hours": 10}).status_code
        == 403
    )
    password = add_user(database_url, "boss", "admin")
    login(client, "boss", password)
    bad = client.put("/api/v1/rul/bands", json={"green_hours": 5, "yellow_hours": 10})
    assert bad.status_code == 422 and bad.json()["field"] == "green_hours"
    ok = client.put("/api/v1/rul/bands", json={"green_hours": 100, "yellow_hours": 10})
    assert ok.json() == {"green_hours": 100.0, "yellow_hours": 10.0}
    assert client.get("/api/v1/rul/bands").json() == {"green_hours": 100.0, "yellow_hours": 10.0}


def test_trend_labels() -> None:
    times = [NOW + timedelta(hours=i) for i in range(10)]
    assert trend(times[:3], [5.0, 4.0, 3.0], [False] * 3) == (None, None)
    assert trend(times, [100.0] * 10, [False] * 10)[0] == "stable"
    assert trend(times, [100.0 - i for i in range(10)], [False] * 10)[0] == "degrading"
    assert trend(times, [100.0 - 3 * i for i in range(10)], [False] * 10)[0] == "accelerating"


def _publish(
    database_url: str, tmp: Path, private: bytes, public: bytes, **kw: Any
) -> dict[str, Any]:
    write_test_rul_bundle(tmp, private_key=private, **kw)
    return submit_rul_bundle(database_url, "A", tmp, public, created_by="test", gate_runs=4)


def test_the_rul_lifecycle_refuses_a_worse_candidate_with_the_reason(
    client: TestClient, database_url: str, tmp_path: Path
) -> None:
    private, public = generate_keypair()
    # Wide intervals (the gate's coverage floor holds); v1 follows vibration, v2 ignores it.
    wide = {"window": 5, "low_factor": 0.0, "high_factor": 1e3}
    first = _publish(database_url, tmp_path / "v1", private, public, version="v1", **wide)
    assert first["status"] == "active" and first["strategy"] == "rul", first
    worse = _publish(
        database_url, tmp_path / "v2", private, public, version="v2", hours_per_unit=0.0, **wide
    )
    assert worse["status"] == "rejected"
    assert "worse than the model in service" in worse["reason"]
    narrow = _publish(
        database_url,
        tmp_path / "v3",
        private,
        public,
        version="v3",
        low_factor=1.0,
        high_factor=1.0,
    )
    assert narrow["status"] == "rejected" and "coverage" in narrow["reason"]
    foreign_private, _ = generate_keypair()
    with pytest.raises(Exception, match="key"):
        _publish(database_url, tmp_path / "v4", foreign_private, public, version="v4", **wide)
    with psycopg.connect(database_url) as conn:
        active = registry.active(conn, "A", "rul")
        assert active is not None and active["manifest"]["version"] == "v1"
        assert registry.active(conn, "A") is None  # the detector slot is untouched
    edge = client.get("/api/v1/edge/models/A/rul", headers={"X-API-KEY": KEY}).json()
    assert edge["model_id"] == first["id"] and edge["kind"] == "rul"
    assert edge["bundle_url"] == f"/api/v1/edge/models/A/bundle/{first['id']}"
    bundle = client.get(edge["bundle_url"], headers={"X-API-KEY": KEY})
    assert bundle.status_code == 200
    assert client.get("/api/v1/edge/models/B/rul", headers={"X-API-KEY": KEY}).status_code == 404
    doc = client.get("/api/v1/machines/A/rul").json()
    assert doc["status"] == "insufficient_history" and doc["model"]["version"] == "v1"


@pytest.mark.slow
def test_a_trained_rul_model_is_signed_gated_and_registered(database_url: str) -> None:
    """The real path: simulated fleet -> Keras ensemble -> signed ONNX bundle -> gate ->
    registry (tiny settings: the verdict may go either way; it is recorded with the reason)."""
    pytest.importorskip("keras")
    from cloud.lifecycle.rul import train_rul

    private, _ = generate_keypair()
    rows = train_rul(database_url, ["T1"], private, train_runs=8, epochs=3, members=2)
    assert len(rows) == 1 and rows[0]["strategy"] == "rul" and rows[0]["reason"]
    assert rows[0]["manifest"]["unit"] == "hours" and rows[0]["manifest"]["step_s"] == 60.0
    assert rows[0]["metrics"]["validation"]["rmse_hours"] > 0
