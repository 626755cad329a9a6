"""Loggers for librdkafka (the Kafka client library under confluent-kafka), which repeats
itself: while a broker is down it reports every reconnect attempt, several a second per
connection. One line per distinct message per ``window_s`` is kept, and the next one that
gets through says how many were held back, so an outage is visible without burying
everything else in the journal."""

from __future__ import annotations

import logging
import re
import threading
import time

# Timings and counters that differ between otherwise identical lines.
_VARYING = re.compile(r"\(after \d+ms in state [A-Z_]+\)|\d+ms")
_MAX_KEYS = 512


class RepeatFilter(logging.Filter):
    """Passes the first of each distinct message per ``window_s``; counts the rest."""

    def __init__(self, window_s: float = 60.0) -> None:
        super().__init__()
        self.window_s = window_s
        self._seen: dict[tuple[int, str], list[float]] = {}  # key -> [first at, held back]
        self._lock = threading.Lock()  # librdkafka logs from its own threads

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        key = (record.levelno, _VARYING.sub("…", text))
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.window_s:
                seen[1] += 1
                return False
            held_back = int(seen[1]) if seen is not None else 0
            if len(self._seen) >= _MAX_KEYS:
                # Forget the oldest half; a forgotten message is merely logged again.
                for old in sorted(self._seen, key=lambda k: self._seen[k][0])[: _MAX_KEYS // 2]:
                    del self._seen[old]
            self._seen[key] = [now, 0]
        if held_back:
            record.msg = f"{text} (and {held_back} more like it in the last {self.window_s:.0f} s)"
            record.args = ()
        return True


def kafka_client_logger(owner: str, window_s: float = 60.0) -> logging.Logger:
    """The logger to hand a confluent-kafka client (``logger=``): ``<owner>.librdkafka``,
    with repeats held back."""
    logger = logging.getLogger(f"{owner}.librdkafka")
    if not any(isinstance(f, RepeatFilter) for f in logger.filters):
        logger.addFilter(RepeatFilter(window_s))
    return logger
