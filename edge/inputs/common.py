"""What every input shares: the sanity checks applied to what a device says, and the
hand-over of an acknowledgeable message to the daemon's writer.

Devices are trusted for their measurements, not for their clocks or their number formats: a
Modbus clock register reading garbage, an MQTT publisher with a dead RTC battery or an OPC-UA
server a century ahead would otherwise stamp readings with times that no storage can file
(the cloud refuses them). A device time outside the acceptance window is therefore replaced
by the edge's receive time and counted; a value that is not a finite number within
``MAX_ABS_VALUE`` becomes ``None`` with quality ``bad`` for that sensor only, so one broken
register never costs the other sensors of the reading.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from edge.metrics import EdgeMetrics
from shared.logs import log_event
from shared.message import DEFAULT_WINDOW, MAX_ABS_VALUE, TimeWindow

log = logging.getLogger(__name__)

# A broken clock or register repeats on every sample: one log line per source and kind per
# minute says what is happening without flooding the journal; the metrics count every one.
_LOG_EVERY_S = 60.0


def plausible(value: Any) -> float | None:
    """``value`` as a float when it is a finite number within ``MAX_ABS_VALUE``, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int) and not -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE:
        return None  # float() of a huge integer raises OverflowError
    number = float(value)
    if not math.isfinite(number) or abs(number) > MAX_ABS_VALUE:
        return None
    return number


class DeviceSanity:
    """Time and value checks of one source, with their counters and rate-limited logs."""

    def __init__(
        self, source: str, metrics: EdgeMetrics, window: TimeWindow | None = DEFAULT_WINDOW
    ) -> None:
        self.source = source
        self.metrics = metrics
        self.window = window or DEFAULT_WINDOW
        self.clock_replaced = 0
        self.values_refused = 0
        self._last_log: dict[str, float] = {}
        self._lock = threading.Lock()  # MQTT calls in from paho's network thread

    def _should_log(self, kind: str) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last_log.get(kind)
            if last is not None and now - last < _LOG_EVERY_S:
                return False
            self._last_log[kind] = now
            return True

    def timestamp(self, device_ts: datetime | None, machine: str) -> datetime:
        """The device's time if it is inside the window, else the edge's receive time."""
        now = datetime.now(UTC)
        if device_ts is None:
            return now
        try:
            if device_ts.tzinfo is None:
                device_ts = device_ts.replace(tzinfo=UTC)
            ts = device_ts.astimezone(UTC)
            problem = self.window.problem(ts, now)
        except (OverflowError, ValueError) as exc:
            # 0001-01-01T00:00:00+01:00: a valid ISO string whose UTC time is before year 1.
            problem = f"timestamp out of range: {exc}"
        if problem is None:
            return ts
        self.clock_replaced += 1
        self.metrics.clock_replaced.labels(self.source).inc()
        if self._should_log("clock"):
            log_event(
                log,
                logging.WARNING,
                "device clock outside the acceptance window; using the edge's receive time",
                source=self.source,
                machine=machine,
                device_time=_show(device_ts),
                problem=problem,
                replaced_total=self.clock_replaced,
            )
        return now

    def value(self, raw: Any, machine: str, sensor: str) -> float | None:
        """A decoded value, or None (the caller marks the sensor ``bad``) when it is not a
        plausible measurement. ``raw`` None (nothing read) is not counted."""
        if raw is None:
            return None
        number = plausible(raw)
        if number is not None:
            return number
        self.values_refused += 1
        self.metrics.values_refused.labels(self.source).inc()
        if self._should_log("value"):
            log_event(
                log,
                logging.WARNING,
                "implausible value marked bad",
                source=self.source,
                machine=machine,
                sensor=sensor,
                value=repr(raw)[:64],
                limit=MAX_ABS_VALUE,
                refused_total=self.values_refused,
            )
        return None


def _show(ts: datetime) -> str:
    try:
        return ts.isoformat()
    except (OverflowError, ValueError):
        return repr(ts)


class DeliveryHandle:
    """The acknowledgement of one broker message, handed to the daemon with its reading.

    Calling it acknowledges the message (the daemon does that once the reading is committed,
    or set aside for good). ``message_key`` is a digest of the message, committed with the
    reading so that a redelivery after a crash (``redelivered``: the broker's DUP flag) is
    recognised. ``refuse()`` tells the input the daemon could not take the message (its queue
    is full): it stays unacknowledged and the broker delivers it again later."""

    __slots__ = ("_ack", "_done", "_refuse", "message_key", "redelivered")

    def __init__(
        self,
        ack: Callable[[], None],
        refuse: Callable[[], None],
        message_key: bytes | None,
        redelivered: bool,
    ) -> None:
        self._ack = ack
        self._refuse = refuse
        self.message_key = message_key
        self.redelivered = redelivered
        self._done = False

    def __call__(self) -> None:
        if not self._done:
            self._done = True
            self._ack()

    def refuse(self) -> None:
        if not self._done:
            self._done = True
            self._refuse()
