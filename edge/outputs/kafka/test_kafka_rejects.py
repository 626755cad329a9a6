"""The Kafka output against a real broker: a message Kafka refuses for good is set aside and
the rest of the batch is delivered; nothing blocks the head of the line."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer

from edge.buffer import StoreAndForwardBuffer
from edge.config import ForwardingConfig
from edge.forwarding import Forwarder
from edge.metrics import EdgeMetrics
from edge.outputs.kafka.config import KafkaOutputConfig
from edge.outputs.kafka.output import KafkaOutput
from shared.message import Reading
from tests.support.processes import wait_until
from tools.kafka_broker import KafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _reading(i: int, custom_keys: int = 0) -> Reading:
    custom = {f"k{n}": float(n) for n in range(custom_keys)}
    return Reading("A", "e1", 0, datetime.now(UTC), {"rpm": float(i)}, custom)


def _consume(bootstrap: str, topic: str, expected: int) -> list[int]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"t-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seqs: list[int] = []

    def got_all() -> bool:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            seqs.append(orjson.loads(message.value())["seq"])
        return len(seqs) >= expected

    try:
        wait_until(got_all, 60, f"{expected} messages on {topic}", interval=0)
        # Anything more (a duplicate) would arrive right behind; give it one more poll.
        extra = consumer.poll(1.0)
        if extra is not None and extra.error() is None:
            seqs.append(orjson.loads(extra.value())["seq"])
    finally:
        consumer.close()
    return seqs


def test_oversize_message_is_set_aside_and_the_rest_delivered(
    tmp_path: Path, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    bootstrap = kafka_broker.bootstrap
    buffer = StoreAndForwardBuffer(tmp_path / "buffer.db")
    # A reading written by an edge before the size limit existed: 100,000 custom sensors,
    # over Kafka's default message limit (1,000,000 bytes). The buffer itself does not judge.
    good_before = buffer.append_many([_reading(i) for i in range(3)])
    [oversize] = buffer.append_many([_reading(99, custom_keys=100_000)])
    assert len(buffer.peek(10)[3].payload) > 1_000_000
    good_after = buffer.append_many([_reading(i) for i in range(3, 6)])
    output = KafkaOutput(
        KafkaOutputConfig(kind="kafka", bootstrap_servers=bootstrap, topic=kafka_topic)
    )
    metrics = EdgeMetrics()
    forwarder = Forwarder(buffer, output, 100, ForwardingConfig(retry_initial_s=0.05), metrics)
    forwarder.start()
    try:
        wait_until(lambda: buffer.depth == 0, 60, "the buffer to drain")
    finally:
        forwarder.stop(0)
        output.close()
    assert forwarder.healthy and forwarder.last_error is None
    buffer.close()

    delivered = _consume(bootstrap, kafka_topic, len(good_before) + len(good_after))
    assert sorted(delivered) == good_before + good_after  # each exactly once
    with sqlite3.connect(tmp_path / "buffer.db") as conn:
        reasons = [r for (r,) in conn.execute("SELECT reason FROM rejected")]
    assert len(reasons) == 1 and "too large" in reasons[0].lower(), reasons
    assert oversize not in delivered


def test_a_broker_that_is_down_is_an_error_not_a_rejection(tmp_path: Path) -> None:
    """Transient failures never set anything aside: the batch stays for the next round."""
    from tests.support.processes import free_port

    buffer = StoreAndForwardBuffer(tmp_path / "buffer.db")
    seqs = buffer.append_many([_reading(i) for i in range(3)])
    output = KafkaOutput(
        KafkaOutputConfig(
            kind="kafka",
            bootstrap_servers=f"127.0.0.1:{free_port()}",
            topic="nowhere",
            message_timeout_ms=1000,
        )
    )
    try:
        result = output.send(buffer.peek(10))
    finally:
        output.close()
    assert result.error is not None
    assert result.confirmed == [] and result.rejected == {}
    assert [b.seq for b in buffer.peek(10)] == seqs
