"""Kafka output: idempotent producer, acks=all, key = machine id."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from confluent_kafka import KafkaError, Message, Producer

from edge.buffer import BufferedReading
from edge.outputs.base import SendResult
from edge.outputs.kafka.config import KafkaOutputConfig

log = logging.getLogger(__name__)

BACKLOG_HEADER = "edge_backlog"


class KafkaOutput:
    name = "kafka"

    def __init__(self, config: KafkaOutputConfig) -> None:
        self.config = config
        self._producer = Producer(config.producer_settings(), logger=log)

    def send(self, batch: Sequence[BufferedReading], backlog: int = 0) -> SendResult:
        result = SendResult()
        headers = [(BACKLOG_HEADER, str(backlog).encode())]
        errors: list[str] = []

        def on_delivery(err: KafkaError | None, msg: Message, seq: int) -> None:
            if err is None:
                result.confirmed.append(seq)
            else:
                errors.append(str(err))

        topic = self.config.topic
        for item in batch:
            while True:
                try:
                    self._producer.produce(
                        topic,
                        value=item.payload,
                        key=item.machine_id.encode(),
                        headers=headers,
                        on_delivery=lambda err, msg, s=item.seq: on_delivery(err, msg, s),
                    )
                    break
                except BufferError:
                    # Local queue full: let librdkafka deliver some first.
                    self._producer.poll(0.05)
        # Every message of the round is resolved (delivered, or failed after
        # message.timeout.ms) before we return, so a retry never races a late delivery.
        deadline = time.monotonic() + self.config.message_timeout_ms / 1000.0 + 5.0
        while len(self._producer) > 0 and time.monotonic() < deadline:
            self._producer.flush(0.5)
        if errors:
            result.error = f"{len(errors)} not delivered: {errors[0]}"
        elif len(result.confirmed) < len(batch):
            result.error = "delivery not confirmed in time"
        return result

    def close(self) -> None:
        self._producer.flush(5.0)
