"""The API stays up when Kafka is down: ingest answers 503 with Retry-After within its delivery
deadline while login, stats and the rest answer as usual (real uvicorn, a real broker killed
with SIGKILL and restarted); a partly produced batch answers per reading; Idempotency-Key
retries store nothing new (real Kafka, aggregator, PostgreSQL)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient

from cloud.aggregator import Aggregator
from cloud.api.app import create_app
from cloud.api.schemas import IngestNotTakenOut
from cloud.settings import CloudSettings
from shared.message import format_ts
from tests.support.accounts import add_user, bearer, login
from tests.support.processes import Service, free_port, http_ok, wait_until
from tools.kafka_broker import KafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

KEY = "k-" + "o" * 30


def _reading(seq: int, **extra: Any) -> dict[str, Any]:
    return {
        "machine_id": "A",
        "edge_id": "rig-o",
        "seq": seq,
        "ts": format_ts(_now()),
        "values": {"rpm": 3000.0},
        **extra,
    }


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def test_kafka_killed_ingest_fails_fast_and_other_endpoints_answer(
    tmp_path: Path, log_dir: Path, database_url: str
) -> None:
    broker = KafkaBroker(tmp_path / "kafka", log_file=log_dir / "kafka.log")
    broker.start()
    topic = "sensor-data"
    broker.create_topic(topic, partitions=3)
    port = free_port()
    env = {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "KAFKA_TOPIC": topic,
        "RIG_INGEST_API_KEY": KEY,
    }
    api = Service("api", ["cloud.cli", "serve", "--port", str(port)], log_dir, env).start()
    base = f"http://127.0.0.1:{port}"
    headers = {"X-API-KEY": KEY, "Content-Type": "application/json"}
    try:
        wait_until(lambda: http_ok(f"{base}/healthz"), 60, "the API", services=[api])
        password = add_user(database_url, "viewer", "viewer")
        with httpx.Client(base_url=base, timeout=30) as client:
            token = login(client, "viewer", password)
            first = client.post(
                "/api/v1/ingest", content=orjson.dumps(_reading(1)), headers=headers
            )
            assert first.status_code == 200, first.text

            broker.kill()  # SIGKILL: no goodbye to the clients

            # Sixty clients keep posting (more than the API's worker threads) while a user
            # logs in and reads stats: those must answer as if nothing happened.
            stop = threading.Event()
            answers: list[tuple[int, str | None, float, dict[str, Any]]] = []
            seqs = iter(range(100, 1_000_000))
            lock = threading.Lock()

            def post_forever() -> None:
                with httpx.Client(base_url=base, timeout=30) as own:
                    while not stop.is_set():
                        with lock:
                            seq = next(seqs)
                        started = time.monotonic()
                        response = own.post(
                            "/api/v1/ingest", content=orjson.dumps(_reading(seq)), headers=headers
                        )
                        answers.append(
                            (
                                response.status_code,
                                response.headers.get("Retry-After"),
                                time.monotonic() - started,
                                response.json(),
                            )
                        )

            posters = [threading.Thread(target=post_forever) for _ in range(60)]
            for thread in posters:
                thread.start()
            try:
                wait_until(lambda: len(answers) >= 60, 60, "the first ingest answers")
                for _ in range(10):
                    stats = client.get("/api/stats", headers=bearer(token), timeout=10)
                    assert stats.status_code == 200, stats.text
                    me = client.get("/api/v1/auth/me", headers=bearer(token), timeout=10)
                    assert me.status_code == 200, me.text
                again = httpx.post(
                    f"{base}/api/v1/auth/login",
                    json={"username": "viewer", "password": password},
                    timeout=10,
                )
                assert again.status_code == 200, again.text
            finally:
                stop.set()
                for thread in posters:
                    thread.join(60)

            assert answers and all(status == 503 for status, *_ in answers), answers[:3]
            assert all(retry == "5" for _, retry, _, _ in answers)
            # The deadline is 2 s: an answer never waits for the broker much longer.
            slowest = max(elapsed for _, _, elapsed, _ in answers)
            assert slowest < 15, f"an ingest request took {slowest:.1f} s"
            body = answers[-1][3]
            assert body["accepted"] == 0 and body["results"][0]["status"] in (
                "unconfirmed",
                "failed",
            )

            broker.start()  # same port, same data
            recovered: list[int] = []

            def ingest_ok() -> bool:
                response = client.post(
                    "/api/v1/ingest", content=orjson.dumps(_reading(50)), headers=headers
                )
                recovered.append(response.status_code)
                return response.status_code == 200

            wait_until(ingest_ok, 90, "ingest after the broker restart", services=[api])
        assert api.running, api.tail()
    finally:
        api.stop()
        broker.stop()


def _post_batch(settings: CloudSettings, batch: dict[str, Any]) -> Any:
    with TestClient(create_app(settings)) as client:
        return client.post(
            "/api/v1/ingest", content=orjson.dumps(batch), headers={"X-API-KEY": KEY}
        )


def test_partly_produced_batch_answers_503_per_reading(
    database_url: str, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    # A producer queue of two messages: the batch's first two readings are produced and
    # confirmed, the other three find the queue full (as when the broker lags behind).
    settings = CloudSettings(
        database_url=database_url,
        ingest_api_key=KEY,
        kafka_bootstrap=kafka_broker.bootstrap,
        topic=kafka_topic,
        kafka_extra={"queue.buffering.max.messages": "2", "linger.ms": "50"},
    )
    response = _post_batch(settings, {"readings": [_reading(i) for i in range(1, 6)]})
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"
    body = response.json()
    IngestNotTakenOut.model_validate(body)  # what /openapi.json says a 503 may hold
    assert response.headers["content-type"] == "application/problem+json"
    assert (body["type"], body["title"]) == ("about:blank", "Service Unavailable")
    assert body["detail"] == body["error"] and "did not take 3 of 5" in body["detail"]
    assert (body["accepted"], body["failed"], body["unconfirmed"]) == (2, 3, 0)
    results = body["results"]
    assert [r["status"] for r in results] == ["accepted"] * 2 + ["failed"] * 3
    assert [r["field"] for r in results] == [f"$.readings[{i}]" for i in range(5)]
    assert all(r["partition"] >= 0 and r["offset"] >= 0 for r in results[:2])
    assert results[2]["error"] == "producer queue full" and not results[2]["permanent"]
    assert [r["seq"] for r in results] == [1, 2, 3, 4, 5]
    assert body["field"] == "$.readings[2]"


def test_reading_kafka_refuses_for_good_answers_422_per_reading(
    database_url: str, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    # The producer refuses messages over 2,000 bytes: a reading with many custom sensors is
    # refused for good while the others of its batch are confirmed.
    settings = CloudSettings(
        database_url=database_url,
        ingest_api_key=KEY,
        kafka_bootstrap=kafka_broker.bootstrap,
        topic=kafka_topic,
        kafka_extra={"message.max.bytes": "2000"},
    )
    wide = {f"sensor_{i:03d}": float(i) for i in range(120)}
    response = _post_batch(
        settings, {"readings": [_reading(1), _reading(2, custom=wide), _reading(3)]}
    )
    assert response.status_code == 422, response.text
    assert "Retry-After" not in response.headers
    body = response.json()
    IngestNotTakenOut.model_validate(body)  # what /openapi.json says a 422 may hold
    assert response.headers["content-type"] == "application/problem+json"
    assert (body["type"], body["title"]) == ("about:blank", "Unprocessable Entity")
    assert body["detail"] == body["error"]
    assert (body["accepted"], body["failed"], body["unconfirmed"]) == (2, 1, 0)
    assert body["field"] == "$.readings[1]"
    results = body["results"]
    assert [r["status"] for r in results] == ["accepted", "failed", "accepted"]
    assert results[1]["permanent"] and "too large" in results[1]["error"].lower()


def test_idempotency_key_makes_a_retry_store_nothing_new(
    database_url: str, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    bootstrap = kafka_broker.bootstrap
    settings = CloudSettings(
        database_url=database_url, ingest_api_key=KEY, kafka_bootstrap=bootstrap, topic=kafka_topic
    )
    # The integrator shape (docs/manifest.md §3.2): no edge_id, seq or timestamp; the server
    # assigns them.
    batch = orjson.dumps({"readings": [{"machine_id": "B", "rpm": float(i)} for i in range(5)]})
    key = {"X-API-KEY": KEY, "Idempotency-Key": f"batch-{uuid.uuid4()}"}
    with TestClient(create_app(settings)) as client:
        first = client.post("/api/v1/ingest", content=batch, headers=key)
        retry = client.post("/api/v1/ingest", content=batch, headers=key)
        other = client.post(
            "/api/v1/ingest",
            content=orjson.dumps({"machine_id": "B", "rpm": 1.0}),
            headers=key,
        )
        fresh = client.post("/api/v1/ingest", content=batch, headers={"X-API-KEY": KEY})
        bad_key = client.post(
            "/api/v1/ingest", content=batch, headers={**key, "Idempotency-Key": "a b"}
        )
    assert first.status_code == retry.status_code == fresh.status_code == 200, first.text
    assert first.json()["keys"] == retry.json()["keys"]  # same seqs and timestamps
    assert fresh.json()["keys"] != first.json()["keys"]  # without the key: new readings
    assert (other.status_code, other.json()["field"]) == (422, "Idempotency-Key")
    assert (bad_key.status_code, bad_key.json()["field"]) == (422, "Idempotency-Key")

    aggregator = Aggregator(bootstrap, database_url, topic=kafka_topic, group=f"g-{kafka_topic}")
    stop = threading.Event()
    thread = threading.Thread(target=aggregator.run, args=(stop,))
    thread.start()
    try:
        wait_until(
            lambda: aggregator.stored_total + aggregator.duplicates_total >= 15,
            60,
            "three batches consumed",
        )
    finally:
        stop.set()
        thread.join(30)
    assert (aggregator.stored_total, aggregator.duplicates_total) == (10, 5)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM sensor_readings").fetchone()[0] == 10
