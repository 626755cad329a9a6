"""A producer that keeps delivering nothing is replaced by a new one, and a round that
delivers resets the count: a producer left wedged by a broker restart cannot stall an edge."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.buffer import BufferedReading, StoreAndForwardBuffer
from edge.outputs.kafka.config import KafkaOutputConfig
from edge.outputs.kafka.output import RENEW_AFTER_FAILED_ROUNDS, KafkaOutput
from shared.message import Reading
from tests.support.processes import free_port
from tools.kafka_broker import KafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _config(bootstrap: str, topic: str) -> KafkaOutputConfig:
    return KafkaOutputConfig.model_validate(
        {
            "kind": "kafka",
            "bootstrap_servers": bootstrap,
            "topic": topic,
            "linger_ms": 5,
            "message_timeout_ms": 1000,
        }
    )


def _batch(tmp_path: Path, n: int = 3) -> list[BufferedReading]:
    buffer = StoreAndForwardBuffer(tmp_path / "buffer.db")
    now = datetime.now(UTC)
    buffer.append_many([Reading("A", "e1", 0, now, {"rpm": float(i)}) for i in range(n)])
    batch = buffer.peek(n)
    buffer.close()
    return batch


def test_a_producer_that_delivers_nothing_round_after_round_is_replaced(
    tmp_path: Path,
) -> None:
    output = KafkaOutput(_config(f"127.0.0.1:{free_port()}", "nowhere"))
    batch = _batch(tmp_path)
    try:
        for round_ in range(1, RENEW_AFTER_FAILED_ROUNDS):
            result = output.send(batch)
            assert result.error and not result.confirmed
            assert (output.failed_rounds, output.renewals) == (round_, 0)
        output.send(batch)
        assert (output.failed_rounds, output.renewals) == (0, 1)
    finally:
        output.close()


def test_a_round_that_delivers_resets_the_count(
    tmp_path: Path, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    output = KafkaOutput(_config(kafka_broker.bootstrap, kafka_topic))
    batch = _batch(tmp_path)
    try:
        output.failed_rounds = RENEW_AFTER_FAILED_ROUNDS - 1
        result = output.send(batch)
        assert result.error is None and sorted(result.confirmed) == [r.seq for r in batch]
        assert (output.failed_rounds, output.renewals) == (0, 0)
    finally:
        output.close()
