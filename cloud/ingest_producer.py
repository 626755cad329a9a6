"""Producing ingest-API readings to Kafka, answering only after the broker confirmed."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message, Producer

from shared.message import Reading, encode_reading


@dataclass(frozen=True, slots=True)
class Delivery:
    topic: str
    partition: int
    offset: int


class KafkaUnavailable(RuntimeError):
    pass


class IngestProducer:
    def __init__(self, bootstrap: str, topic: str, extra: dict[str, str] | None = None) -> None:
        self.topic = topic
        settings: dict[str, object] = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "compression.type": "lz4",
            "message.timeout.ms": 15_000,
            "partitioner": "murmur2_random",
        }
        settings.update(extra or {})
        self._producer = Producer(settings)
        # Delivery callbacks fire inside poll()/flush(); one thread at a time drives them.
        self._lock = threading.Lock()

    def produce(
        self, readings: Sequence[Reading], timeout: float = 20.0, backlog: int | None = None
    ) -> list[Delivery]:
        headers = [("edge_backlog", str(backlog).encode())] if backlog is not None else None
        results: list[Delivery | None] = [None] * len(readings)
        errors: list[str] = []

        def callback(index: int) -> object:
            def on_delivery(err: KafkaError | None, msg: Message) -> None:
                if err is not None:
                    errors.append(str(err))
                else:
                    results[index] = Delivery(msg.topic(), msg.partition(), msg.offset())

            return on_delivery

        with self._lock:
            for i, reading in enumerate(readings):
                self._producer.produce(
                    self.topic,
                    value=encode_reading(reading),
                    key=reading.machine_id.encode(),
                    headers=headers,
                    on_delivery=callback(i),
                )
            remaining = self._producer.flush(timeout)
        if errors or remaining or any(r is None for r in results):
            raise KafkaUnavailable(errors[0] if errors else "delivery not confirmed in time")
        return [r for r in results if r is not None]

    def close(self) -> None:
        self._producer.flush(5)
