"""Consumer lag: the aggregator reports per-partition lag (high watermark - position) to the
Prometheus gauge and the consumer_lag table, which /api/stats sums (real Kafka, real PG)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import psycopg
import pytest
from confluent_kafka import Producer
from fastapi.testclient import TestClient

from cloud.aggregator import CONSUMER_LAG, Aggregator
from cloud.api.app import create_app
from cloud.settings import CloudSettings
from shared.message import Reading, encode_reading
from tests.support.accounts import add_user, login
from tools.kafka_broker import KafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_lag_is_reported_while_behind_and_zero_when_caught_up(
    database_url: str, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    bootstrap = kafka_broker.bootstrap
    now = datetime.now(UTC)
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(300):
        producer.produce(
            kafka_topic,
            encode_reading(Reading("A", "e1", i, now, {"rpm": 1.0})),
            b"A",
            headers=[("edge_backlog", str(300 - i).encode())],
        )
    producer.flush(10)

    seen_lag: list[int] = []
    aggregator = Aggregator(
        bootstrap,
        database_url,
        topic=kafka_topic,
        group=f"g-{kafka_topic}",
        batch_size=50,
        lag_interval_s=0.0,
    )
    aggregator.on_stored = lambda _n: seen_lag.append(sum(aggregator.lag.values()))
    stop = threading.Event()
    thread = threading.Thread(target=aggregator.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
        aggregator.stored_total == 300 and aggregator.lag and not any(aggregator.lag.values())
    ):
        time.sleep(0.2)
    stop.set()
    thread.join(30)

    assert aggregator.stored_total == 300
    assert max(seen_lag) > 0, "lag was never seen while 300 messages were waiting"
    assert sum(aggregator.lag.values()) == 0
    partition = next(p for (_t, p), lag in aggregator.lag.items())
    assert CONSUMER_LAG.labels(kafka_topic, str(partition))._value.get() == 0
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT topic, lag FROM consumer_lag").fetchall()
    assert rows and all(topic == kafka_topic and lag == 0 for topic, lag in rows)

    with TestClient(create_app(CloudSettings(database_url=database_url))) as client:
        login(client, "v", add_user(database_url, "v", "viewer"))
        stats = client.get("/api/stats").json()
    assert stats["consumer_lag"] == 0
    # The edge's own buffer depth travelled in a header with each message: the last one says 1.
    assert stats["edges"]["e1"]["backlog"] == 1
    assert {p["topic"] for p in stats["consumer_lag_partitions"]} == {kafka_topic}
