"""Undecodable or schema-invalid messages go to the dead-letter table and topic with their
reason and never block their partition (real Kafka, real PostgreSQL)."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from cloud.aggregator import Aggregator
from shared.message import Reading, encode_reading
from tools.kafka_broker import KafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_bad_messages_are_dead_lettered_and_the_rest_flows(
    database_url: str, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    bootstrap = kafka_broker.bootstrap
    dlq = f"dlq-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    good = [encode_reading(Reading("A", "e1", i, now, {"rpm": 3000.0})) for i in (1, 2)]
    producer = Producer({"bootstrap.servers": bootstrap})
    # Same key: one partition, so the bad messages sit between the good ones.
    for value in (
        good[0],
        b"\x00not json",
        b'{"machine_id": "A B", "edge_id": "e1", '
        b'"seq": 9, "ts": "2026-01-01T00:00:00Z", "values": {"rpm": 1}}',
        good[1],
    ):
        producer.produce(kafka_topic, value, b"A")
    producer.flush(10)

    aggregator = Aggregator(
        bootstrap, database_url, topic=kafka_topic, group=f"g-{dlq}", dead_letter_topic=dlq
    )
    stop = threading.Event()
    thread = threading.Thread(target=aggregator.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 60
    while aggregator.stored_total < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    thread.join(30)

    assert aggregator._dlq is not None, "dead-letter producer missing"
    assert aggregator.stored_total == 2 and aggregator.dead_letters_total == 2
    with psycopg.connect(database_url) as conn:
        reasons = [
            r for (r,) in conn.execute("SELECT reason FROM dead_letters ORDER BY kafka_offset")
        ]
        seqs = [s for (s,) in conn.execute("SELECT seq FROM sensor_readings ORDER BY seq")]
    assert seqs == [1, 2]
    assert "not valid JSON" in reasons[0]
    assert reasons[1].startswith("$.machine_id")

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"check-{dlq}", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(dlq, 0, OFFSET_BEGINNING)])
    mirrored = []
    deadline = time.monotonic() + 30
    while len(mirrored) < 2 and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is not None and message.error() is None:
            mirrored.append(dict(message.headers() or []))
    consumer.close()
    assert [h["reason"].decode() for h in mirrored] == reasons
    assert {h["source_topic"].decode() for h in mirrored} == {kafka_topic}


def test_a_redelivered_poison_message_is_one_dead_letter(
    database_url: str, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    """A crash between the database commit and the offset commit redelivers the batch: the
    message's position keeps its dead letter single (here: a second consumer group reads
    the same positions)."""
    from tests.support.processes import wait_until

    bootstrap = kafka_broker.bootstrap
    producer = Producer({"bootstrap.servers": bootstrap})
    good = encode_reading(Reading("A", "e1", 1, datetime.now(UTC), {"rpm": 1.0}))
    for value in (b"{broken", good):
        producer.produce(kafka_topic, value, b"A")
    producer.flush(10)
    for run in range(2):
        aggregator = Aggregator(bootstrap, database_url, topic=kafka_topic, group=f"g{run}")
        stop = threading.Event()
        thread = threading.Thread(target=aggregator.run, args=(stop,))
        thread.start()
        try:
            wait_until(
                lambda a=aggregator: (
                    a.dead_letters_total == 1 and a.stored_total + a.duplicates_total == 1
                ),
                60,
                f"run {run} to consume both messages",
            )
        finally:
            stop.set()
            thread.join(30)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM sensor_readings").fetchone()[0] == 1
