"""Logging for every service: JSON lines for machines, plain text for a person at a terminal.

Services call ``configure_logging`` once at start and log with the standard ``logging``
module, passing structured fields through ``extra={"fields": {...}}`` or the ``log_event``
helper.

- ``json`` (one JSON object per line on stderr: ``ts``, ``level``, ``service``, ``logger``,
  ``event`` and the fields) is what Loki, Vector, Fluent Bit and ``kubectl logs | jq`` read.
- ``text`` (``HH:MM:SS.mmm LEVEL logger: event key=value ...``) is for a technician running
  ``rig-edge run`` in a terminal.
- ``auto`` (the default; ``--log-format`` or ``RIG_LOG_FORMAT`` override it): text when stderr
  is a terminal, JSON otherwise.

Under systemd (stderr connected to the journal: ``JOURNAL_STREAM`` names its device and
inode) every line starts with the syslog priority in angle brackets (``<3>`` error,
``<4>`` warning, ``<6>`` info, ``<7>`` debug): journald strips it and stores the line at that
priority, so ``journalctl -u rig-edge -p warning`` shows the warnings. journald keeps the
JSON as the message text; it does not index its fields.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, TextIO

LOG_FORMATS = ("auto", "text", "json")
LOG_FORMAT_ENV = "RIG_LOG_FORMAT"

_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "fields",
    "color_message",  # uvicorn's ANSI-coloured duplicate of the message
}

# syslog(3) priorities journald reads from a "<N>" line prefix (sd-daemon(3)).
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    fields = getattr(record, "fields", None)
    if isinstance(fields, dict):
        doc.update(fields)
    for key, value in record.__dict__.items():
        if key not in _STANDARD_ATTRS and not key.startswith("_"):
            doc[key] = value
    return doc


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "event": record.getMessage(),
        }
        doc.update(_fields(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``14:03:07.412 WARNING edge.forwarding: output down reason="timed out" output=http``"""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        parts = [f"{stamp}.{int(record.msecs):03d} {record.levelname:<7} {record.name}:"]
        parts.append(record.getMessage())
        for key, value in _fields(record).items():
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            if isinstance(value, str) and (not value or any(c in value for c in ' "=')):
                text = json.dumps(value)
            parts.append(f"{key}={text}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JournaldPriorityFormatter(logging.Formatter):
    """Prefixes each line of another formatter's output with ``<N>`` (a traceback's lines
    too: journald reads the prefix per line)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        level = max((lv for lv in _PRIORITY if lv <= record.levelno), default=logging.DEBUG)
        prefix = f"<{_PRIORITY[level]}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


def stream_is_journal(stream: TextIO) -> bool:
    """True when ``stream`` is the journal stream systemd connected (JOURNAL_STREAM is
    ``device:inode`` of it; a redirected stream of a child process is not)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    if ":" not in value:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    device, _, inode = value.partition(":")
    return f"{st.st_dev}:{st.st_ino}" == f"{device}:{inode}"


def resolve_format(log_format: str | None, stream: TextIO) -> str:
    """``text`` or ``json`` from the flag, else RIG_LOG_FORMAT, else the terminal test."""
    chosen = (log_format or os.environ.get(LOG_FORMAT_ENV) or "auto").lower()
    if chosen not in LOG_FORMATS:
        raise ValueError(
            f"log format must be one of {', '.join(LOG_FORMATS)} (got {chosen!r} from "
            f"{'--log-format' if log_format else LOG_FORMAT_ENV})"
        )
    if chosen == "auto":
        try:
            return "text" if stream.isatty() else "json"
        except (ValueError, AttributeError):
            return "json"
    return chosen


def configure_logging(
    service: str,
    level: str = "INFO",
    *,
    log_format: str | None = None,
    json_output: bool | None = None,
) -> None:
    """``log_format``: ``auto``/``text``/``json`` (None: RIG_LOG_FORMAT or auto);
    ``json_output`` is the older spelling (True: json, False: text)."""
    stream = sys.stderr
    if json_output is not None and log_format is None:
        log_format = "json" if json_output else "text"
    fmt = resolve_format(log_format, stream)
    formatter: logging.Formatter = JsonFormatter(service) if fmt == "json" else TextFormatter()
    if stream_is_journal(stream):
        formatter = JournaldPriorityFormatter(formatter)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter at INFO drowns the service's own events (the API's access log is our
    # own, logger rig-cloud.access: uvicorn's is off).
    for noisy in ("pymodbus", "asyncua", "httpx", "uvicorn.access", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def add_log_format_argument(parser: Any) -> None:
    """``--log-format auto|text|json`` on an argparse parser (the three CLIs share it)."""
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=None,
        help=f"log lines as text or JSON (default: ${LOG_FORMAT_ENV}, else text on a "
        "terminal and JSON otherwise)",
    )


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    logger.log(level, event, extra={"fields": fields})
