"""The cloud's own verdict on readings without a trusted detection (cloud/scoring.py), on a
real PostgreSQL and through the real ingest route: an integrator's plain reading that breaks
a threshold becomes an anomaly; a client's detection is kept apart and drives nothing; a
machine's model in service scores its readings with the detector runtime; a broken bundle
falls back to thresholds without losing the reading."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from cloud import scoring
from cloud.api.app import create_app
from cloud.lifecycle import registry
from cloud.settings import CloudSettings
from cloud.storage import store_readings
from cloud.thresholds import set_threshold
from shared.catalog import CORE_SENSOR_NAMES
from shared.message import Reading
from tests.support.processes import wait_until
from tools.kafka_broker import KafkaBroker

pytestmark = pytest.mark.integration
KEY = "k-" + "s" * 30
NOW = datetime.now(UTC)


@pytest.fixture(autouse=True)
def fresh_scorer() -> Iterator[None]:
    # The scorer's caches live as long as the process; every test has a database of its own.
    scoring.default_scorer.cache_clear()
    yield
    scoring.default_scorer.cache_clear()


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    settings = CloudSettings(database_url=database_url, ingest_api_key=KEY)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _post(client: TestClient, body: object) -> Any:
    answer = client.post(
        "/api/v1/ingest",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-API-KEY": KEY},
    )
    assert answer.status_code < 300, answer.text
    return answer.json()


def _rows(database_url: str, machine: str) -> list[dict[str, Any]]:
    with psycopg.connect(database_url) as conn:
        return [
            d
            for (d,) in conn.execute(
                "SELECT detection FROM sensor_readings WHERE machine_id = %s ORDER BY seq",
                (machine,),
            )
        ]


def _anomalies(database_url: str, machine: str) -> list[tuple[str, list[str]]]:
    with psycopg.connect(database_url) as conn:
        return [
            (str(m), list(s))
            for m, s in conn.execute(
                "SELECT detection_method, detected_sensors FROM anomaly_detections "
                "WHERE machine_id = %s ORDER BY seq",
                (machine,),
            )
        ]


def test_an_integrators_plain_reading_over_a_threshold_becomes_an_anomaly(
    client: TestClient, database_url: str
) -> None:
    # Catalog: vibration is critical above 7 mm/s.
    _post(client, {"machine_id": "M1", "values": {"vibration": 12.0, "rpm": 3000.0}})
    _post(client, {"machine_id": "M1", "values": {"vibration": 2.0, "rpm": 3000.0}})
    assert _anomalies(database_url, "M1") == [("thresholds", ["vibration"])]
    first, second = _rows(database_url, "M1")
    assert first["source"] == "cloud" and first["is_anomaly"] is True
    assert second["is_anomaly"] is False and "client" not in second
    # The same thresholds as the dashboards: a machine override raised by an admin judges
    # the next reading (the cache follows the table).
    with psycopg.connect(database_url) as conn, conn.transaction():
        set_threshold(
            conn,
            "vibration",
            "M1",
            {"critical_low": None, "critical_high": 20.0, "warn_low": None, "warn_high": None},
            "admin",
        )
    _post(client, {"machine_id": "M1", "values": {"vibration": 12.0, "rpm": 3000.0}})
    assert len(_anomalies(database_url, "M1")) == 1
    assert _rows(database_url, "M1")[-1]["is_anomaly"] is False


def test_a_clients_detection_is_kept_apart_and_drives_no_anomaly(
    client: TestClient, database_url: str
) -> None:
    claimed = {"method": "thresholds", "is_anomaly": True, "score": 9.0, "sensors": ["rpm"]}
    normal = {"vibration": 2.0, "rpm": 3000.0}
    _post(client, {"machine_id": "M2", "values": normal, "detection": claimed})
    # An integrator edge id is never an edge's own verdict, even when it names a seq.
    _post(
        client,
        {
            "machine_id": "M2",
            "edge_id": "ingest:acme",
            "seq": 7,
            "values": normal,
            "detection": claimed,
        },
    )
    assert _anomalies(database_url, "M2") == []
    for stored in _rows(database_url, "M2"):
        assert stored["source"] == "cloud" and stored["is_anomaly"] is False
        assert stored["client"]["is_anomaly"] is True
        assert stored["client"]["method"] in ("client:thresholds", "thresholds")
    # Training reads the platform's verdict only: both readings count as normal.
    with psycopg.connect(database_url) as conn:
        normal_rows = conn.execute(
            "SELECT count(*) FROM sensor_readings WHERE machine_id = 'M2' AND "
            "coalesce((detection->>'is_anomaly')::boolean, false) = false"
        ).fetchone()
    assert normal_rows is not None and normal_rows[0] == 2


def test_an_edges_own_detection_is_stored_as_sent(client: TestClient, database_url: str) -> None:
    edge_verdict = {"method": "thresholds", "is_anomaly": True, "score": 0.5, "sensors": ["rpm"]}
    _post(
        client,
        {
            "machine_id": "M3",
            "edge_id": "rig-1",
            "seq": 1,
            "values": {"rpm": 9000.0},
            "detection": edge_verdict,
        },
    )
    assert _rows(database_url, "M3") == [edge_verdict]
    assert _anomalies(database_url, "M3") == [("thresholds", ["rpm"])]


def _signed_bundle(private: bytes) -> tuple[bytes, dict[str, Any]]:
    """A real signed detector bundle (isolation forest + PCA, no TensorFlow) trained on the
    simulator's signal model, as edge/test_model_sync.py makes one."""
    from models.ensemble import EnsembleConfig, HybridDetector
    from models.export import export_bundle
    from shared.model_bundle import pack_bundle
    from simulator.signals import MachineSignals

    signals = MachineSignals("A", 1)
    X = np.array([signals.step(float(i)) for i in range(600)])
    detector = HybridDetector(EnsembleConfig(components=("isolation_forest", "pca")))
    detector.fit(X, sensors=list(CORE_SENSOR_NAMES))
    with tempfile.TemporaryDirectory() as tmp:
        manifest = export_bundle(detector, Path(tmp) / "b", version="v1", private_key=private)
        return pack_bundle(Path(tmp) / "b", Path(tmp) / "b.tar.gz").read_bytes(), manifest


def _publish(database_url: str, machine: str, bundle: bytes, manifest: dict[str, Any]) -> None:
    with psycopg.connect(database_url) as conn, conn.transaction():
        registry.register(
            conn,
            registry.Candidate(
                machine, manifest.get("strategy", "x"), {}, manifest, bundle, None, None, 1, "t"
            ),
            accepted=True,
            reason="test",
            baseline_metrics=None,
        )


def _plain(machine: str, n: int, seq0: int = 1) -> list[Reading]:
    from simulator.signals import MachineSignals

    signals = MachineSignals("A", 2)
    return [
        Reading(
            machine,
            "ingest:default",
            seq0 + i,
            NOW + timedelta(seconds=i),
            dict(zip(CORE_SENSOR_NAMES, map(float, signals.step(float(i))), strict=True)),
        )
        for i in range(n)
    ]


def test_readings_are_scored_by_the_machines_model_in_service(database_url: str) -> None:
    pytest.importorskip("sklearn")
    from shared.model_bundle import generate_keypair

    private, public = generate_keypair()
    bundle, manifest = _signed_bundle(private)
    _publish(database_url, "A", bundle, manifest)
    readings = _plain("A", 40)
    with psycopg.connect(database_url) as conn:
        with conn.transaction():
            first = store_readings(conn, readings)
        # Redelivered: a duplicate, not a conflict, whatever the model says the second time.
        with conn.transaction():
            again = store_readings(conn, readings)
    assert (first.inserted, again.inserted, again.conflicts) == (40, 0, ())
    stored = _rows(database_url, "A")
    assert {d["model_version"] for d in stored} == {manifest["version"]}
    assert all(d["source"] == "cloud" and "thresholds" in d for d in stored)
    assert {d["method"] for d in stored} <= {manifest["strategy"], "thresholds"}
    # Verified by signature when the cloud has the public key; a foreign key is refused
    # and the readings keep the thresholds verdict.
    judged = scoring.CloudScorer(public_key=public)
    with psycopg.connect(database_url) as conn:
        docs = [r.detection for r in judged.judge(conn, _plain("A", 3, seq0=100))]
    assert all(d is not None and d["model_version"] == manifest["version"] for d in docs)
    foreign = scoring.CloudScorer(public_key=generate_keypair()[1])
    with psycopg.connect(database_url) as conn:
        docs = [r.detection for r in foreign.judge(conn, _plain("A", 3, seq0=200))]
    assert all(d is not None and d["method"] == "thresholds" for d in docs)


def test_a_broken_bundle_falls_back_to_thresholds_and_loses_nothing(database_url: str) -> None:
    _publish(database_url, "B", b"not a model bundle", {"strategy": "hybrid_smart"})
    before = _failures("load")
    reading = Reading("B", "ingest:default", 1, NOW, {"vibration": 12.0, "rpm": 3000.0})
    with psycopg.connect(database_url) as conn, conn.transaction():
        result = store_readings(conn, [reading])
    assert result.inserted == 1
    assert _anomalies(database_url, "B") == [("thresholds", ["vibration"])]
    assert _rows(database_url, "B")[0]["method"] == "thresholds"
    assert _failures("load") > before


def _failures(stage: str) -> float:
    value = REGISTRY.get_sample_value("rig_cloud_scoring_failures_total", {"stage": stage})
    return float(value or 0.0)


def test_through_kafka_the_aggregator_judges_integrator_readings_alike(
    database_url: str, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    import threading

    from cloud.aggregator import Aggregator

    settings = CloudSettings(
        database_url=database_url,
        ingest_api_key=KEY,
        kafka_bootstrap=kafka_broker.bootstrap,
        topic=kafka_topic,
    )
    claimed = {"method": "thresholds", "is_anomaly": True, "score": 9.0, "sensors": ["rpm"]}
    with TestClient(create_app(settings)) as client:
        _post(client, {"machine_id": "K", "values": {"rpm": 3000.0}, "detection": claimed})
        _post(client, {"machine_id": "K", "values": {"vibration": 12.0, "rpm": 3000.0}})
    aggregator = Aggregator(
        kafka_broker.bootstrap, database_url, topic=kafka_topic, group=f"g-{kafka_topic}"
    )
    stop = threading.Event()
    thread = threading.Thread(target=aggregator.run, args=(stop,))
    thread.start()
    try:
        wait_until(lambda: aggregator.stored_total >= 2, 60, "both readings stored")
    finally:
        stop.set()
        thread.join(30)
    assert _anomalies(database_url, "K") == [("thresholds", ["vibration"])]
    stored = _rows(database_url, "K")
    assert all(d["source"] == "cloud" for d in stored)
    assert [d["client"]["is_anomaly"] for d in stored if "client" in d] == [True]
