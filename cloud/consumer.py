"""The aggregator: a Kafka consumer in group ``sensor-consumer-group`` writing to PostgreSQL.

Offsets are committed only after the PostgreSQL transaction holding the batch's rows has
committed. A crash between the two redelivers the batch; the ``(edge_id, seq)`` key drops the
repeats. Messages that do not decode or validate go to ``dead_letters`` (in the same
transaction) with the reason, so they never block their partition. When PostgreSQL is down
the consumer rewinds to the first unstored offset of each partition and retries with back-off.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import psycopg
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import Gauge

from cloud.storage import store_dead_letters, store_readings
from shared.failpoints import failpoint
from shared.logs import log_event
from shared.message import MessageError, Reading, decode_reading

log = logging.getLogger(__name__)

CONSUMER_LAG = Gauge(
    "rig_consumer_lag_messages", "Messages not yet stored, per partition", ["topic", "partition"]
)


def _backlog_header(msg: Message) -> int | None:
    """The edge's buffer depth sent along with the message (edge/outputs/kafka)."""
    for name, value in msg.headers() or ():
        if name == "edge_backlog" and value is not None:
            try:
                return max(0, int(value))
            except ValueError:
                return None
    return None


class Aggregator:
    def __init__(
        self,
        bootstrap: str,
        database_url: str,
        *,
        topic: str = "sensor-data",
        group: str = "sensor-consumer-group",
        batch_size: int = 2000,
        kafka_extra: dict[str, str] | None = None,
        on_stored: Callable[[int], None] | None = None,
        maintenance: Callable[[], object] | None = None,
        maintenance_interval_s: float = 3600.0,
        dead_letter_topic: str | None = None,
        lag_interval_s: float = 5.0,
    ) -> None:
        self.topic = topic
        self.database_url = database_url
        self.batch_size = batch_size
        self.on_stored = on_stored
        self.maintenance = maintenance
        self.maintenance_interval_s = maintenance_interval_s
        self._next_maintenance = 0.0
        settings: dict[str, object] = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "isolation.level": "read_committed",
            # Cooperative rebalancing: adding an aggregator does not stop the others.
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 2_000,
            "max.poll.interval.ms": 300_000,
            "fetch.min.bytes": 1,
        }
        settings.update(kafka_extra or {})
        self._consumer = Consumer(settings, logger=log)
        self.dead_letter_topic = dead_letter_topic
        self._dlq: Producer | None = None
        if dead_letter_topic:
            self._dlq = self._dead_letter_producer(bootstrap, dead_letter_topic, kafka_extra)
        self._conn: psycopg.Connection | None = None
        self.stored_total = 0
        self.duplicates_total = 0
        self.dead_letters_total = 0
        self.group = group
        self.lag_interval_s = lag_interval_s
        self._next_lag_report = 0.0
        self.lag: dict[tuple[str, int], int] = {}

    @staticmethod
    def _dead_letter_producer(
        bootstrap: str, topic: str, extra: dict[str, str] | None
    ) -> Producer | None:
        """The dead-letter topic mirrors the dead_letters table for Kafka tooling; the table
        is the durable record, so a topic we cannot create only costs the mirror."""
        config: dict[str, object] = {"bootstrap.servers": bootstrap, **(extra or {})}
        admin = AdminClient(config)
        futures = admin.create_topics([NewTopic(topic, num_partitions=1)], operation_timeout=10)
        try:
            futures[topic].result(timeout=15)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                log_event(
                    log,
                    logging.WARNING,
                    "dead-letter topic unavailable; table only",
                    topic=topic,
                    error=str(exc),
                )
                return None
        return Producer({**config, "acks": "all", "enable.idempotence": True})

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.database_url, connect_timeout=5)
        return self._conn

    def run(self, stop: threading.Event) -> None:
        self._consumer.subscribe([self.topic])
        failures = 0
        try:
            while not stop.is_set():
                self._maybe_maintain()
                self._maybe_report_lag()
                # Block for the first message only, then take whatever is already fetched:
                # low latency when the stream is thin, big batches when it is thick.
                first = self._consumer.poll(0.5)
                if first is None:
                    continue
                messages = [first]
                if self.batch_size > 1:
                    messages += self._consumer.consume(num_messages=self.batch_size - 1, timeout=0)
                try:
                    self._process(messages)
                    failures = 0
                except (psycopg.Error, OSError) as exc:
                    failures += 1
                    self._rewind(messages)
                    if self._conn is not None:
                        self._conn.close()
                    delay = min(30.0, 0.5 * 2 ** min(failures - 1, 8)) * random.uniform(0.5, 1)
                    log_event(
                        log,
                        logging.WARNING,
                        "database write failed; will retry batch",
                        error=str(exc).strip(),
                        retry_in_s=round(delay, 2),
                    )
                    stop.wait(delay)
        finally:
            self._close()

    def _maybe_maintain(self) -> None:
        """Partition upkeep (create ahead, drop past retention) once an hour; a failure is
        logged and retried next time, never stopping consumption."""
        if self.maintenance is None or time.monotonic() < self._next_maintenance:
            return
        self._next_maintenance = time.monotonic() + self.maintenance_interval_s
        try:
            self.maintenance()
        except (psycopg.Error, OSError) as exc:
            self._next_maintenance = time.monotonic() + 30.0
            log_event(log, logging.WARNING, "partition maintenance failed", error=str(exc))

    def _maybe_report_lag(self) -> None:
        """Lag of each owned partition (high watermark - position), to the Prometheus gauge
        and the ``consumer_lag`` table that /api/stats reads. Best effort: a failure here
        must never hold up consumption."""
        if time.monotonic() < self._next_lag_report:
            return
        self._next_lag_report = time.monotonic() + self.lag_interval_s
        try:
            assignment = self._consumer.assignment()
            if not assignment:
                return
            rows = []
            for tp in self._consumer.position(assignment):
                _low, high = self._consumer.get_watermark_offsets(tp, timeout=2, cached=False)
                # A negative position means nothing consumed yet: everything is behind.
                position = tp.offset if tp.offset >= 0 else _low
                lag = max(0, high - position)
                self.lag[(tp.topic, tp.partition)] = lag
                CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)
                rows.append((self.group, tp.topic, tp.partition, lag, position, high))
            conn = self._connection()
            with conn.transaction():
                conn.cursor().executemany(
                    "INSERT INTO consumer_lag (group_id, topic, kafka_partition, lag, position, "
                    "high_water) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (group_id, topic, "
                    "kafka_partition) DO UPDATE SET lag = excluded.lag, position = "
                    "excluded.position, high_water = excluded.high_water, updated_at = now()",
                    sorted(rows),
                )
        except (KafkaException, psycopg.Error, OSError) as exc:
            log_event(log, logging.INFO, "lag report skipped", error=str(exc))

    def _rewind(self, messages: list[Message]) -> None:
        """Seek each partition back to the first message of the failed batch."""
        first: dict[tuple[str, int], int] = {}
        for msg in messages:
            if msg.error() is None:
                key = (msg.topic(), msg.partition())
                first[key] = min(first.get(key, msg.offset()), msg.offset())
        for (topic, partition), offset in first.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                # The partition was revoked meanwhile; its new owner starts from the last
                # committed offset, which is before this batch. Nothing is lost.
                log_event(log, logging.INFO, "seek skipped", partition=partition, error=str(exc))

    def _process(self, messages: list[Message]) -> None:
        readings: list[Reading] = []
        backlog: dict[str, int] = {}
        letters: list[tuple[str, str | None, int | None, int | None, str, bytes | None]] = []
        offsets: dict[tuple[str, int], int] = {}
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log_event(log, logging.WARNING, "kafka error", error=str(err))
                continue
            key = (msg.topic(), msg.partition())
            offsets[key] = max(offsets.get(key, -1), msg.offset())
            raw = msg.value() or b""
            try:
                reading = decode_reading(raw)
                readings.append(reading)
                reported = _backlog_header(msg)
                if reported is not None:
                    backlog[reading.edge_id] = reported
            except MessageError as exc:
                letters.append(
                    ("kafka", msg.topic(), msg.partition(), msg.offset(), str(exc), raw[:65536])
                )
        if not offsets:
            return
        conn = self._connection()
        with conn.transaction():
            result = store_readings(conn, readings, backlog)
            store_dead_letters(conn, letters)
        failpoint("cloud.aggregator.after_db_commit")
        # Only now are the rows durable: commit the offsets (synchronously, so a crash right
        # after this line cannot leave a stored batch uncommitted for long).
        commit = [TopicPartition(t, p, o + 1) for (t, p), o in offsets.items()]
        try:
            self._consumer.commit(offsets=commit, asynchronous=False)
        except KafkaException as exc:
            # E.g. a rebalance took the partition: the next owner re-reads from the last
            # committed offset and the key drops what we stored. Nothing is lost.
            log_event(log, logging.WARNING, "offset commit failed", error=str(exc))
        self.stored_total += result.inserted
        self.duplicates_total += result.duplicates
        self.dead_letters_total += len(letters)
        if letters:
            log_event(
                log,
                logging.WARNING,
                "messages dead-lettered",
                count=len(letters),
                first_reason=letters[0][4],
            )
            self._mirror_dead_letters(letters)
        if self.on_stored is not None:
            self.on_stored(result.inserted)

    def _mirror_dead_letters(
        self, letters: list[tuple[str, str | None, int | None, int | None, str, bytes | None]]
    ) -> None:
        if self._dlq is None or not self.dead_letter_topic:
            return
        failed: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failed.append(str(err))

        for _source, topic, partition, offset, reason, payload in letters:
            self._dlq.produce(
                self.dead_letter_topic,
                value=payload or b"",
                on_delivery=on_delivery,
                headers={
                    "reason": reason.encode(),
                    "source_topic": (topic or "").encode(),
                    "source_partition": str(partition).encode(),
                    "source_offset": str(offset).encode(),
                },
            )
        if self._dlq.flush(10) or failed:
            log_event(
                log,
                logging.WARNING,
                "dead-letter topic mirror incomplete",
                topic=self.dead_letter_topic,
                error=failed[0] if failed else "timeout",
            )

    def _close(self) -> None:
        try:
            self._consumer.close()
            if self._dlq is not None:
                self._dlq.flush(5)
        finally:
            if self._conn is not None:
                self._conn.close()
