"""What the endpoints answer is what their response models say, on a database with data.

FastAPI validates the return value of most endpoints against their ``response_model``; the
ones that serialise with orjson into a ready ``Response`` (stats, machines, latest readings,
history) it passes through. This test walks every GET endpoint of the route table, calls it
on a database holding every kind of row (readings with custom sensors, quality flags and
detections, anomalies, thresholds, a model in service, a training job, an edge key) and
validates the body against the route's model: extra keys, missing keys and wrong types fail
(the models are closed and have no defaults, ``cloud/api/schemas.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from cloud.api.app import API_ROUTERS, create_app
from cloud.api.schemas import ErrorOut, IngestStoredOut
from cloud.lifecycle.registry import Candidate, register
from cloud.settings import CloudSettings
from tests.support.accounts import add_user, bearer, login

pytestmark = pytest.mark.integration
KEY = "k" * 32


@pytest.fixture
def client(database_url: str) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with TestClient(
        create_app(CloudSettings(database_url=database_url, ingest_api_key=KEY))
    ) as test_client:
        tokens = {
            "admin": login(test_client, "admin", add_user(database_url, "admin", "admin")),
            "op": login(test_client, "op", add_user(database_url, "op", "operator", ["A"])),
        }
        test_client.cookies.clear()
        yield test_client, tokens


def _reading(machine: str, seq: int, ts: datetime, anomalous: bool) -> dict[str, Any]:
    return {
        "machine_id": machine,
        "edge_id": f"rig-{machine}",
        "seq": seq,
        "ts": ts.isoformat(),
        "values": {"rpm": 1500.0 + seq, "temperature": None, "vibration": 2.5},
        "quality": {"temperature": "bad"},
        "custom": {"arm_torque": 1.5 * seq},
        "detection": {
            "method": "hybrid_smart",
            "is_anomaly": anomalous,
            "score": 0.9 if anomalous else 0.2,
            "sensors": ["rpm"] if anomalous else [],
            "probability_ahead": 0.3,
            "model_version": "v1",
        },
    }


def _seed(client: TestClient, tokens: dict[str, str], database_url: str) -> dict[str, str]:
    """Rows of every kind; returns the ids the GET paths need."""
    now = datetime.now(UTC).replace(microsecond=0)
    for machine in ("A", "B"):
        batch = [
            _reading(machine, i, now - timedelta(seconds=90 - i), anomalous=i % 10 == 0)
            for i in range(1, 91)
        ]
        answer = client.post(
            "/api/v1/ingest",
            json={"readings": batch},
            headers={"X-API-KEY": KEY, "X-Edge-Backlog": "7"},
        )
        assert answer.status_code == 200, answer.text
        IngestStoredOut.model_validate(answer.json())
    admin = bearer(tokens["admin"])
    for method, url, body in (
        ("PUT", "/api/v1/machines/A/thresholds/rpm", {"critical_high": 5000}),
        ("PUT", "/api/v1/thresholds/arm_torque", {"critical_low": 0, "critical_high": 900}),
        ("PUT", "/api/v1/custom-sensors/bit_depth", {"unit": "m", "category": "mechanical"}),
        ("POST", "/api/v1/edges/rig-A/keys", None),
    ):
        answer = client.request(method, url, json=body, headers=admin)
        assert answer.status_code in (200, 201), answer.text
    with psycopg.connect(database_url) as conn, conn.transaction():
        model = register(
            conn,
            Candidate(
                machine_id="A",
                strategy="hybrid_smart",
                metrics={"f1": 0.9, "per_fault": {"spike": 1.0}},
                manifest={"sensors": ["rpm"], "format": 1},
                bundle=b"\x1f\x8b not really a bundle",
                trained_from=now - timedelta(days=1),
                trained_to=now,
                training_rows=1000,
                created_by="test",
            ),
            accepted=True,
            reason="first model",
            baseline_metrics=None,
        )
        register(  # a RUL model beside the detector (GET /edge/models/{machine_id}/rul)
            conn,
            Candidate(
                machine_id="A",
                strategy="rul",
                metrics={"validation": {"rmse_hours": 10.0, "coverage": 0.9}},
                manifest={"sensors": ["vibration"], "format": "rig-alpha-rul-bundle"},
                bundle=b"\x1f\x8b not really a bundle",
                trained_from=None,
                trained_to=None,
                training_rows=1000,
                created_by="test",
                kind="rul",
            ),
            accepted=True,
            reason="first RUL model",
            baseline_metrics=None,
        )
    job = client.post("/api/v1/machines/A/retrain", headers=admin)
    assert job.status_code == 202, job.text
    anomalies = client.get("/api/v1/anomalies", params={"machine_id": "A"}, headers=admin)
    return {
        "machine_id": "A",
        "sensor": "rpm",
        "name": "arm_torque",
        "anomaly_id": str(anomalies.json()["anomalies"][0]["id"]),
        "job_id": str(job.json()["job_id"]),
        "model_id": str(model["id"]),
    }


def _get_routes() -> list[APIRoute]:
    return [
        r
        for router in API_ROUTERS
        for r in router.routes
        if isinstance(r, APIRoute) and "GET" in (r.methods or ())
    ]


# Query strings that make an endpoint show what it can: history both from the minute rollups
# and from the raw rows.
QUERIES: dict[str, list[dict[str, Any]]] = {
    "/api/v1/machines/{machine_id}/history": [
        {"sensor": "rpm", "points": 10},
        {"sensor": "rpm", "points": 1000},
        {"sensor": "arm_torque", "points": 100},
    ],
    "/api/v1/anomalies": [{"limit": 2}, {"machine_id": "A", "sensor": "rpm"}],
}
# Answers filtered to the caller's machines: also checked as an operator assigned to A.
SCOPED = {
    "/api/stats",
    "/api/v1/stats",
    "/api/v1/machines",
    "/api/v1/custom-sensors",
    "/api/v1/anomalies",
    "/api/v1/models",
    "/api/lstm-predictions",
}


def test_every_get_answer_matches_its_response_model(
    client: tuple[TestClient, dict[str, str]], database_url: str
) -> None:
    test_client, tokens = client
    ids = _seed(test_client, tokens, database_url)
    checked: list[str] = []
    for route in _get_routes():
        url = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], route.path)
        for who in ("admin", "op") if route.path in SCOPED else ("admin",):
            headers = {**bearer(tokens[who]), "X-API-KEY": KEY}
            if "/edge/" in route.path:
                headers = {"X-API-KEY": KEY}
            for params in QUERIES.get(route.path, [{}]):
                answer = test_client.get(url, params=params, headers=headers)
                assert answer.status_code == 200, f"{url} {params} as {who}: {answer.text}"
                if route.response_model is None:
                    # The bundle: bytes, described as such in the schema.
                    assert answer.headers["content-type"] == "application/gzip"
                    continue
                body = answer.json()
                TypeAdapter(route.response_model).validate_python(body, strict=False)
                checked.append(route.path)
    assert len(set(checked)) >= 20, sorted(set(checked))


def test_answers_carry_the_data_they_describe(
    client: tuple[TestClient, dict[str, str]], database_url: str
) -> None:
    """The walk above would pass on empty lists: check the seeded rows made it into the
    bodies that were validated."""
    test_client, tokens = client
    _seed(test_client, tokens, database_url)
    admin = bearer(tokens["admin"])
    stats = test_client.get("/api/stats", headers=admin).json()
    assert stats["machines"]["A"]["quality"] == {"temperature": "bad"}
    assert stats["edges"]["rig-A"]["backlog"] == 7
    raw = test_client.get(
        "/api/v1/machines/A/history", params={"sensor": "rpm", "points": 1000}, headers=admin
    ).json()
    minute = test_client.get(
        "/api/v1/machines/A/history", params={"sensor": "rpm", "points": 10}, headers=admin
    ).json()
    assert (raw["resolution"], minute["resolution"]) == ("raw", "minute")
    assert sum(p["n"] for p in raw["points"]) == sum(p["n"] for p in minute["points"]) == 90
    latest = test_client.get("/api/v1/machines/A/latest", headers=admin).json()["readings"]
    assert latest[-1]["custom_sensors"] == {"arm_torque": 135.0}
    assert "temperature" not in latest[-1]["values"]
    detail = test_client.get("/api/v1/anomalies?limit=1", headers=admin).json()["anomalies"][0]
    one = test_client.get(f"/api/v1/anomalies/{detail['id']}", headers=admin).json()
    assert one["reading"]["seq"] == one["seq"] and one["details"]["is_anomaly"] is True
    predictions = test_client.get("/api/lstm-predictions", headers=admin).json()["predictions"]
    assert predictions["A"]["probability_ahead"] == 0.3
    models = test_client.get("/api/v1/models", headers=admin).json()["models"]
    assert models[0]["metrics"]["per_fault"] == {"spike": 1.0}


def test_error_answers_have_the_documented_shape(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    test_client, tokens = client
    admin = bearer(tokens["admin"])
    for method, url, status in (
        ("GET", "/api/v1/machines", 401),
        ("GET", "/api/v1/anomalies/99", 404),
        ("GET", "/api/v1/machines/A/history?sensor=Not%20A%20Sensor", 422),
        ("DELETE", "/api/v1/thresholds/rpm", 404),
        ("POST", "/api/v1/machines/A/model/rollback", 404),
        ("GET", "/api/v1/no-such-thing", 404),
    ):
        headers = {} if status == 401 else admin
        answer = test_client.request(method, url, headers=headers)
        assert answer.status_code == status, f"{method} {url}: {answer.text}"
        body = ErrorOut.model_validate(answer.json())
        assert body.status == status
