"""The forwarding loop: oldest buffered readings out, confirmed ones deleted.

Runs in its own thread because the Kafka and HTTP clients block. Failures back off
exponentially with jitter (a circuit breaker in effect: while the destination is down the
loop probes it at most once per back-off period instead of hammering it).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from edge.buffer import BufferedReading, StoreAndForwardBuffer
from edge.config import ForwardingConfig
from edge.metrics import EdgeMetrics
from edge.outputs.base import Output, SendResult
from shared.failpoints import failpoint
from shared.logs import log_event

log = logging.getLogger(__name__)


class Forwarder:
    """Survives anything a round can raise: output errors are the destination's problem
    (``healthy``/``last_error``), buffer errors (``peek``/``ack``/``reject`` on a failing
    disk) are the edge's (``buffer_error``); both back off and retry. ``alive``, ``died``,
    ``last_round_at`` and ``stuck_for`` let the daemon tell a destination that is down (the
    loop keeps probing: degraded) from a loop that is dead or hung (unhealthy)."""

    def __init__(
        self,
        buffer: StoreAndForwardBuffer,
        output: Output,
        batch_size: int,
        settings: ForwardingConfig,
        metrics: EdgeMetrics,
    ) -> None:
        self.buffer = buffer
        self.output = output
        self.batch_size = batch_size
        self.settings = settings
        self.metrics = metrics
        self._stop = threading.Event()
        self._drain_deadline: float | None = None
        self._thread = threading.Thread(target=self._main, name="forwarder", daemon=True)
        self._started = False
        self.healthy = False
        self.last_error: str | None = None
        self._live_from: int | None = None
        # Unix time the loop last finished a round (sent a batch, found nothing to send, or
        # gave up on a failure before backing off).
        self.last_round_at: float | None = None
        # Monotonic time the current round started working (None while idle or backing
        # off): a round that works for longer than the output can take is hung.
        self._busy_since: float | None = None
        self.buffer_error: str | None = None
        self.buffer_failing_since: float | None = None
        self.died: str | None = None
        # The edge's status report, when one is due (edge.status.StatusReporter.take).
        self.status_source: Callable[[], bytes | None] | None = None

    def start(self) -> None:
        self._started = True
        self._thread.start()

    def stop(self, flush_s: float) -> None:
        """Keep forwarding for up to ``flush_s`` so a clean shutdown leaves little behind;
        whatever is left stays buffered for the next start."""
        self._drain_deadline = time.monotonic() + flush_s
        self._stop.set()
        if self._started:
            self._thread.join(timeout=flush_s + self.output_timeout() + 5)

    def output_timeout(self) -> float:
        """The longest one ``output.send`` may take (the output's own bound)."""
        return float(getattr(self.output, "max_send_s", 35.0))

    @property
    def alive(self) -> bool:
        """False once the thread has ended without being asked to (True before start)."""
        if not self._started:
            return True
        return self._thread.is_alive() or self._stop.is_set()

    def stuck_for(self) -> float:
        """Seconds the current round has been working beyond the output's timeout (0 when
        it is not)."""
        busy = self._busy_since
        if busy is None:
            return 0.0
        return max(0.0, time.monotonic() - busy - self.output_timeout())

    def _stopping(self) -> bool:
        if not self._stop.is_set():
            return False
        return self._drain_deadline is None or time.monotonic() >= self._drain_deadline

    def _next_batch(self) -> list[BufferedReading]:
        """Oldest first; but after an outage, live readings go out beside the backlog.

        When the backlog exceeds two batches, everything committed from then on is "live":
        each round sends half a batch of the oldest live readings and fills the rest from the
        backlog, both lanes in sequence order, until the backlog is gone. Operators see
        current values at once instead of after the whole outage has been replayed; the
        cloud stores by timestamp and drops repeats by key, so nothing depends on the
        interleaving.
        """
        if self._live_from is None:
            stats = self.buffer.stats()
            if stats.depth > 2 * self.batch_size:
                self._live_from = stats.next_seq
                log_event(
                    log, logging.INFO, "draining backlog beside live data", backlog=stats.depth
                )
            else:
                return self.buffer.peek(self.batch_size)
        live = self.buffer.peek(self.batch_size // 2, after_seq=self._live_from - 1)
        backlog = self.buffer.peek(self.batch_size - len(live), before_seq=self._live_from)
        if not backlog:
            self._live_from = None
            log_event(log, logging.INFO, "backlog drained")
        return backlog + live

    def _main(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            # Only something no round can handle gets here (the loop catches Exception):
            # say so; the daemon reports it and starts a new forwarder.
            # Logged here, not re-raised: the thread ends either way, and the daemon's
            # supervisor (reading ``died``) reports it and starts a new forwarder.
            self.died = f"{type(exc).__name__}: {exc}"
            log.critical("forwarder thread died", exc_info=True)
        finally:
            self._busy_since = None

    def _run(self) -> None:
        output_failures = 0
        buffer_failures = 0
        while not self._stopping():
            self._busy_since = time.monotonic()
            try:
                outcome = self._round()
            except Exception as exc:
                # The buffer failed us (disk, I/O): nothing was lost, the rows are still
                # there; back off like for a destination failure and try again.
                buffer_failures += 1
                self._buffer_failed(exc, buffer_failures)
                self._round_done()
                if self._back_off(buffer_failures):
                    break
                continue
            if buffer_failures:
                log_event(log, logging.INFO, "buffer readable again", after=buffer_failures)
                buffer_failures = 0
                self.buffer_error = None
                self.buffer_failing_since = None
            self._round_done()
            if outcome is None:  # nothing to send
                if self._stop.is_set():
                    break
                self._busy_since = None
                try:
                    self.buffer.wait_for_data(0.25)
                except Exception:
                    log.warning("waiting for buffered data failed", exc_info=True)
                    self._stop.wait(0.25)
                continue
            if outcome:
                output_failures = 0
                continue
            output_failures += 1
            if self._back_off(output_failures):
                break
        self._busy_since = None
        try:
            self._update_gauges()
        except Exception:
            log.warning("could not read buffer figures at forwarder stop", exc_info=True)

    def _round(self) -> bool | None:
        """One batch: None when there was nothing to send, else whether the output worked."""
        batch = self._next_batch()
        if not batch:
            self._status_alone()
            return None
        started = time.perf_counter()
        try:
            status = self.status_source() if self.status_source is not None else None
            result = self.output.send(batch, backlog=self.buffer.depth, status=status)
        except Exception as exc:  # a client bug must not kill forwarding for good
            log.exception("output raised")
            result = SendResult(error=f"{type(exc).__name__}: {exc}")
        if result.confirmed:
            failpoint("edge.forwarder.after_send")
            self.buffer.ack(result.confirmed)
            self.metrics.readings_out.labels(self.output.name).inc(len(result.confirmed))
            self.metrics.forward_latency.labels(self.output.name).observe(
                time.perf_counter() - started
            )
        if result.rejected:
            self.buffer.reject(result.rejected)
            log_event(
                log,
                logging.ERROR,
                "readings rejected by destination",
                count=len(result.rejected),
                first_reason=next(iter(result.rejected.values())),
            )
        self._update_gauges()
        if result.error is None:
            if not self.healthy:
                log_event(log, logging.INFO, "output healthy", output=self.output.name)
            self.healthy = True
            self.last_error = None
            self.metrics.output_up.labels(self.output.name).set(1)
            return True
        self.metrics.forward_errors.labels(self.output.name).inc()
        self.metrics.output_up.labels(self.output.name).set(0)
        if self.healthy or self.last_error is None:
            log_event(
                log,
                logging.WARNING,
                "output failing; readings stay buffered",
                output=self.output.name,
                error=result.error,
            )
        self.healthy = False
        self.last_error = result.error
        return False

    def _status_alone(self) -> None:
        """Nothing to send: a status report that is due goes alone, so a rig whose inputs
        are all down still tells the cloud so (instead of just falling silent)."""
        status = self.status_source() if self.status_source is not None else None
        if status is None:
            return
        try:
            error = self.output.send_status(status)
        except Exception as exc:  # a client bug must not kill forwarding for good
            error = f"{type(exc).__name__}: {exc}"
        if error is not None:
            log_event(log, logging.INFO, "status report not delivered", error=error[:300])

    def _round_done(self) -> None:
        self.last_round_at = time.time()
        self.metrics.forwarder_last_round.set(self.last_round_at)

    def _buffer_failed(self, exc: Exception, failures: int) -> None:
        self.metrics.forwarder_errors.inc()
        self.buffer_error = f"{type(exc).__name__}: {exc}"
        if self.buffer_failing_since is None:
            self.buffer_failing_since = time.monotonic()
        if failures == 1 or failures % 20 == 0:
            log_event(
                log,
                logging.ERROR,
                "forwarding round failed in the buffer; retrying",
                error=self.buffer_error,
                failures=failures,
            )

    def _back_off(self, failures: int) -> bool:
        """Wait before the next attempt; True when the loop should end (stopping)."""
        self._busy_since = None
        delay = min(
            self.settings.retry_max_s,
            self.settings.retry_initial_s * 2 ** min(failures - 1, 16),
        )
        delay *= random.uniform(0.5, 1.0)
        return self._stop.wait(delay) and self._stopping()

    def _update_gauges(self) -> None:
        stats = self.buffer.stats()
        self.metrics.buffer_depth.set(stats.depth)
        self.metrics.buffer_bytes.set(stats.bytes)
        self.metrics.buffer_dropped.set(stats.dropped_total)
