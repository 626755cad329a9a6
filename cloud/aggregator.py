"""The aggregator: a Kafka consumer in group ``sensor-consumer-group`` writing to PostgreSQL.

Every message has exactly one fate: stored, or a dead letter (table ``dead_letters`` and the
dead-letter topic) with its reason, its Kafka key and its whole payload, replayable after a
fix (``cloud/dead_letters.py``, ``rig-cloud dead-letters replay``). Offsets are committed
only after the PostgreSQL transaction holding the batch's rows and dead letters has committed.
A crash between the two redelivers the batch; the key ``(edge_id, seq)`` (table
``reading_keys``) drops the repeats and the message's position keeps its dead letter single.

- A message that does not decode or validate (``shared.message``: schema, sizes, the
  timestamp acceptance window) is a dead letter. So is, as a last line of defence, any other
  exception raised while decoding one message: one message never stops the loop.
- A message reusing a stored key with other content is a conflict: a dead letter naming both
  versions, never a second row. An identical redelivery is a silent duplicate.
- A batch that PostgreSQL refuses because of its rows (``DataError``, an integrity error other
  than a unique race, a limit) is bisected inside the transaction (savepoints) until the
  offending readings are alone; they become dead letters and the rest is stored.
- Only infrastructure errors (connection refused or lost, shutdown, serialization failure,
  deadlock, disk full) are retried: the consumer rewinds to the first unstored offset of each
  partition and retries with back-off, for as long as it takes.

Partition maintenance runs on a thread of its own with its own connection, never on this loop.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
from prometheus_client import Counter, Gauge

from cloud.db.partitions import MaintenanceThread
from cloud.dead_letters import DeadLetter, store_dead_letters
from cloud.edge_fleet import parse_header, record_status
from cloud.metrics.aggregator import BATCH_MESSAGES, BATCH_SECONDS
from cloud.storage import Conflict, StoreResult, record_edge_backlog, store_readings
from shared.configtypes import KAFKA_CONSUMER_GROUP, KAFKA_TOPIC
from shared.edge_status import KAFKA_HEADER as STATUS_HEADER
from shared.failpoints import failpoint
from shared.kafka_log import kafka_client_logger
from shared.logs import log_event
from shared.message import DEFAULT_WINDOW, MessageError, Reading, TimeWindow, decode_reading

log = logging.getLogger(__name__)
_KAFKA_LOG = kafka_client_logger(__name__)

CONSUMER_LAG = Gauge(
    "rig_consumer_lag_messages", "Messages not yet stored, per partition", ["topic", "partition"]
)
DEAD_LETTERS = Counter("rig_dead_letters_total", "Messages set aside with their reason", ["kind"])

# The edge's buffer depth travels in a header; BIGINT in the database. Anything that is not a
# plain number within this bound is a broken or hostile sender and is ignored.
MAX_BACKLOG = 2**62
_MAX_BACKLOG_HEADER = 24
# The dead-letter topic's messages stay under the 1 MB broker default with their headers.
_MIRROR_MAX_PAYLOAD = 1_000_000 - 16_384


def _backlog_header(msg: Message) -> int | None:
    """The edge's buffer depth sent along with the message (edge/outputs/kafka)."""
    headers = msg.headers() or []
    # A consumed message's headers are a list of pairs; the type also allows a dict.
    for name, value in headers.items() if isinstance(headers, dict) else headers:
        if name == "edge_backlog" and value is not None:
            if len(value) > _MAX_BACKLOG_HEADER:
                return None
            try:
                reported = int(value)
            except (TypeError, ValueError):
                return None
            return reported if 0 <= reported <= MAX_BACKLOG else None
    return None


def _status_header(msg: Message) -> bytes | None:
    """The edge's status report sent with the message (edge/outputs/kafka), unchecked."""
    headers = msg.headers() or []
    for name, value in headers.items() if isinstance(headers, dict) else headers:
        if name == STATUS_HEADER and value is not None:
            return value if isinstance(value, bytes) else str(value).encode()
    return None


def _position(msg: Message) -> tuple[tuple[str, int], int] | None:
    """Where a consumed message sits: ((topic, partition), offset). librdkafka sets all three
    on every message without an error; None for one without them."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:
        return None
    return (topic, partition), offset


def is_infrastructure_error(exc: BaseException) -> bool:
    """Errors about the database or the network, not about the rows: retried with back-off.

    psycopg's OperationalError covers connection failures, admin shutdown, serialization
    failures and deadlocks (class 40), lack of resources (disk full) and cancellation; a
    program limit (class 54, e.g. an oversized index row) is about a row."""
    if isinstance(exc, psycopg.errors.ProgramLimitExceeded):
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | OSError)


def is_row_error(exc: BaseException) -> bool:
    """Errors that some row of the batch causes: bisect to find it.

    A unique violation is not one: every insert of the store path names its conflict
    target, so one can only come from a race between two writers and is retried. Other
    database errors (a missing table, a bug in a statement) are the deployment's problem:
    retried, loudly, so that fixing the deployment resumes the stream without loss."""
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return False
    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
        return True
    if isinstance(exc, psycopg.errors.ProgramLimitExceeded):
        return True
    # Not a database error at all: raised while building a row (a value the dumper cannot
    # take). About the row by construction.
    return not isinstance(exc, psycopg.Error | OSError)


def _refusal(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"refused by the database: {type(exc).__name__}: {text}"[:500]


@dataclass(slots=True)
class _Item:
    msg: Message
    reading: Reading


class Aggregator:
    def __init__(
        self,
        bootstrap: str,
        database_url: str,
        *,
        topic: str = KAFKA_TOPIC,
        group: str = KAFKA_CONSUMER_GROUP,
        batch_size: int = 2000,
        kafka_extra: dict[str, str] | None = None,
        on_stored: Callable[[int], None] | None = None,
        maintenance: Callable[[], object] | None = None,
        maintenance_interval_s: float = 3600.0,
        dead_letter_topic: str | None = None,
        lag_interval_s: float = 5.0,
        window: TimeWindow | None = DEFAULT_WINDOW,
    ) -> None:
        self.topic = topic
        self.database_url = database_url
        self.batch_size = batch_size
        self.on_stored = on_stored
        self.maintenance = maintenance
        self.maintenance_interval_s = maintenance_interval_s
        self.window = window
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
        self._consumer = Consumer(settings, logger=_KAFKA_LOG)
        self.dead_letter_topic = dead_letter_topic
        self._dlq: Producer | None = None
        if dead_letter_topic:
            self._dlq = self._dead_letter_producer(bootstrap, dead_letter_topic, kafka_extra)
        self._conn: psycopg.Connection | None = None
        self.stored_total = 0
        self.duplicates_total = 0
        self.dead_letters_total = 0
        self.conflicts_total = 0
        self.batches_failed = 0
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
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": bootstrap,
            **(extra or {}),
        }
        admin = AdminClient(config)
        futures = admin.create_topics([NewTopic(topic, num_partitions=1)], operation_timeout=10)
        try:
            futures[topic].result(timeout=15)
        except (KafkaException, TimeoutError) as exc:
            exists = isinstance(exc, KafkaException) and (
                exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS
            )
            if not exists:
                log_event(
                    log,
                    logging.WARNING,
                    "dead-letter topic unavailable; table only",
                    topic=topic,
                    error=str(exc),
                )
                return None
        return Producer({**config, "acks": "all", "enable.idempotence": True}, logger=_KAFKA_LOG)

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.database_url, connect_timeout=5)
        return self._conn

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set. Nothing a message or the database does ends this
        loop: per-message problems become dead letters, everything else is retried."""
        self._consumer.subscribe([self.topic])
        maintainer = (
            MaintenanceThread(self.maintenance, interval_s=self.maintenance_interval_s).start()
            if self.maintenance is not None
            else None
        )
        failures = 0
        try:
            while not stop.is_set():
                self._maybe_report_lag()
                # Block for the first message only, then take whatever is already fetched:
                # low latency when the stream is thin, big batches when it is thick.
                try:
                    first = self._consumer.poll(0.5)
                    if first is None:
                        continue
                    messages = [first]
                    if self.batch_size > 1:
                        messages += self._consumer.consume(
                            num_messages=self.batch_size - 1, timeout=0
                        )
                except KafkaException as exc:
                    log_event(log, logging.WARNING, "kafka poll failed", error=str(exc))
                    stop.wait(1.0)
                    continue
                try:
                    with BATCH_SECONDS.time():
                        self._process(messages)
                    BATCH_MESSAGES.observe(len(messages))
                    failures = 0
                except Exception as exc:  # retried below; the loop never ends on an error
                    failures += 1
                    self.batches_failed += 1
                    self._rewind(messages)
                    if self._conn is not None:
                        self._conn.close()
                    delay = min(30.0, 0.5 * 2 ** min(failures - 1, 8)) * random.uniform(0.5, 1)
                    infrastructure = is_infrastructure_error(exc)
                    log.log(
                        logging.WARNING if infrastructure else logging.ERROR,
                        "database write failed; will retry batch"
                        if infrastructure
                        else "batch failed on an error that is not about its rows; will retry",
                        exc_info=not infrastructure,
                        extra={
                            "fields": {
                                "error": f"{type(exc).__name__}: {str(exc).strip()}",
                                "retry_in_s": round(delay, 2),
                            }
                        },
                    )
                    stop.wait(delay)
        finally:
            if maintainer is not None:
                maintainer.stop()
            self._close()

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
                # The high watermark every fetch response carries (no broker round trip): an
                # uncached query per partition took ~0.3 s each on a busy 2-core machine, a
                # quarter of the consume loop's time. Only a partition not fetched yet asks.
                _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
                if high < 0 or (tp.offset < 0 and _low < 0):
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
            position = _position(msg) if msg.error() is None else None
            if position is not None:
                key, offset = position
                first[key] = min(first.get(key, offset), offset)
        for (topic, partition), offset in first.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                # The partition was revoked meanwhile; its new owner starts from the last
                # committed offset, which is before this batch. Nothing is lost.
                log_event(log, logging.INFO, "seek skipped", partition=partition, error=str(exc))

    def _letter(
        self, msg: Message, reason: str, raw: bytes | None, detail: dict | None = None
    ) -> DeadLetter:
        return DeadLetter(
            "kafka", reason, raw, msg.topic(), msg.partition(), msg.offset(), detail, msg.key()
        )

    def _decode(self, msg: Message, now: datetime) -> Reading | DeadLetter:
        raw = msg.value() or b""
        try:
            return decode_reading(raw, window=self.window, now=now)
        except MessageError as exc:
            return self._letter(msg, str(exc), raw)
        except Exception as exc:  # the codec's contract is MessageError only: a bug to fix
            log.exception("decoding raised %s instead of MessageError", type(exc).__name__)
            return self._letter(msg, f"$: cannot be decoded ({type(exc).__name__}: {exc})", raw)

    def _process(self, messages: list[Message]) -> None:
        now = datetime.now(UTC)
        items: list[_Item] = []
        backlog: dict[str, int] = {}
        statuses: dict[str, dict[str, Any]] = {}
        letters: list[DeadLetter] = []
        offsets: dict[tuple[str, int], int] = {}
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log_event(log, logging.WARNING, "kafka error", error=str(err))
                continue
            position = _position(msg)
            if position is not None:
                key, offset = position
                offsets[key] = max(offsets.get(key, -1), offset)
            raw_status = _status_header(msg)
            if raw_status is not None and not msg.value():
                # A status report sent alone (the rig had nothing else to send): it names
                # its edge. One that does not is dead-lettered below like any empty message.
                alone = parse_header(None, raw_status)
                if alone is not None and alone["edge_id"] is not None:
                    statuses[alone["edge_id"]] = alone
                    continue
            decoded = self._decode(msg, now)
            if isinstance(decoded, DeadLetter):
                letters.append(decoded)
                continue
            items.append(_Item(msg, decoded))
            reported = _backlog_header(msg)
            if reported is not None:
                backlog[decoded.edge_id] = reported
            status = parse_header(decoded.edge_id, raw_status)
            if status is not None:
                statuses[decoded.edge_id] = status
        if not offsets:
            return
        conn = self._connection()
        with conn.transaction():
            result, refused = self._store_isolating(conn, [item.reading for item in items])
            if backlog:
                record_edge_backlog(conn, backlog)
            record_status(conn, statuses)
            for index, reason in refused:
                item = items[index]
                letters.append(self._letter(item.msg, reason, item.msg.value()))
            for conflict in result.conflicts:
                item = items[conflict.index]
                letters.append(
                    self._letter(item.msg, conflict.reason, item.msg.value(), conflict.detail)
                )
            letters.sort(key=lambda d: (d.topic or "", d.partition or 0, d.offset or 0))
            new_letters = self._store_letters(conn, letters)
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
        self.conflicts_total += len(result.conflicts)
        self.dead_letters_total += len(letters)
        if letters:
            for letter in letters:
                DEAD_LETTERS.labels(_kind(letter.reason)).inc()
            log_event(
                log,
                logging.WARNING,
                "messages dead-lettered",
                count=len(letters),
                first_reason=letters[0].reason[:300],
                first_offset=letters[0].offset,
                partition=letters[0].partition,
            )
            self._mirror_dead_letters([letters[i] for i in new_letters])
        if self.on_stored is not None:
            self.on_stored(result.inserted)

    def _store_isolating(
        self, conn: psycopg.Connection, readings: list[Reading]
    ) -> tuple[StoreResult, list[tuple[int, str]]]:
        """Store the readings; if PostgreSQL refuses the batch because of its rows, bisect
        (each half in a savepoint) until each offending reading is alone. Returns the total
        result (conflict indexes relative to ``readings``) and the refused readings with
        their reasons. Infrastructure errors propagate (the caller retries the batch)."""
        refused: list[tuple[int, str]] = []
        totals = {"received": 0, "inserted": 0}
        conflicts: list[Conflict] = []

        def attempt(lo: int, hi: int) -> None:
            try:
                with conn.transaction():
                    part = store_readings(conn, readings[lo:hi])
            except Exception as exc:
                if is_infrastructure_error(exc) or not is_row_error(exc):
                    raise
                if hi - lo == 1:
                    refused.append((lo, _refusal(exc)))
                    log_event(
                        log,
                        logging.WARNING,
                        "reading refused by the database",
                        edge_id=readings[lo].edge_id,
                        seq=readings[lo].seq,
                        error=_refusal(exc),
                    )
                    return
                middle = (lo + hi) // 2
                attempt(lo, middle)
                attempt(middle, hi)
                return
            totals["received"] += part.received
            totals["inserted"] += part.inserted
            conflicts.extend(Conflict(c.index + lo, c.reason, c.detail) for c in part.conflicts)

        if readings:
            attempt(0, len(readings))
        # Refused readings are in none of the parts' counts: neither inserted nor duplicates.
        return StoreResult(totals["received"], totals["inserted"], tuple(conflicts)), refused

    def _store_letters(self, conn: psycopg.Connection, letters: list[DeadLetter]) -> list[int]:
        """Dead letters must never fail on their own content: if PostgreSQL refuses one,
        store the batch's letters again reduced to ASCII reasons without detail."""
        if not letters:
            return []
        try:
            with conn.transaction():
                return store_dead_letters(conn, letters)
        except Exception as exc:
            if is_infrastructure_error(exc) or not is_row_error(exc):
                raise
            log_event(log, logging.WARNING, "dead letters reduced", error=_refusal(exc))
            reduced = [
                DeadLetter(
                    d.source,
                    d.reason.encode("ascii", "backslashreplace").decode("ascii"),
                    d.payload,
                    d.topic,
                    d.partition,
                    d.offset,
                    key=d.key,
                )
                for d in letters
            ]
            with conn.transaction():
                return store_dead_letters(conn, reduced)

    def _mirror_dead_letters(self, letters: list[DeadLetter]) -> None:
        if self._dlq is None or not self.dead_letter_topic or not letters:
            return
        failed: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failed.append(str(err))

        try:
            for letter in letters:
                # The original key and the payload: what kcat or a Connect job needs to put
                # a fixed message back. The table keeps every payload whole; the topic only
                # up to what a default broker takes (a larger one is cut, payload_bytes
                # says how large it was).
                payload = letter.payload or b""
                self._dlq.produce(
                    self.dead_letter_topic,
                    value=payload[:_MIRROR_MAX_PAYLOAD],
                    key=letter.key,
                    on_delivery=on_delivery,
                    headers={
                        "reason": letter.reason.encode("utf-8", "backslashreplace")[:4096],
                        "source_topic": (letter.topic or "").encode(),
                        "source_partition": str(letter.partition).encode(),
                        "source_offset": str(letter.offset).encode(),
                        "payload_bytes": str(len(payload)).encode(),
                    },
                )
            remaining = self._dlq.flush(10)
        except (BufferError, KafkaException) as exc:
            failed.append(str(exc))
            remaining = 0
        if remaining or failed:
            # The table is the durable record; the topic is a mirror for Kafka tooling.
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
                if self._dlq.flush(5):
                    self._dlq.purge()  # the table holds every letter; the mirror may lag
                    self._dlq.flush(1)
                self._dlq.close()
        finally:
            if self._conn is not None:
                self._conn.close()


def _kind(reason: str) -> str:
    """A small label set for the dead-letter counter."""
    if reason.startswith("key conflict"):
        return "conflict"
    if reason.startswith("refused by the database"):
        return "database"
    if "timestamp out of range" in reason:
        return "time"
    return "invalid"
