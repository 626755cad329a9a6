"""The edge daemon: inputs -> detection -> buffer (commit) -> forwarder.

Nothing leaves the edge before it is committed to the buffer. Readings produced in the same
moment are group-committed in one transaction, so fsync cost is per batch, not per reading.

The writer never dies of what it is given. Per batch it scores every reading (a model that
raises leaves that machine's readings with their threshold verdict), checks each against the
cloud's rules (``shared.message.check_reading``: a reading the cloud would refuse is set
aside in the buffer's ``rejected`` table with its reason, and its MQTT message acknowledged,
instead of blocking everything behind it), then commits. A commit that fails (disk full, I/O
error) keeps the batch and retries with a bounded back-off; meanwhile new readings wait in a
bounded queue (``buffer.max_pending_readings``), beyond which polled readings are dropped and
counted and MQTT messages are left unacknowledged for the broker to deliver again.

``/healthz``, the systemd watchdog and ``rig-edge status`` report what is true: the age of
the oldest reading waiting for its commit, whether the forwarder thread is alive and making
rounds, the destination, each input, the models, and alarms such as a buffer file that was
found corrupt and moved aside.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from edge.buffer import StoreAndForwardBuffer
from edge.config import EdgeConfig, load_edge_config
from edge.detection import CombinedDetector, Detector, ThresholdDetector
from edge.forwarding import Forwarder
from edge.health import HealthServer
from edge.inputs import registry
from edge.inputs.base import Input
from edge.metrics import EdgeMetrics
from edge.outputs.base import Output
from edge.status import StatusReporter
from edge.systemd import notify, watchdog_interval_s
from shared.configfile import ConfigError
from shared.edge_status import MAX_MACHINES
from shared.logs import log_event
from shared.message import MessageError, Reading, TimeWindow, check_reading, encode_reading

if TYPE_CHECKING:
    from edge.model_sync import ModelSync
    from edge.threshold_sync import ThresholdSync

log = logging.getLogger(__name__)

# At most this many readings are scored and committed as one transaction; after an outage
# of the disk the queue drains in slices, so polling keeps its schedule meanwhile.
WRITER_BATCH = 5000
# Commit retries back off from the first to the last value, doubling.
COMMIT_RETRY_FIRST_S = 0.1
COMMIT_RETRY_MAX_S = 5.0
# This many failed commits in a row make the edge unhealthy at once (a single failure may be
# a passing SQLITE_BUSY; three in a row, about a second, are not).
COMMIT_FAILURES_UNHEALTHY = 3
# At shutdown a failing commit is tried for this long, then the readings still waiting are
# given up (logged with their count; unacknowledged MQTT messages come back from the broker).
SHUTDOWN_COMMIT_S = 5.0
# The writer loop reports in at least this often; silent for WRITER_HUNG_S, it is hung.
WRITER_BEAT_S = 1.0
WRITER_HUNG_S = 120.0
# A dead writer task or forwarder thread is restarted after a back-off from the first to the
# last value (doubling while it keeps dying).
RESTART_FIRST_S = 2.0
RESTART_MAX_S = 60.0
# Drops and refusals are logged at most once per this many seconds (the metrics count all).
DROP_LOG_EVERY_S = 30.0


def build_inputs(
    config: EdgeConfig, emit: Callable[..., bool | None], metrics: EdgeMetrics
) -> list[Input[Any]]:
    """One input per entry of ``inputs:``, of the class the registry names for its type.
    ``emit(reading, on_commit=None, *, sample=None, source=name)``: each input's readings are
    labelled with its name (metrics, drops, last-reading age)."""
    window = config.time_window.window()

    def bound(name: str) -> Callable[..., bool | None]:
        def emit_from(
            reading: Reading,
            on_commit: Callable[[], None] | None = None,
            *,
            sample: int | None = None,
        ) -> Any:
            return emit(reading, on_commit, sample=sample, source=name)

        return emit_from

    inputs: list[Input[Any]] = []
    for kind, entries in config.inputs.by_kind().items():
        if entries:
            cls = registry.input_type(kind).input_class()
            inputs += [
                cls(entry, config.edge_id, bound(entry.name), metrics, window=window)
                for entry in entries
            ]
    return inputs


def build_output(config: EdgeConfig) -> tuple[Output, int]:
    if config.output.kind == "kafka":
        from edge.outputs.kafka.output import KafkaOutput

        return KafkaOutput(config.output), config.output.batch_readings
    from edge.outputs.http.output import HttpOutput

    return HttpOutput(config.output), config.output.batch_readings


@dataclass(slots=True)
class _Item:
    """One reading waiting for its commit. ``reading`` None: the broker delivered a message
    again while our copy of it waits for its commit; only its acknowledgement is pending."""

    reading: Reading | None
    on_commit: Callable[[], None] | None
    key: bytes | None
    source: str
    at: float  # monotonic time it was handed over
    sample: int | None = None  # the device's sample counter, committed as the input's mark


@dataclass(slots=True)
class _Batch:
    """Scored and checked readings waiting for a successful commit (kept across retries;
    whatever was committed is removed, so a retry never commits anything twice)."""

    # (reading, its message key, its acknowledgement)
    entries: list[tuple[Reading, bytes | None, Callable[[], None] | None]] = field(
        default_factory=list
    )
    # ((machine, payload, reason), stage, acknowledgement) for the rejected table
    aside: list[tuple[tuple[str, bytes, str], str, Callable[[], None] | None]] = field(
        default_factory=list
    )
    # Acknowledgements owed once everything above is committed (redelivered copies).
    after_acks: list[Callable[[], None]] = field(default_factory=list)
    # (input, machine) -> sample counter, committed with the first write of this batch.
    marks: dict[tuple[str, str], int] = field(default_factory=dict)
    oldest_at: float = 0.0

    def __len__(self) -> int:
        return len(self.entries) + len(self.aside)


class EdgeDaemon:
    def __init__(self, config: EdgeConfig, detector: Detector | None = None) -> None:
        self.config = config
        self.metrics = EdgeMetrics()
        # Local pins (edge YAML ``thresholds:``) win over the cloud's tables and the catalog.
        self.detector = detector or CombinedDetector(
            ThresholdDetector(pins=config.threshold_pins())
        )
        self._thresholds = (
            self.detector.thresholds
            if isinstance(self.detector, CombinedDetector)
            else ThresholdDetector()
        )
        if isinstance(self.detector, CombinedDetector):
            self.detector.on_model_error = self._on_model_error
            self.detector.on_model_recovered = self._on_model_recovered
        buffer = config.buffer
        self.buffer = StoreAndForwardBuffer(
            buffer.path,
            max_bytes=buffer.max_bytes,
            synchronous=buffer.synchronous,
            min_free_bytes=buffer.min_free_bytes,
            max_rejected_bytes=buffer.max_rejected_bytes,
            recent_message_keys=buffer.recent_message_keys,
        )
        self.alarms: list[str] = []
        if self.buffer.recovered_from is not None:
            alarm = (
                f"buffer file was corrupt at start: moved aside to {self.buffer.recovered_from}; "
                "a new buffer was started (readings in the old file were not forwarded)"
            )
            self.alarms.append(alarm)
            self.metrics.buffer_recovered.set(1)
            log_event(log, logging.CRITICAL, "buffer recovered from a corrupt file", alarm=alarm)
        output, batch = build_output(config)
        self.forwarder = Forwarder(self.buffer, output, batch, config.forwarding, self.metrics)
        self._output = output
        self._output_batch = batch
        self._pending: deque[_Item] = deque()
        # Message keys handed over but not committed yet (a redelivered copy of one of them
        # is acknowledged with it instead of stored twice).
        self._uncommitted_keys: dict[bytes, int] = {}
        self._batch: _Batch | None = None
        self._pending_event = asyncio.Event()
        self.inputs = self._build_inputs(config)
        self.started_at = time.time()
        self._health_server: HealthServer | None = None
        self.model_sync: ModelSync | None = None
        self.rul_sync: ModelSync | None = None  # remaining useful life, same lifecycle
        self.threshold_sync: ThresholdSync | None = None  # thresholds, same lifecycle
        self._model_sync_started = False
        # Writer state, for /healthz and the watchdog.
        self._writer_task: asyncio.Task[None] | None = None
        self._writer_stop = asyncio.Event()
        self._writer_beat = time.monotonic()
        self.writer_died: str | None = None
        self.last_commit_at: float | None = None
        self.commit_failures = 0  # consecutive
        self.last_commit_error: str | None = None
        self.dropped_total = 0
        self.set_aside_total = 0
        self._last_drop_log = 0.0
        self._source_last: dict[str, float] = {}
        # Machines in the readings taken (for the status report's "machines served"),
        # configured ones first; bounded like the report.
        self._machines_seen: set[str] = {m for m, _ in config.inputs.machines()}
        self._restarts: dict[str, int] = {}
        self._stopping = False
        if config.models is not None and isinstance(self.detector, CombinedDetector):
            # Imported here: onnxruntime loads only on edges that run ML models.
            from edge.model_sync import ModelSync
            from edge.threshold_sync import ThresholdSync

            machines = [machine for machine, _ in config.inputs.machines()]
            self.model_sync = ModelSync(config.models, machines, self.detector, self.metrics)
            self.rul_sync = ModelSync(
                config.models, machines, self.detector, self.metrics, kind="rul"
            )
            self.threshold_sync = ThresholdSync(config.models, machines, self._thresholds)
        self.status = StatusReporter(
            config.forwarding.status_interval_s,
            self.health,
            self._thresholds.versions,
            lambda: sorted(self._machines_seen),
        )
        self.forwarder.status_source = self.status.take

    # -- hand-over from the inputs --------------------------------------------------------

    def _build_inputs(self, config: EdgeConfig) -> list[Input[Any]]:
        """The configured inputs, each resumed from the sample counters it committed."""
        inputs = build_inputs(config, self._accept, self.metrics)
        for each in inputs:
            each.resume(self.buffer.sample_marks(each.name))
        return inputs

    def _accept(
        self,
        reading: Reading,
        on_commit: Callable[[], None] | None = None,
        *,
        sample: int | None = None,
        source: str = "",
    ) -> bool:
        """Inputs hand readings over here; ``on_commit`` runs once the reading is durable
        (an MQTT input acknowledges the message to its broker then). An MQTT delivery
        (``edge.inputs.common.Delivery``) also carries the message's digest and DUP flag.
        ``sample``: the device's sample counter, committed with the reading so that the next
        run of the edge knows it was recorded (``Input.resume``).
        Returns False when the reading was not taken (the queue is full)."""
        now = time.monotonic()
        wall = time.time()
        self._source_last[source] = wall
        self.metrics.source_last_reading.labels(source).set(wall)
        key: bytes | None = getattr(on_commit, "message_key", None)
        # A key comes only with an acknowledgement (an MQTT delivery), never without one.
        if on_commit is not None and key is not None and getattr(on_commit, "redelivered", False):
            if key in self._uncommitted_keys:
                self._pending.append(_Item(None, on_commit, None, source, now))
                self._pending_event.set()
                return True
            if self._committed(key):
                self.metrics.mqtt_redelivered.labels(source).inc()
                _run_ack(on_commit)
                return True
        queued = len(self._pending) + (len(self._batch) if self._batch is not None else 0)
        if queued >= self.config.buffer.max_pending_readings:
            self._refuse(on_commit, source, queued)
            return False
        self._pending.append(_Item(reading, on_commit, key, source, now, sample))
        if key is not None:
            self._uncommitted_keys[key] = self._uncommitted_keys.get(key, 0) + 1
        self._pending_event.set()
        return True

    def _committed(self, key: bytes) -> bool:
        try:
            return self.buffer.has_message(key)
        except sqlite3.Error as exc:
            # Unknown: storing it again is better than losing it (the cloud's key is the
            # last line: a repeat of a committed reading has another seq, so it would be a
            # second row; this is counted in the log).
            log_event(log, logging.WARNING, "message key lookup failed", error=str(exc))
            return False

    def _refuse(self, on_commit: Callable[[], None] | None, source: str, queued: int) -> None:
        self.dropped_total += 1
        if on_commit is not None:
            refuse = getattr(on_commit, "refuse", None)
            if refuse is not None:
                refuse()
            self.metrics.mqtt_refused.labels(source).inc()
            what = "message left unacknowledged for the broker"
        else:
            self.metrics.writer_dropped.labels(source).inc()
            what = "reading dropped"
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_EVERY_S:
            self._last_drop_log = now
            log_event(
                log,
                logging.ERROR,
                "writer queue full: " + what,
                source=source,
                queued=queued,
                limit=self.config.buffer.max_pending_readings,
                refused_total=self.dropped_total,
                last_error=self.last_commit_error,
            )

    # -- the writer -----------------------------------------------------------------------

    def _queued(self) -> int:
        return len(self._pending) + (len(self._batch) if self._batch is not None else 0)

    async def _writer(self, stop: asyncio.Event) -> None:
        """Score, check and commit until ``stop``; then commit what is left (for at most
        SHUTDOWN_COMMIT_S when commits fail)."""
        give_up_at: float | None = None
        while True:
            self._writer_beat = time.monotonic()
            self.metrics.writer_queue.set(self._queued())
            try:
                if self._batch is None and self._pending:
                    items = self._take()
                    try:
                        self._batch = self._prepare(items)
                    except BaseException:
                        # Whatever kills the writer must not take these readings with it:
                        # the restarted writer finds them where they were.
                        self._pending.extendleft(reversed(items))
                        raise
                if self._batch is not None:
                    if await self._commit(self._batch):
                        self._batch = None
                        continue
                    if stop.is_set():
                        give_up_at = give_up_at or time.monotonic() + SHUTDOWN_COMMIT_S
                        if time.monotonic() >= give_up_at:
                            self._give_up()
                            return
                    delay = min(
                        COMMIT_RETRY_MAX_S,
                        COMMIT_RETRY_FIRST_S * 2 ** min(self.commit_failures - 1, 10),
                    )
                    await self._sleep(delay, None if stop.is_set() else stop)
                    continue
            except Exception as exc:
                # Not expected (readings and commits are guarded above); count it as a
                # failed commit so health shows it, and keep going.
                log.exception("writer round failed")
                self._commit_failed(exc, self._batch or _Batch())
                await self._sleep(COMMIT_RETRY_MAX_S, None if stop.is_set() else stop)
                if stop.is_set() and self._queued():
                    give_up_at = give_up_at or time.monotonic() + SHUTDOWN_COMMIT_S
                    if time.monotonic() >= give_up_at:
                        self._give_up()
                        return
                continue
            if stop.is_set():
                return
            self._pending_event.clear()
            await self._sleep(WRITER_BEAT_S, stop, self._pending_event)

    @staticmethod
    async def _sleep(seconds: float, *events: asyncio.Event | None) -> None:
        waiters = [asyncio.create_task(e.wait()) for e in events if e is not None]
        if not waiters:
            await asyncio.sleep(seconds)
            return
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _take(self) -> list[_Item]:
        count = min(len(self._pending), WRITER_BATCH)
        return [self._pending.popleft() for _ in range(count)]

    def _prepare(self, items: list[_Item]) -> _Batch:
        """Score and check: each reading ends in ``entries`` (to commit) or ``aside`` (to
        the rejected table, with its reason)."""
        batch = _Batch(oldest_at=min(item.at for item in items))
        window = self.config.time_window.window()
        now = datetime.now(UTC)
        readings = [item.reading for item in items if item.reading is not None]
        if len(self._machines_seen) < MAX_MACHINES:
            new = {r.machine_id for r in readings} - self._machines_seen
            if new:  # replaced whole: the forwarder thread reads it for the status report
                self._machines_seen = self._machines_seen | new
        try:
            results = self._score(readings)
        except Exception as exc:  # a bug here must cost these readings, not the writer
            log.exception("scoring a batch failed; its readings are set aside")
            results = [exc] * len(readings)
        scored = iter(results)
        for item in items:
            reading = item.reading
            if reading is None:
                if item.on_commit is not None:
                    batch.after_acks.append(item.on_commit)
                continue
            if item.sample is not None:
                # Recorded whether it is stored or set aside: either way its fate is decided.
                batch.marks[(item.source, reading.machine_id)] = item.sample
            result = next(scored)
            if isinstance(result, Exception):
                self._aside(batch, item, "detection", f"detection failed: {_describe(result)}")
                continue
            reading.detection = result
            problem = self._check(reading, window, now)
            if problem is not None:
                self._aside(batch, item, "validation", f"refused by the cloud's rules: {problem}")
                continue
            if result.get("is_anomaly"):
                self.metrics.anomalies.labels(reading.machine_id).inc()
            batch.entries.append((reading, item.key, item.on_commit))
        return batch

    def _score(self, readings: list[Reading]) -> list[dict[str, Any] | Exception]:
        # Machines known only from their readings (MQTT, Sparkplug) get the cloud's
        # thresholds and models too.
        machines = {r.machine_id for r in readings}
        for sync in (self.threshold_sync, self.model_sync, self.rul_sync):
            if sync is not None:
                try:
                    sync.observe(machines)
                except Exception:  # learning a machine must never cost the batch
                    log.exception("a sync could not take new machines")
        detector = self.detector
        if isinstance(detector, CombinedDetector):
            try:
                # One model call per machine per batch: the per-reading ML cost stays small.
                return detector.score_batch_checked(readings)
            except Exception:
                log.exception("batch scoring failed; scoring each reading with thresholds")
                detector = self._thresholds
        results: list[dict[str, Any] | Exception] = []
        for reading in readings:
            try:
                results.append(detector.score(reading))
            except Exception as exc:
                try:
                    results.append(self._thresholds.score(reading))
                except Exception:
                    results.append(exc)
        return results

    def _check(self, reading: Reading, window: TimeWindow, now: datetime) -> str | None:
        """None when the cloud will accept ``reading``, else why not. A detection the cloud
        would refuse (a model answering NaN, say) falls back to the threshold verdict."""
        try:
            check_reading(reading, window=window, now=now)
            return None
        except MessageError as exc:
            if not exc.field.startswith("$.detection") or not isinstance(
                self.detector, CombinedDetector
            ):
                return str(exc)
            self.detector.model_failed(reading.machine_id, exc)
        try:
            reading.detection = self._thresholds.score(reading)
            check_reading(reading, window=window, now=now)
            return None
        except MessageError as exc:
            return str(exc)
        except Exception as exc:
            return f"detection failed: {_describe(exc)}"

    def _aside(self, batch: _Batch, item: _Item, stage: str, reason: str) -> None:
        assert item.reading is not None
        row = (item.reading.machine_id, _payload_for_inspection(item.reading), reason)
        # Acknowledged once it is set aside: the broker must stop delivering a message that
        # will never be accepted.
        batch.aside.append((row, stage, item.on_commit))
        if item.key is not None:
            self._forget_key(item.key)

    def _forget_key(self, key: bytes) -> None:
        count = self._uncommitted_keys.get(key, 0) - 1
        if count > 0:
            self._uncommitted_keys[key] = count
        else:
            self._uncommitted_keys.pop(key, None)

    async def _commit(self, batch: _Batch) -> bool:
        """Commit what ``batch`` still holds; True when all of it is done."""
        self._writer_beat = time.monotonic()
        try:
            if batch.entries:
                readings = [reading for reading, _, _ in batch.entries]
                keys = [key for _, key, _ in batch.entries if key is not None]
                try:
                    # With fsync, off the event loop so polling keeps its schedule.
                    await asyncio.to_thread(self.buffer.append_many, readings, keys, batch.marks)
                except sqlite3.Error:
                    raise
                except Exception:
                    # Not the disk: something about a reading. Commit one by one so only
                    # the one that fails is set aside.
                    log.exception("batch commit raised; committing reading by reading")
                    await self._commit_one_by_one(batch)
                else:
                    self._entries_committed(batch.entries)
                    batch.entries = []
                    batch.marks = {}
            if batch.aside or batch.marks:
                await asyncio.to_thread(
                    self.buffer.set_aside, [row for row, _, _ in batch.aside], batch.marks
                )
                batch.marks = {}
            if batch.aside:
                for _, stage, _ in batch.aside:
                    self.metrics.set_aside.labels(stage).inc()
                self.set_aside_total += len(batch.aside)
                first = batch.aside[0][0]
                log_event(
                    log,
                    logging.WARNING,
                    "readings set aside",
                    count=len(batch.aside),
                    first_machine=first[0],
                    first_reason=first[2][:300],
                )
                acks = [ack for _, _, ack in batch.aside if ack is not None]
                batch.aside = []
                _run_acks(acks)
        except sqlite3.Error as exc:
            self._commit_failed(exc, batch)
            return False
        _run_acks(batch.after_acks)
        batch.after_acks = []
        if self.commit_failures:
            log_event(
                log,
                logging.INFO,
                "buffer commits work again",
                after_failures=self.commit_failures,
                queued=self._queued(),
            )
        self.commit_failures = 0
        self.last_commit_error = None
        self.metrics.commit_consecutive_failures.set(0)
        self.last_commit_at = time.time()
        self.metrics.last_commit.set(self.last_commit_at)
        return True

    async def _commit_one_by_one(self, batch: _Batch) -> None:
        while batch.entries:
            entry = batch.entries[0]
            reading, key, ack = entry
            try:
                await asyncio.to_thread(
                    self.buffer.append_many,
                    [reading],
                    [key] if key is not None else [],
                    batch.marks,
                )
            except sqlite3.Error:
                raise  # what is left stays in the batch for the retry
            except Exception as exc:
                row = (
                    reading.machine_id,
                    _payload_for_inspection(reading),
                    f"cannot be stored: {_describe(exc)}",
                )
                batch.aside.append((row, "validation", ack))
                if key is not None:
                    self._forget_key(key)
            else:
                self._entries_committed([entry])
            batch.entries.pop(0)

    def _entries_committed(
        self, entries: list[tuple[Reading, bytes | None, Callable[[], None] | None]]
    ) -> None:
        self.metrics.readings_buffered.inc(len(entries))
        for _, key, ack in entries:
            if key is not None:
                self._forget_key(key)
            if ack is not None:
                _run_ack(ack)

    def _commit_failed(self, exc: Exception, batch: _Batch) -> None:
        self.commit_failures += 1
        self.last_commit_error = _describe(exc)
        self.metrics.commit_failures.inc()
        self.metrics.commit_consecutive_failures.set(self.commit_failures)
        if self.commit_failures == 1 or self.commit_failures % 20 == 0:
            log_event(
                log,
                logging.ERROR,
                "buffer commit failed; the batch is kept and retried",
                error=self.last_commit_error,
                failures=self.commit_failures,
                batch=len(batch),
                queued=self._queued(),
            )

    def _give_up(self) -> None:
        left = self._queued()
        self._batch = None
        self._pending.clear()
        log_event(
            log,
            logging.ERROR,
            "stopping with readings not committed (the buffer cannot be written)",
            readings=left,
            error=self.last_commit_error,
        )

    # -- detection callbacks --------------------------------------------------------------

    def _on_model_error(self, machine: str, exc: Exception, first: bool) -> None:
        self.metrics.model_errors.labels(machine).inc()
        if first:
            log_event(
                log,
                logging.ERROR,
                "model failed; scoring with thresholds until it works again",
                machine=machine,
                error=_describe(exc)[:500],
            )

    def _on_model_recovered(self, machine: str) -> None:
        log_event(log, logging.INFO, "model scores again", machine=machine)

    # -- health ---------------------------------------------------------------------------

    def _writer_health(self, now: float, mono: float) -> tuple[dict[str, Any], list[str]]:
        problems: list[str] = []
        # Called from the HTTP server's thread while the event loop works: snapshot first.
        oldest: float | None = None
        batch = self._batch
        if batch is not None and len(batch):
            oldest = batch.oldest_at
        try:
            first: float | None = self._pending[0].at
        except IndexError:
            first = None
        if first is not None:
            oldest = first if oldest is None else min(oldest, first)
        waiting_s = None if oldest is None else mono - oldest
        task = self._writer_task
        alive = task is not None and not task.done()
        if task is not None and not alive and not self._stopping:
            problems.append(f"writer is not running: {self.writer_died or 'ended'}")
        if waiting_s is not None and waiting_s > self.config.health.commit_stall_s:
            problems.append(
                f"writer: readings have waited {waiting_s:.0f} s for their commit "
                f"(limit {self.config.health.commit_stall_s:g} s)"
                + (f"; last error: {self.last_commit_error}" if self.last_commit_error else "")
            )
        elif self.commit_failures >= COMMIT_FAILURES_UNHEALTHY:
            problems.append(
                f"writer: {self.commit_failures} buffer commits failed in a row: "
                f"{self.last_commit_error}"
            )
        doc = {
            "alive": alive,
            "queued": self._queued(),
            "max_queued": self.config.buffer.max_pending_readings,
            "oldest_waiting_s": None if waiting_s is None else round(waiting_s, 1),
            "last_commit_at": _iso(self.last_commit_at),
            "last_commit_age_s": (
                None if self.last_commit_at is None else round(now - self.last_commit_at, 1)
            ),
            "consecutive_failures": self.commit_failures,
            "last_error": self.last_commit_error,
            "dropped_total": self.dropped_total,
            "set_aside_total": self.set_aside_total,
            "restarts": self._restarts.get("writer", 0),
        }
        return doc, problems

    def _forwarder_health(self, now: float, mono: float) -> tuple[dict[str, Any], list[str]]:
        forwarder = self.forwarder
        problems: list[str] = []
        if not forwarder.alive:
            problems.append(f"forwarder thread died: {forwarder.died or 'ended'}")
        stuck = forwarder.stuck_for()
        if stuck > self.config.health.forwarder_stall_s:
            problems.append(
                f"forwarder: one round has been working for "
                f"{stuck + forwarder.output_timeout():.0f} s, beyond the output's timeout of "
                f"{forwarder.output_timeout():g} s"
            )
        if forwarder.buffer_failing_since is not None:
            failing = mono - forwarder.buffer_failing_since
            if failing > self.config.health.commit_stall_s:
                problems.append(
                    f"forwarder cannot read the buffer for {failing:.0f} s: "
                    f"{forwarder.buffer_error}"
                )
        last = forwarder.last_round_at
        doc = {
            "alive": forwarder.alive,
            "last_round_at": _iso(last),
            "last_round_age_s": None if last is None else round(now - last, 1),
            "buffer_error": forwarder.buffer_error,
            "restarts": self._restarts.get("forwarder", 0),
        }
        return doc, problems

    def _inputs_health(self, now: float) -> tuple[dict[str, Any], list[str]]:
        inputs: dict[str, Any] = {}
        problems: list[str] = []
        for each in self.inputs:
            name = each.name
            try:
                devices = each.health()
            except Exception as exc:
                devices = {}
                problems.append(f"input {name}: health unknown ({_describe(exc)})")
            last = self._source_last.get(name)
            doc: dict[str, Any] = {
                "healthy": bool(devices) and all(devices.values()),
                "devices": devices,
                "last_reading_at": _iso(last),
                "last_reading_age_s": None if last is None else round(now - last, 1),
            }
            sanity = getattr(each, "sanity", None)  # set by Input.__init__
            if sanity is not None:
                doc["clock_replaced_total"] = sanity.clock_replaced
                doc["values_refused_total"] = sanity.values_refused
            inputs[name] = doc
            down = sorted(k for k, ok in devices.items() if not ok)
            if down:
                problems.append(f"input {name}: not answering: {', '.join(down)}")
        return inputs, problems

    def health(self) -> dict[str, Any]:
        now = time.time()
        mono = time.monotonic()
        unhealthy: list[str] = []
        degraded: list[str] = []
        writer, problems = self._writer_health(now, mono)
        unhealthy += problems
        forwarder, problems = self._forwarder_health(now, mono)
        unhealthy += problems
        buffer: dict[str, Any]
        try:
            stats = self.buffer.stats()
            buffer = {
                "depth": stats.depth,
                "bytes": stats.bytes,
                "dropped_total": stats.dropped_total,
                "next_seq": stats.next_seq,
                "rejected": stats.rejected,
                "rejected_dropped_total": stats.rejected_dropped_total,
                "disk_bytes": stats.disk_bytes,
                "free_bytes": stats.free_bytes,
            }
        except Exception as exc:
            buffer = {"error": _describe(exc)}
            degraded.append(f"buffer figures unreadable: {_describe(exc)}")
        buffer["recovered_from"] = (
            None if self.buffer.recovered_from is None else str(self.buffer.recovered_from)
        )
        if not self.forwarder.healthy and self.forwarder.last_error is not None:
            degraded.append(
                f"output {self.config.output.kind} failing: {self.forwarder.last_error}"
            )
        inputs, problems = self._inputs_health(now)
        degraded += problems
        detection: dict[str, Any] = {}
        models: dict[str, str] = {}
        if isinstance(self.detector, CombinedDetector):
            models = self.detector.versions()
            failing = dict(self.detector.failing)
            detection = {
                "model_errors_total": self.detector.model_errors_total,
                "failing": failing,
            }
            degraded += [
                f"model of {m} failing (thresholds only): {e}" for m, e in sorted(failing.items())
            ]
        doc: dict[str, Any] = {
            "status": "unhealthy" if unhealthy else "degraded" if degraded else "ok",
            "reasons": unhealthy + degraded,
            "alarms": list(self.alarms),
            "edge_id": self.config.edge_id,
            "uptime_s": round(now - self.started_at, 1),
            "writer": writer,
            "forwarder": forwarder,
            "output": {
                "kind": self.config.output.kind,
                "healthy": self.forwarder.healthy,
                "last_error": self.forwarder.last_error,
            },
            "buffer": buffer,
            "inputs": inputs,
            "models": models,
            "detection": detection,
        }
        if self.model_sync is not None and self._model_sync_started:
            try:
                sync = self.model_sync.health()
            except Exception as exc:
                sync = {"error": _describe(exc)}
            doc["model_sync"] = sync
            if self.rul_sync is not None:
                try:
                    doc["rul_sync"] = self.rul_sync.health()
                except Exception as exc:
                    doc["rul_sync"] = {"error": _describe(exc)}
                if isinstance(self.detector, CombinedDetector):
                    doc["rul_models"] = self.detector.rul_versions()
            if self.threshold_sync is not None:
                try:
                    doc["threshold_sync"] = self.threshold_sync.health()
                except Exception as exc:
                    doc["threshold_sync"] = {"error": _describe(exc)}
            if sync.get("running") is False and not self._stopping:
                doc["reasons"].append("model sync thread is not running")
                if doc["status"] == "ok":
                    doc["status"] = "degraded"
        if self.alarms and doc["status"] == "ok":
            doc["status"] = "degraded"
        self.metrics.healthy.set({"ok": 2, "degraded": 1}.get(doc["status"], 0))
        return doc

    def pipeline_alive(self) -> bool:
        """What the systemd watchdog vouches for: the writer task and the forwarder thread
        run and are not hung. A destination that is down is not a reason to restart."""
        task = self._writer_task
        if task is None or task.done():
            return False
        if time.monotonic() - self._writer_beat > WRITER_HUNG_S:
            return False
        forwarder = self.forwarder
        return forwarder.alive and forwarder.stuck_for() <= self.config.health.forwarder_stall_s

    # -- supervision ----------------------------------------------------------------------

    async def _watchdog(self, stop: asyncio.Event) -> None:
        interval = watchdog_interval_s()
        if interval is None:
            return
        silent = False
        while not stop.is_set():
            try:
                if self.pipeline_alive():
                    notify("WATCHDOG=1")
                    silent = False
                elif not silent:
                    silent = True
                    log_event(
                        log,
                        logging.CRITICAL,
                        "pipeline not alive: watchdog pings stop (systemd restarts the daemon)",
                        reasons=self.health()["reasons"],
                    )
            except Exception:
                log.exception("watchdog round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    async def _supervise(self, stop: asyncio.Event) -> None:
        """Restart a writer task or forwarder thread that died (after a back-off, so the
        failure shows in /healthz and a component that dies at once does not spin), and keep
        the buffer gauges current."""
        backoff = {"writer": RESTART_FIRST_S, "forwarder": RESTART_FIRST_S}
        dead_since: dict[str, float] = {}
        started: dict[str, float] = {"writer": time.monotonic(), "forwarder": time.monotonic()}
        while not stop.is_set():
            try:
                self._supervise_round(backoff, dead_since, started)
                await asyncio.to_thread(self._update_buffer_gauges)
            except Exception:
                log.exception("supervision round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)

    def _supervise_round(
        self, backoff: dict[str, float], dead_since: dict[str, float], started: dict[str, float]
    ) -> None:
        mono = time.monotonic()
        task = self._writer_task
        if task is not None and task.done() and not self._stopping:
            if "writer" not in dead_since:
                dead_since["writer"] = mono
                exc = None if task.cancelled() else task.exception()
                self.writer_died = _describe(exc) if exc is not None else "ended"
                log_event(log, logging.CRITICAL, "writer died", error=self.writer_died)
            elif mono - dead_since["writer"] >= backoff["writer"]:
                del dead_since["writer"]
                backoff["writer"] = self._next_backoff(backoff["writer"], started["writer"])
                started["writer"] = mono
                self._restart("writer")
                self._writer_task = asyncio.create_task(self._writer(self._writer_stop))
        if not self.forwarder.alive and not self._stopping:
            if "forwarder" not in dead_since:
                dead_since["forwarder"] = mono
            elif mono - dead_since["forwarder"] >= backoff["forwarder"]:
                del dead_since["forwarder"]
                backoff["forwarder"] = self._next_backoff(
                    backoff["forwarder"], started["forwarder"]
                )
                started["forwarder"] = mono
                self._restart("forwarder")
                self.forwarder = Forwarder(
                    self.buffer,
                    self._output,
                    self._output_batch,
                    self.config.forwarding,
                    self.metrics,
                )
                self.forwarder.status_source = self.status.take
                self.forwarder.start()

    @staticmethod
    def _next_backoff(current: float, last_start: float) -> float:
        # Ran for a good while since its last restart: the next failure is a new incident.
        if time.monotonic() - last_start > 10 * RESTART_MAX_S:
            return RESTART_FIRST_S
        return min(RESTART_MAX_S, current * 2)

    def _restart(self, component: str) -> None:
        self._restarts[component] = self._restarts.get(component, 0) + 1
        self.metrics.component_restarts.labels(component).inc()
        log_event(
            log,
            logging.WARNING,
            f"restarting the {component}",
            restarts=self._restarts[component],
        )

    def _update_buffer_gauges(self) -> None:
        try:
            stats = self.buffer.stats()
        except Exception:
            return
        self.metrics.buffer_rejected.set(stats.rejected)
        self.metrics.buffer_rejected_dropped.set(stats.rejected_dropped_total)
        self.metrics.buffer_disk_bytes.set(stats.disk_bytes)
        self.metrics.buffer_free_bytes.set(stats.free_bytes)
        self.metrics.writer_queue.set(self._queued())

    # -- running --------------------------------------------------------------------------

    def _start_inputs(self) -> tuple[asyncio.Event, list[asyncio.Task[None]]]:
        inputs_stop = asyncio.Event()
        tasks = [asyncio.create_task(each.run(inputs_stop)) for each in self.inputs]
        return inputs_stop, tasks

    async def _apply_reload(
        self, new: EdgeConfig, inputs_stop: asyncio.Event, tasks: list[asyncio.Task[None]]
    ) -> tuple[asyncio.Event, list[asyncio.Task[None]]] | None:
        """Swap inputs (and the output if it changed) without touching the buffer. Returns
        the running inputs' stop event and tasks, or None when the reload is refused.

        Inputs are swapped first and only when their section changed, so polling pauses for
        milliseconds at most; the output is swapped after, while the inputs already run: the
        old forwarder may take up to its send timeout to finish a round against an
        unreachable destination, and readings meanwhile simply wait in the buffer."""
        fixed = {"edge_id": "edge_id", "buffer": "buffer", "metrics": "metrics"}
        changed = [
            name for name, attr in fixed.items() if getattr(new, attr) != getattr(self.config, attr)
        ]
        if changed:
            log_event(
                log,
                logging.ERROR,
                "reload refused: these settings need a restart",
                settings=changed,
            )
            return None
        old = self.config
        self.config = new
        if new.thresholds != old.thresholds:
            # Local pins apply from the next batch, like a table from the cloud.
            self._thresholds.set_pins(new.threshold_pins())
            log_event(log, logging.INFO, "threshold pins reloaded", machines=sorted(new.thresholds))
        if new.inputs != old.inputs:
            inputs_stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            previous = {(type(each), each.name): each for each in self.inputs}
            self.inputs = self._build_inputs(new)
            for each in self.inputs:
                before = previous.get((type(each), each.name))
                if before is not None:
                    each.adopt(before)
            inputs_stop, tasks = self._start_inputs()
        if new.output != old.output or new.forwarding != old.forwarding:
            await asyncio.to_thread(self.forwarder.stop, 0.0)
            self._output.close()
            output, batch = build_output(new)
            self.forwarder = Forwarder(self.buffer, output, batch, new.forwarding, self.metrics)
            self.status.interval_s = new.forwarding.status_interval_s
            self.forwarder.status_source = self.status.take
            self._output = output
            self._output_batch = batch
            self.forwarder.start()
        return inputs_stop, tasks

    async def run(
        self,
        stop: asyncio.Event,
        reload: asyncio.Event | None = None,
        load_config: Callable[[], EdgeConfig] | None = None,
    ) -> None:
        """Run until ``stop``. Each time ``reload`` is set (SIGHUP), ``load_config`` is
        called: a valid config replaces the inputs and output in place, keeping the buffer
        and everything in it; an invalid one is logged and the running config stays."""
        if self.config.metrics.port:
            self._health_server = HealthServer(
                self.config.metrics.host,
                self.config.metrics.port,
                self.metrics.registry,
                self.health,
            )
            self._health_server.start()
        stats = self.buffer.stats()
        log_event(
            log,
            logging.INFO,
            "edge starting",
            edge_id=self.config.edge_id,
            buffered=stats.depth,
            next_seq=stats.next_seq,
            output=self.config.output.kind,
        )
        if self.threshold_sync is not None:
            # Before the first reading: a restart without network judges by the last table.
            await asyncio.to_thread(self.threshold_sync.load_saved)
            self.threshold_sync.start()
        if self.model_sync is not None:
            await asyncio.to_thread(self.model_sync.load_installed)
            self.model_sync.start()
            if self.rul_sync is not None:
                await asyncio.to_thread(self.rul_sync.load_installed)
                self.rul_sync.start()
            self._model_sync_started = True
        self.forwarder.start()
        self._writer_task = asyncio.create_task(self._writer(self._writer_stop))
        inputs_stop, tasks = self._start_inputs()
        supervisor_stop = asyncio.Event()
        supervisor = asyncio.create_task(self._supervise(supervisor_stop))
        watchdog = asyncio.create_task(self._watchdog(stop))
        reload = reload or asyncio.Event()
        notify("READY=1")
        try:
            while True:
                stopper = asyncio.create_task(stop.wait())
                reloader = asyncio.create_task(reload.wait())
                await asyncio.wait({stopper, reloader}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                reloader.cancel()
                if stop.is_set():
                    break
                reload.clear()
                if load_config is None:
                    continue
                notify("RELOADING=1")
                try:
                    new = load_config()
                except ConfigError as exc:
                    log_event(
                        log,
                        logging.ERROR,
                        "reload refused; the running config stays",
                        error=str(exc),
                    )
                    notify("READY=1")
                    continue
                running = await self._apply_reload(new, inputs_stop, tasks)
                if running is not None:
                    inputs_stop, tasks = running
                    log_event(
                        log,
                        logging.INFO,
                        "config reloaded",
                        inputs=len(new.inputs.all()),
                        output=new.output.kind,
                    )
                notify("READY=1")
        finally:
            notify("STOPPING=1")
            log_event(log, logging.INFO, "edge stopping")
            inputs_stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            supervisor_stop.set()
            await asyncio.gather(supervisor, return_exceptions=True)
            self._stopping = True
            self._writer_stop.set()
            writer = self._writer_task
            if writer is not None:
                # Commits whatever the inputs produced up to now.
                await asyncio.gather(writer, return_exceptions=True)
            watchdog.cancel()
            if self.model_sync is not None:
                await asyncio.to_thread(self.model_sync.stop)
            if self.rul_sync is not None:
                await asyncio.to_thread(self.rul_sync.stop)
            if self.threshold_sync is not None:
                await asyncio.to_thread(self.threshold_sync.stop)
            await asyncio.to_thread(self.forwarder.stop, self.config.forwarding.shutdown_flush_s)
            self._output.close()
            if self._health_server is not None:
                self._health_server.stop()
            left: int | None
            try:
                left = self.buffer.stats().depth
            except Exception:
                left = None
            self.buffer.close()
            log_event(log, logging.INFO, "edge stopped", left_buffered=left)


def _run_ack(ack: Callable[[], None]) -> None:
    try:
        ack()
    except Exception:
        # A broker connection that went away: the message comes back and is recognised.
        log.warning("acknowledging a message failed", exc_info=True)


def _run_acks(acks: list[Callable[[], None]]) -> None:
    for ack in acks:
        _run_ack(ack)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _payload_for_inspection(reading: Reading) -> bytes:
    """The reading as the technician should see it in ``rejected``: its wire form when it
    encodes, else the same fields with whatever would not encode written as text."""
    try:
        return encode_reading(reading)
    except Exception:
        pass
    try:
        doc = {
            "machine_id": reading.machine_id,
            "edge_id": reading.edge_id,
            "ts": repr(reading.ts),
            "values": reading.values,
            "quality": reading.quality,
            "custom": reading.custom,
            "detection": reading.detection,
        }
        return orjson.dumps(doc, default=repr)
    except Exception:
        return repr(reading).encode("utf-8", "replace")


def run_daemon(config: EdgeConfig, config_path: Path | None = None) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        reload = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload.set)
        daemon = EdgeDaemon(config)
        loader = (lambda: load_edge_config(config_path)) if config_path is not None else None
        await daemon.run(stop, reload, loader)

    asyncio.run(main())
