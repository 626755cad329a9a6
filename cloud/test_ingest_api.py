"""The ingest and stats API against a real PostgreSQL (direct-storage mode)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.api.deps import CACHE_SECONDS
from cloud.api.schemas import IngestConflictsOut
from cloud.settings import CloudSettings
from tests.support.accounts import add_user, login
from tools.kafka_broker import KafkaBroker

pytestmark = pytest.mark.integration

KEY = "k-" + "x" * 30


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    settings = CloudSettings(database_url=database_url, ingest_api_key=KEY)
    password = add_user(database_url, "admin", "admin")
    with TestClient(create_app(settings)) as test_client:
        login(test_client, "admin", password)
        yield test_client


def _count(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return int(conn.execute("SELECT count(*) FROM sensor_readings").fetchone()[0])


def _post(client: TestClient, body: object, key: str | None = KEY, raw: bytes | None = None):
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["X-API-KEY"] = key
    return client.post("/api/v1/ingest", content=raw or json.dumps(body).encode(), headers=headers)


def test_manifest_payload_is_stored_with_custom_sensors(
    client: TestClient, database_url: str
) -> None:
    response = _post(
        client,
        {
            "machine_id": "A",
            "temperature": 72.5,
            "pressure": 10.2,
            "custom_sensors": {"hydraulic_pressure": 2500},
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 1
    stats = client.get("/api/stats").json()
    assert stats["total_readings"] == 1
    assert stats["messages_per_second"] == 0.1  # one reading in the 10 s window
    assert stats["latency_ms"]["p50"] is not None
    machine = stats["machines"]["A"]
    assert machine["latest"] == {"temperature": 72.5, "pressure": 10.2}
    assert machine["custom"] == {"hydraulic_pressure": 2500.0}


def test_batch_redelivery_is_stored_once(client: TestClient, database_url: str) -> None:
    batch = {
        "readings": [
            {
                "machine_id": "B",
                "edge_id": "rig-9",
                "seq": i,
                "ts": "2026-11-22T10:00:00Z",
                "values": {"rpm": 3000.0 + i},
            }
            for i in range(1, 51)
        ]
    }
    first = _post(client, batch).json()
    second = _post(client, batch).json()
    assert (first["stored"], second["stored"], second["duplicates"]) == (50, 0, 50)
    assert _count(database_url) == 50
    assert client.get("/api/stats").json()["machines"]["B"]["total_readings"] == 50


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"machine_id": "A", "temperature": "hot"}, 422, "$.temperature"),
        ({"machine_id": "../etc", "temperature": 1}, 422, "$.machine_id"),
        ({"machine_id": 7, "temperature": 1}, 422, "$.machine_id"),
        ({"temperature": 1}, 422, "$.machine_id"),
        ({"machine_id": "A", "temperature": 1e308}, 422, "$.temperature"),
        (
            {"readings": [{"machine_id": "A", "temperature": 1}, {"machine_id": "A", "rpm": [1]}]},
            422,
            "$.readings[1].rpm",
        ),
        ({"readings": []}, 422, "$.readings"),
        ("just a string", 422, "$"),
    ],
)
def test_bad_bodies_get_4xx_naming_the_field_and_store_nothing(
    client: TestClient, database_url: str, body: object, status: int, field: str
) -> None:
    response = _post(client, body)
    assert response.status_code == status, response.text
    assert response.json()["field"] == field
    assert _count(database_url) == 0


def test_nan_is_refused(client: TestClient, database_url: str) -> None:
    response = _post(client, None, raw=b'{"machine_id": "A", "temperature": NaN}')
    assert response.status_code == 422
    assert "finite" in response.json()["error"]
    assert _count(database_url) == 0


def test_non_json_is_refused(client: TestClient, database_url: str) -> None:
    response = _post(client, None, raw=b'{"machine_id": ')
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]


def test_ten_megabyte_body_is_refused(client: TestClient, database_url: str) -> None:
    readings = [
        {"machine_id": "A", "temperature": 1.0, "pad_" + str(i): 1.0} for i in range(200_000)
    ]
    raw = json.dumps({"readings": readings}).encode()
    raw += b" " * max(0, 10_000_000 - len(raw))
    response = _post(client, None, raw=raw)
    assert response.status_code == 413
    assert "limit" in response.json()["error"]
    assert _count(database_url) == 0


def test_oversized_batch_is_refused(database_url: str) -> None:
    settings = CloudSettings(database_url=database_url, ingest_api_key=KEY, max_batch_readings=10)
    with TestClient(create_app(settings)) as client:
        body = {"readings": [{"machine_id": "A", "temperature": 1.0}] * 11}
        response = _post(client, body)
    assert response.status_code == 413
    assert response.json()["field"] == "$.readings"


@pytest.mark.parametrize("key", [None, "", "wrong"])
def test_ingest_needs_the_key(client: TestClient, database_url: str, key: str | None) -> None:
    response = _post(client, {"machine_id": "A", "temperature": 1.0}, key=key)
    assert response.status_code == 401
    assert _count(database_url) == 0


def test_without_any_configured_key_ingest_refuses_everyone(database_url: str) -> None:
    # No built-in key: with neither RIG_INGEST_API_KEY nor an issued edge key, nothing gets in.
    with TestClient(create_app(CloudSettings(database_url=database_url))) as client:
        for key in ("", "default", "rig_000000000000_x", KEY):
            assert (
                _post(client, {"machine_id": "A", "temperature": 1.0}, key=key or None).status_code
                == 401
            )
    assert _count(database_url) == 0


def test_per_edge_key_writes_only_its_own_edge_and_can_be_revoked(
    client: TestClient, database_url: str
) -> None:
    issued = client.post("/api/v1/edges/rig-7/keys")
    assert issued.status_code == 201, issued.text
    key = issued.json()["api_key"]
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("SELECT key_hash FROM edge_api_keys").fetchone()[0]
    assert key.encode() not in bytes(stored)  # only a hash is kept

    own = client.post(
        "/api/v1/ingest",
        json={"machine_id": "A", "temperature": 1.0},
        headers={"X-API-KEY": key, "X-Edge-Backlog": "42"},
    )
    assert own.status_code == 200, own.text
    assert client.get("/api/stats").json()["edges"]["rig-7"]["backlog"] == 42
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT edge_id FROM sensor_readings").fetchone()[0] == "rig-7"

    forged = _post(
        client,
        {
            "readings": [
                {"machine_id": "A", "edge_id": "rig-7", "seq": 5, "values": {"rpm": 1.0}},
                {"machine_id": "A", "edge_id": "rig-8", "seq": 5, "values": {"rpm": 1.0}},
            ]
        },
        key=key,
    )
    assert forged.status_code == 403
    assert forged.json()["field"] == "$.readings[1].edge_id"
    assert _count(database_url) == 1  # all-or-nothing: the batch stored nothing

    key_id = issued.json()["key_id"]
    assert client.delete(f"/api/v1/edge-keys/{key_id}").status_code == 204
    time.sleep(CACHE_SECONDS + 0.1)  # other API processes notice within the cache time
    refused = _post(client, {"machine_id": "A", "temperature": 2.0}, key=key)
    assert refused.status_code == 401
    assert _count(database_url) == 1


def test_with_kafka_ingest_answers_after_the_broker_confirmed(
    database_url: str, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    from confluent_kafka import Consumer, TopicPartition

    from shared.message import decode_reading

    bootstrap = kafka_broker.bootstrap
    settings = CloudSettings(
        database_url=database_url, ingest_api_key=KEY, kafka_bootstrap=bootstrap, topic=kafka_topic
    )
    with TestClient(create_app(settings)) as client:
        response = _post(
            client, {"machine_id": "C", "temperature": 71.0, "custom_sensors": {"arm_torque": 3.0}}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["topic"] == kafka_topic
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "check", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(kafka_topic, body["partition"], body["offset"])])
    message = consumer.poll(15)
    consumer.close()
    assert message is not None and message.error() is None
    reading = decode_reading(message.value())
    assert (reading.machine_id, reading.values, reading.custom) == (
        "C",
        {"temperature": 71.0},
        {"arm_torque": 3.0},
    )
    assert reading.edge_id == "ingest:default" and reading.seq >= 1
    # In Kafka mode the API does not write rows itself: the aggregator does.
    assert _count(database_url) == 0


@pytest.mark.parametrize(
    ("raw", "status", "field"),
    [
        # Deeper than the stdlib parser's stack: RecursionError, once a 500.
        (b"[" * 100_000 + b"]" * 100_000, 400, "$"),
        # More digits than Python converts: ValueError, once a 500.
        (b'{"machine_id": "A", "rpm": 1' + b"0" * 5000 + b"}", 400, "$"),
        (b'{"machine_id": "A", "rpm": 1, "quality": {"rpm": []}}', 422, "$.quality.rpm"),
        (b'{"machine_id": "A", "rpm": 1, "ts": "0001-01-01T00:00:00+01:00"}', 422, "$.ts"),
        (b'{"machine_id": "A", "rpm": 1, "ts": "9999-12-31T00:00:00Z"}', 422, "$.ts"),
        (
            b'{"machine_id": "A", "rpm": 1, "detection": {"method": "t", "score": "x"}}',
            422,
            "$.detection.score",
        ),
        # A lone surrogate in a key: the error quoting it must still encode (once a 500).
        (b'{"machine_id": "A", "rpm": 1, "\\ud800": 2}', 422, "$.\\ud800"),
    ],
)
def test_malformed_bodies_get_4xx_never_500(
    client: TestClient, database_url: str, raw: bytes, status: int, field: str
) -> None:
    response = _post(client, None, raw=raw)
    assert response.status_code == status, response.text
    assert response.json()["field"] == field
    assert _count(database_url) == 0


def test_timestamps_outside_the_window_are_refused(client: TestClient, database_url: str) -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    for ts, ok in (
        (now - timedelta(days=399), True),
        (now - timedelta(days=401), False),
        (now + timedelta(minutes=5), True),
        (now + timedelta(minutes=15), False),
    ):
        body = {"machine_id": "A", "rpm": 1.0, "timestamp": ts.isoformat()}
        response = _post(client, body)
        assert (response.status_code == 200) is ok, (ts, response.text)
        if not ok:
            assert "timestamp out of range" in response.json()["error"]
    assert _count(database_url) == 2


def test_key_conflict_refuses_the_batch_naming_both_versions(
    client: TestClient, database_url: str
) -> None:
    first = {"machine_id": "A", "edge_id": "rig-c", "seq": 1, "ts": "2026-11-22T10:00:00Z"}
    assert _post(client, {**first, "values": {"rpm": 1.0}}).status_code == 200
    batch = {
        "readings": [
            {**first, "seq": 2, "values": {"rpm": 2.0}},
            {**first, "ts": "2026-11-22T10:00:01Z", "values": {"rpm": 1.0}},
            {**first, "values": {"rpm": 9.0}},
        ]
    }
    response = _post(client, batch)
    assert response.status_code == 409, response.text
    body = response.json()
    IngestConflictsOut.model_validate(body)  # what /openapi.json says a 409 holds
    # An RFC 9457 problem like every other error, conflicts its extension member.
    assert response.headers["content-type"] == "application/problem+json"
    assert (body["type"], body["title"], body["status"]) == ("about:blank", "Conflict", 409)
    assert body["detail"] == body["error"] and "another timestamp" in body["detail"]
    assert body["field"] == "$.readings[1]"
    assert [c["field"] for c in body["conflicts"]] == ["$.readings[1]", "$.readings[2]"]
    assert "another timestamp" in body["conflicts"][0]["error"]
    assert "other values" in body["conflicts"][1]["error"]
    assert body["conflicts"][1]["stored"]["values"] == {"rpm": 1.0}
    assert body["conflicts"][1]["received"]["values"] == {"rpm": 9.0}
    assert _count(database_url) == 1  # all-or-nothing: seq 2 was not stored either
    # The identical redelivery is no conflict.
    again = _post(client, {**first, "values": {"rpm": 1.0}})
    assert (again.status_code, again.json()["duplicates"]) == (200, 1)


def test_idempotency_key_without_kafka(client: TestClient, database_url: str) -> None:
    body = {"readings": [{"machine_id": "A", "rpm": float(i)} for i in range(3)]}
    headers = {"X-API-KEY": KEY, "Idempotency-Key": "order-7781"}
    first = client.post("/api/v1/ingest", json=body, headers=headers)
    retry = client.post("/api/v1/ingest", json=body, headers=headers)
    assert (first.json()["stored"], retry.json()["stored"], retry.json()["duplicates"]) == (3, 0, 3)
    assert _count(database_url) == 3
    changed = client.post(
        "/api/v1/ingest", json={"readings": body["readings"][:2]}, headers=headers
    )
    assert (changed.status_code, changed.json()["field"]) == (422, "Idempotency-Key")
    assert _post(client, body).json()["stored"] == 3  # no key: a retry is new readings
    assert _count(database_url) == 6
