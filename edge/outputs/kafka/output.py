"""Kafka output: idempotent producer, acks=all, key = machine id.

A message Kafka refuses for good (too large, an invalid record) is that message's problem,
not the stream's: it is handed back as ``rejected`` with the broker's reason, moves to the
buffer's ``rejected`` table, and the rest of the batch is delivered. Everything else (broker
down, timeouts, authorisation, a full queue) is an error of the round, which is retried.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from edge.buffer import BufferedReading
from edge.outputs.base import SendResult
from edge.outputs.kafka.config import KafkaOutputConfig
from shared.edge_status import KAFKA_HEADER
from shared.kafka_log import kafka_client_logger
from shared.logs import log_event
from shared.message import MAX_READING_BYTES

log = logging.getLogger(__name__)
_KAFKA_LOG = kafka_client_logger(__name__)

BACKLOG_HEADER = "edge_backlog"
STATUS_HEADER = KAFKA_HEADER
# A status report sent alone waits this long for its delivery (the forwarder is idle then).
STATUS_TIMEOUT_S = 5.0
# Rounds in a row that delivered nothing before the producer is replaced. A producer can be
# left wedged by a broker restart (its idempotence state waiting on a session the broker no
# longer has) without librdkafka calling it fatal; a new one costs a reconnect, and what it
# sends again is dropped by the cloud's (edge_id, seq) key.
RENEW_AFTER_FAILED_ROUNDS = 3

# Refusals of one message that no retry can change. INVALID_RECORD: the broker's record
# validation; INVALID_TIMESTAMP: outside the topic's accepted timestamp range.
_PERMANENT = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.INVALID_RECORD,
    KafkaError.INVALID_TIMESTAMP,
}


def _permanent(err: KafkaError, payload_bytes: int) -> bool:
    if err.code() not in _PERMANENT:
        return False
    if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
        # From the broker this can also mean a topic whose max.message.bytes is below the
        # producer's batches: a reading the cloud would accept (at most MAX_READING_BYTES)
        # is never thrown away over a broker setting; it stays buffered and the error says
        # what to fix.
        return payload_bytes > MAX_READING_BYTES
    return True


class KafkaOutput:
    name = "kafka"

    def __init__(self, config: KafkaOutputConfig) -> None:
        self.config = config
        self._producer = Producer(config.producer_settings(), logger=_KAFKA_LOG)
        # One send resolves every message it produced before it returns (see send).
        self.max_send_s = config.message_timeout_ms / 1000.0 + 10.0
        self.failed_rounds = 0  # in a row, with nothing delivered
        self.renewals = 0

    def send(
        self, batch: Sequence[BufferedReading], backlog: int = 0, status: bytes | None = None
    ) -> SendResult:
        result = SendResult()
        headers: list[tuple[str, str | bytes | None]] = [(BACKLOG_HEADER, str(backlog).encode())]
        # The status report rides on the round's first message only: one copy is enough.
        first_headers = [*headers, (STATUS_HEADER, status)] if status is not None else headers
        errors: list[str] = []
        fatal: list[KafkaError] = []
        sizes = {item.seq: len(item.payload) for item in batch}

        def on_delivery(err: KafkaError | None, msg: Message, seq: int) -> None:
            if err is None:
                result.confirmed.append(seq)
            elif _permanent(err, sizes[seq]):
                result.rejected[seq] = f"Kafka: {err.str()}"
            else:
                errors.append(err.str())
                if err.fatal():
                    fatal.append(err)

        topic = self.config.topic
        for i, item in enumerate(batch):
            try:
                self._produce(topic, item, first_headers if i == 0 else headers, on_delivery)
            except KafkaException as exc:
                err = exc.args[0]
                if isinstance(err, KafkaError) and _permanent(err, len(item.payload)):
                    result.rejected[item.seq] = f"Kafka: {err.str()}"
                    continue
                # Anything else stops the round: what was produced is still resolved below,
                # the rest stays buffered for the next round.
                errors.append(str(err))
                if isinstance(err, KafkaError) and err.fatal():
                    fatal.append(err)
                break
        # Every message of the round is resolved (delivered, or failed after
        # message.timeout.ms) before we return, so a retry never races a late delivery.
        deadline = time.monotonic() + self.config.message_timeout_ms / 1000.0 + 5.0
        while len(self._producer) > 0 and time.monotonic() < deadline:
            self._producer.flush(0.5)
        if result.confirmed or result.rejected:
            self.failed_rounds = 0
        elif batch:
            self.failed_rounds += 1
        if fatal:
            self._renew(f"fatal error: {fatal[0].str()}")
        elif self.failed_rounds >= RENEW_AFTER_FAILED_ROUNDS:
            self._renew(
                f"{self.failed_rounds} rounds in a row delivered nothing "
                f"(last: {errors[0] if errors else 'not confirmed in time'})"
            )
        if errors:
            result.error = f"{len(errors)} not delivered: {errors[0]}"
        elif len(result.confirmed) + len(result.rejected) < len(batch):
            result.error = "delivery not confirmed in time"
        return result

    def _produce(
        self,
        topic: str,
        item: BufferedReading,
        headers: list[tuple[str, str | bytes | None]],
        on_delivery: Callable[[KafkaError | None, Message, int], None],
    ) -> None:
        seq = item.seq

        def report(err: KafkaError | None, msg: Message) -> None:
            on_delivery(err, msg, seq)

        while True:
            try:
                self._producer.produce(
                    topic,
                    value=item.payload,
                    key=item.machine_id.encode(),
                    headers=headers,
                    on_delivery=report,
                )
                return
            except BufferError:
                # Local queue full: let librdkafka deliver some first.
                self._producer.poll(0.05)

    def send_status(self, status: bytes) -> str | None:
        """The report alone: a message with an empty value and the ``edge_status`` header
        (the aggregator stores it, and never takes it for a reading)."""
        delivered: list[KafkaError | None] = []
        try:
            self._producer.produce(
                self.config.topic,
                value=b"",
                headers=[(STATUS_HEADER, status)],
                on_delivery=lambda err, _msg: delivered.append(err),
            )
        except (BufferError, KafkaException) as exc:
            return f"Kafka: {exc}"
        deadline = time.monotonic() + STATUS_TIMEOUT_S
        while not delivered and time.monotonic() < deadline:
            self._producer.poll(0.1)
        if not delivered:
            return "delivery not confirmed in time"
        err = delivered[0]
        return None if err is None else f"Kafka: {err.str()}"

    def _renew(self, why: str) -> None:
        """An idempotent producer that hit a fatal error refuses everything from then on,
        and one that keeps failing may be wedged: a new one starts a new producer session
        (the cloud's key drops any repeat)."""
        log_event(log, logging.ERROR, "kafka producer replaced by a new one", reason=why)
        with contextlib.suppress(KafkaException):
            self._producer.purge()
        self._producer = Producer(self.config.producer_settings(), logger=_KAFKA_LOG)
        self.failed_rounds = 0
        self.renewals += 1

    def close(self) -> None:
        self._producer.flush(5.0)
