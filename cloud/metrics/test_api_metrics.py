"""GET /metrics on the API: Prometheus text with request latency by route template, ingest
outcomes, WebSocket clients, the database pool, process metrics and build info; the access
log names each request without its secrets."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from cloud.api.app import create_app
from cloud.settings import CloudSettings

KEY = "k" * 32
SECRET_TOKEN = "session-token-that-must-not-be-logged"


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


@pytest.mark.integration  # a real PostgreSQL behind the app
def test_metrics_and_access_log(database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = CloudSettings(database_url=database_url, ingest_api_key=KEY)
    caplog.set_level(logging.DEBUG, logger="rig-cloud.access")
    with TestClient(create_app(settings)) as client:
        # The registry is the process's: other tests in this process count too, so the
        # assertions are about what these requests added.
        before = _samples(client.get("/metrics").text)
        assert client.get("/healthz").status_code == 200
        latest = client.get(
            f"/api/v1/machines/A/latest?token={SECRET_TOKEN}",
            headers={"Authorization": f"Bearer {SECRET_TOKEN}"},
        )
        assert latest.status_code == 401
        refused = client.post("/api/v1/ingest", json={"nothing": 1}, headers={"X-API-KEY": KEY})
        assert refused.status_code == 422
        assert client.get("/no/such/page").status_code == 404
        response = client.get("/metrics")
        through_the_ingress = client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert response.status_code == 200
    assert through_the_ingress.status_code == 404, "the public Ingress must not publish /metrics"
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)

    def requests(doc: dict[str, list[tuple[dict[str, str], float]]]) -> dict[tuple, float]:
        return {
            (s["method"], s["route"], s["status"]): v
            for s, v in doc.get("rig_api_requests_total", [])
        }

    def added(now: dict[tuple, float], then: dict[tuple, float], key: tuple) -> float:
        return now.get(key, 0.0) - then.get(key, 0.0)

    after_requests, before_requests = requests(samples), requests(before)
    for key in [
        ("GET", "/api/v1/machines/{machine_id}/latest", "401"),
        ("POST", "/api/v1/ingest", "422"),
        ("GET", "<unmatched>", "404"),
    ]:
        assert added(after_requests, before_requests, key) == 1, key
    buckets = [
        s for s, _ in samples["rig_api_request_duration_seconds_bucket"] if s["route"] == "/healthz"
    ]
    assert buckets, "no latency histogram for /healthz"

    def ingest(doc: dict[str, list[tuple[dict[str, str], float]]]) -> dict[tuple, float]:
        return {
            (s["route"], s["outcome"]): v for s, v in doc.get("rig_api_ingest_requests_total", [])
        }

    assert added(ingest(samples), ingest(before), ("/api/v1/ingest", "refused")) == 1
    assert samples["rig_api_ingest_bytes_total"][0][1] > 0
    assert [labels for labels, _ in samples["rig_api_websocket_clients"]] == [{}]
    assert {s["state"] for s, _ in samples["rig_api_db_pool_connections"]} == {
        "size",
        "available",
        "waiting",
    }
    assert any(s["component"] == "api" for s, _ in samples["rig_build_info"])
    assert "process_resident_memory_bytes" in samples

    lines = [r for r in caplog.records if r.name == "rig-cloud.access"]
    fields = [getattr(r, "fields", {}) for r in lines]
    assert {"route": "/api/v1/machines/{machine_id}/latest", "status": 401}.items() <= next(
        f for f in fields if f["path"] == "/api/v1/machines/A/latest"
    ).items()
    logged = " ".join(str(r.__dict__) for r in lines)
    assert SECRET_TOKEN not in logged and KEY not in logged
