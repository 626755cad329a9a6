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

from edge.buffer import BufferedReading, StoreAndForwardBuffer
from edge.config import ForwardingConfig
from edge.metrics import EdgeMetrics
from edge.outputs.base import Output, SendResult
from shared.failpoints import failpoint
from shared.logs import log_event

log = logging.getLogger(__name__)


class Forwarder:
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
        self._thread = threading.Thread(target=self._run, name="forwarder", daemon=True)
        self.healthy = False
        self.last_error: str | None = None
        self._live_from: int | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, flush_s: float) -> None:
        """Keep forwarding for up to ``flush_s`` so a clean shutdown leaves little behind;
        whatever is left stays buffered for the next start."""
        self._drain_deadline = time.monotonic() + flush_s
        self._stop.set()
        self._thread.join(timeout=flush_s + self.output_timeout() + 5)

    def output_timeout(self) -> float:
        return 35.0

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

    def _run(self) -> None:
        failures = 0
        while not self._stopping():
            batch = self._next_batch()
            if not batch:
                if self._stop.is_set():
                    break
                self.buffer.wait_for_data(0.25)
                continue
            started = time.perf_counter()
            try:
                result = self.output.send(batch, backlog=self.buffer.depth)
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
                failures = 0
                self.metrics.output_up.labels(self.output.name).set(1)
                continue
            failures += 1
            self.metrics.forward_errors.labels(self.output.name).inc()
            self.metrics.output_up.labels(self.output.name).set(0)
            if self.healthy or failures == 1:
                log_event(
                    log,
                    logging.WARNING,
                    "output failing; readings stay buffered",
                    output=self.output.name,
                    error=result.error,
                )
            self.healthy = False
            self.last_error = result.error
            delay = min(
                self.settings.retry_max_s,
                self.settings.retry_initial_s * 2 ** min(failures - 1, 16),
            )
            delay *= random.uniform(0.5, 1.0)
            if self._stop.wait(delay) and self._stopping():
                break
        self._update_gauges()

    def _update_gauges(self) -> None:
        stats = self.buffer.stats()
        self.metrics.buffer_depth.set(stats.depth)
        self.metrics.buffer_bytes.set(stats.bytes)
        self.metrics.buffer_dropped.set(stats.dropped_total)
