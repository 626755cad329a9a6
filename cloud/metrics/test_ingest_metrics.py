"""Ingest counts readings on the API's /metrics: accepted, refused and (line protocol) lines,
by route, as the ingest routes decided their fate; the key check counts as no ingest."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from cloud.api.app import create_app
from cloud.settings import CloudSettings

KEY = "k-" + "m" * 30
JSON_ROUTE = "/api/v1/ingest"
INFLUX_ROUTE = "/api/v1/ingest/influx"


def _counters(client: TestClient) -> dict[tuple[str, ...], float]:
    """Every ingest reading/line/request counter as (name, labels...) -> value."""
    response = client.get("/metrics")
    assert response.status_code == 200
    out: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "rig_api_ingest_readings_total":
                out[(sample.name, sample.labels["route"], sample.labels["outcome"])] = sample.value
            elif sample.name == "rig_api_ingest_lines_total":
                out[(sample.name, sample.labels["outcome"])] = sample.value
            elif sample.name == "rig_api_ingest_requests_total":
                out[(sample.name, sample.labels["route"], sample.labels["outcome"])] = sample.value
    return out


def _delta(
    before: dict[tuple[str, ...], float], after: dict[tuple[str, ...], float]
) -> dict[tuple[str, ...], float]:
    # The counters live in the process-wide registry: other tests may have counted before.
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def _post(client: TestClient, body: object) -> int:
    headers = {"X-API-KEY": KEY, "Content-Type": "application/json"}
    return client.post(JSON_ROUTE, content=json.dumps(body).encode(), headers=headers).status_code


@pytest.mark.integration  # a real PostgreSQL behind the app
def test_ingest_counts_readings_and_lines_by_route(database_url: str) -> None:
    settings = CloudSettings(database_url=database_url, ingest_api_key=KEY)
    now = datetime.now(UTC)
    ts = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    reading = {"machine_id": "A", "edge_id": "rig-m", "ts": ts, "values": {"rpm": 1.0}}
    with TestClient(create_app(settings)) as client:
        before = _counters(client)
        # Three accepted (one of them a duplicate: accepted, stored once).
        batch = [{**reading, "seq": i} for i in (1, 2, 3)]
        assert _post(client, {"readings": batch}) == 200
        assert _post(client, {**reading, "seq": 3}) == 200
        # Refused as a whole: two readings, one invalid (all-or-nothing).
        assert _post(client, {"readings": [{**reading, "seq": 4}, {"machine_id": ""}]}) == 422
        # A key conflict (seq 1 with other values): both readings of the body refused.
        conflict = [{**reading, "seq": 5}, {**reading, "seq": 1, "values": {"rpm": 9.0}}]
        assert _post(client, {"readings": conflict}) == 409
        # Line protocol: two accepted, one line without numbers, one unparsable.
        t = int(now.timestamp() * 1e9)
        lines = "\n".join(
            [
                f"modbus,machine_id=B temperature=70.5 {t}",
                f"modbus,machine_id=B pressure=9.5 {t + 1000}",
                f'modbus,machine_id=B note="text" {t}',
                "modbus,machine_id=B temperature=",
            ]
        )
        influx = client.post(
            INFLUX_ROUTE,
            content=lines.encode(),
            headers={"X-API-KEY": KEY, "Content-Type": "text/plain"},
        )
        assert influx.status_code == 422, influx.text
        # The key check stores nothing and counts as no ingest request.
        assert client.get("/api/v1/ingest/check", headers={"X-API-KEY": KEY}).status_code == 200
        after = _counters(client)
    assert _delta(before, after) == {
        ("rig_api_ingest_readings_total", JSON_ROUTE, "accepted"): 4,
        ("rig_api_ingest_readings_total", JSON_ROUTE, "refused"): 4,
        ("rig_api_ingest_readings_total", INFLUX_ROUTE, "accepted"): 2,
        ("rig_api_ingest_lines_total", "accepted"): 2,
        # A line refused before it named a reading is a line, not a reading.
        ("rig_api_ingest_lines_total", "refused"): 2,
        ("rig_api_ingest_requests_total", JSON_ROUTE, "accepted"): 2,
        ("rig_api_ingest_requests_total", JSON_ROUTE, "refused"): 2,
        ("rig_api_ingest_requests_total", INFLUX_ROUTE, "refused"): 1,
    }
