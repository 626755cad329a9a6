"""Producing ingest-API readings to Kafka, answering only after the broker confirmed.

No lock is held across a request: each request enqueues its messages (a few microseconds
each, in a worker thread) and then waits for its own delivery reports on the event loop,
with a short deadline. A background thread serves librdkafka's delivery callbacks. So a
broker that is down or slow costs an ingest request at most its deadline (then 503), and
never a thread that login, stats or any other endpoint needs.

What may wait for the broker across all requests is bounded (``max_in_flight`` messages):
beyond it, new batches are refused at once instead of piling up in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from starlette.concurrency import run_in_threadpool

from shared.logs import log_event
from shared.message import Reading, encode_reading

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """Confirmed by the broker (acks=all): the reading is durably in the topic."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Failure:
    """The broker or the client refused it: it is not in the topic. ``permanent``: sending
    it again cannot succeed (too large, invalid); otherwise it may, later."""

    error: str
    permanent: bool = False


# Refusals that are about the message itself, not about the broker's availability.
_PERMANENT = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_RECORD,
    }
)


def _failure(err: KafkaError) -> Failure:
    return Failure(str(err), permanent=err.code() in _PERMANENT)


# A reading the broker had not confirmed by the deadline: it may still arrive (or fail).
Outcome = Delivery | Failure | None


class KafkaUnavailable(RuntimeError):
    """Nothing of the batch was produced (too much already waits for the broker)."""


class _Waiter:
    """Collects one request's delivery reports; resolved on the request's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.loop = loop
        self.outcomes: list[Outcome] = [None] * count
        self.remaining = count
        self.done = asyncio.Event()

    def settle(self, index: int, outcome: Delivery | Failure) -> None:
        # Runs on the event loop. A report after the deadline lands here too, harmlessly.
        if self.outcomes[index] is None:
            self.outcomes[index] = outcome
            self.remaining -= 1
            if self.remaining <= 0:
                self.done.set()

    def report(self, index: int) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            outcome: Delivery | Failure
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if err is not None:
                outcome = _failure(err)
            elif topic is None or partition is None or offset is None:
                # librdkafka sets all three on a delivered message; without them the
                # reading cannot be confirmed, so the request answers 503 (retried).
                outcome = Failure("delivery report without a topic position")
            else:
                outcome = Delivery(topic, partition, offset)
            # A closed loop (RuntimeError): nobody waits for this answer any more.
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.settle, index, outcome)

        return on_delivery


class IngestProducer:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        extra: dict[str, str] | None = None,
        *,
        max_in_flight: int = 50_000,
    ) -> None:
        self.topic = topic
        self.max_in_flight = max_in_flight
        settings: dict[str, object] = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "compression.type": "lz4",
            # A message the broker has not taken after this long fails, which frees its
            # place in the in-flight bound; its request answered 503 long before.
            "message.timeout.ms": 10_000,
            "partitioner": "murmur2_random",
        }
        settings.update(extra or {})
        self._producer = Producer(settings, logger=log)
        self._closed = threading.Event()
        self._poller = threading.Thread(
            target=self._serve_reports, name="ingest-kafka", daemon=True
        )
        self._poller.start()

    def _serve_reports(self) -> None:
        while not self._closed.is_set():
            try:
                self._producer.poll(0.1)
            except Exception as exc:  # a callback bug must not end delivery reporting
                log_event(log, logging.ERROR, "delivery report failed", error=repr(exc))

    @property
    def in_flight(self) -> int:
        """Messages produced and not yet reported on (queued, in flight, or reported but
        their callback not yet served)."""
        return len(self._producer)

    def _enqueue(self, readings: Sequence[Reading], backlog: int | None, waiter: _Waiter) -> None:
        headers: list[tuple[str, str | bytes | None]] | None = (
            [("edge_backlog", str(backlog).encode())] if backlog is not None else None
        )
        for i, reading in enumerate(readings):
            try:
                self._producer.produce(
                    self.topic,
                    value=encode_reading(reading),
                    key=reading.machine_id.encode(),
                    headers=headers,
                    on_delivery=waiter.report(i),
                )
            except BufferError:
                # The local queue is full (the broker is slow or gone): not produced.
                failure = Failure("producer queue full")
                waiter.loop.call_soon_threadsafe(waiter.settle, i, failure)
            except KafkaException as exc:
                # Refused outright (e.g. larger than message.max.bytes): not produced.
                waiter.loop.call_soon_threadsafe(waiter.settle, i, _failure(exc.args[0]))

    async def produce(
        self,
        readings: Sequence[Reading],
        *,
        timeout: float = 2.0,
        backlog: int | None = None,
        max_in_flight: int | None = None,
    ) -> list[Outcome]:
        """Produce the readings (key: machine id) and wait at most ``timeout`` seconds for
        the broker. One outcome per reading, in order: ``Delivery``, ``Failure``, or None
        when not confirmed in time. Raises ``KafkaUnavailable`` (nothing produced) when
        the in-flight bound (``max_in_flight``, default the producer's) would be exceeded."""
        if not readings:
            return []
        limit = max_in_flight or self.max_in_flight
        waiting = self.in_flight
        if waiting + len(readings) > limit:
            raise KafkaUnavailable(
                f"{waiting} messages already wait for the broker (limit {limit})"
            )
        waiter = _Waiter(asyncio.get_running_loop(), len(readings))
        # Encoding 5,000 readings takes milliseconds: off the event loop, but never waiting.
        await run_in_threadpool(self._enqueue, readings, backlog, waiter)
        if waiter.remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.done.wait(), timeout)
        return list(waiter.outcomes)

    def close(self, timeout: float = 5.0) -> None:
        try:
            if self._producer.flush(timeout):
                # The broker is gone: what is left was answered 503 long ago; drop it
                # rather than wait for it at shutdown.
                self._producer.purge()
                self._producer.flush(1.0)
        finally:
            self._closed.set()
            self._poller.join(2.0)
            self._producer.close()
