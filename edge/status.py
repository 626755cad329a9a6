"""The status report the edge sends to the cloud with its batches (``shared.edge_status``):
what ``/healthz`` shows on the rig, cut down to what the fleet page needs — version, backlog,
drops, per-input health, the models and thresholds in service, the machines served.

The forwarder asks ``take`` before every send; a report is due every ``interval_s`` seconds
(and at the first send after a start, so a restarted edge shows up at once). A report that is
lost with a failed send is simply replaced by the next one: it is a snapshot, not a record.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from shared.edge_status import (
    MAX_DEVICES,
    MAX_INPUTS,
    MAX_MACHINES,
    MAX_STATUS_BYTES,
    NAME_RE,
    STATUS_VERSION,
)
from shared.edge_status import encode as encode_status
from shared.logs import log_event
from shared.version import version as rig_version

log = logging.getLogger(__name__)


def _names(values: Iterable[Any], limit: int) -> list[str]:
    """Names the cloud accepts (ASCII, bounded); anything else is left out of the report
    rather than costing the whole report."""
    return sorted(v for v in values if isinstance(v, str) and NAME_RE.fullmatch(v))[:limit]


def _versions(doc: Any) -> dict[str, str]:
    if not isinstance(doc, dict):
        return {}
    keep = _names(doc, MAX_MACHINES)
    return {m: str(doc[m]) for m in keep if NAME_RE.fullmatch(str(doc[m]))}


def build_status(
    health: dict[str, Any], thresholds: dict[str, str], machines: Iterable[str]
) -> dict[str, Any]:
    """The report from a ``/healthz`` document (``EdgeDaemon.health``), the thresholds version
    per machine and the machines served."""
    buffer = health.get("buffer", {})
    writer = health.get("writer", {})
    inputs: dict[str, dict[str, Any]] = {}
    for name in _names(health.get("inputs", {}), MAX_INPUTS):
        entry = health["inputs"][name]
        devices = entry.get("devices") or {}
        inputs[name] = {
            "healthy": bool(entry.get("healthy")),
            "last_reading_age_s": entry.get("last_reading_age_s"),
            "down": _names((d for d, ok in devices.items() if not ok), MAX_DEVICES),
        }
    return {
        "v": STATUS_VERSION,
        "edge_id": health.get("edge_id"),
        "at": datetime.now(UTC).isoformat(),
        "version": rig_version(),
        "status": health.get("status", "unhealthy"),
        "uptime_s": float(health.get("uptime_s", 0.0)),
        "backlog": int(buffer.get("depth", 0) or 0),
        # Readings lost on this rig since it started: full-buffer evictions and readings the
        # writer refused because its queue was full.
        "dropped": int(buffer.get("dropped_total", 0) or 0)
        + int(writer.get("dropped_total", 0) or 0),
        "inputs": inputs,
        "machines": _names(set(machines), MAX_MACHINES),
        "models": _versions(health.get("models")),
        "thresholds": _versions(thresholds),
    }


class StatusReporter:
    """Builds the report when it is due; ``take`` is called from the forwarder thread."""

    def __init__(
        self,
        interval_s: float,
        health: Callable[[], dict[str, Any]],
        thresholds: Callable[[], dict[str, str]],
        machines: Callable[[], Iterable[str]],
    ) -> None:
        self.interval_s = interval_s
        self._health = health
        self._thresholds = thresholds
        self._machines = machines
        self._last: float | None = None
        self._lock = threading.Lock()
        self.sent_total = 0

    def take(self) -> bytes | None:
        """The encoded report if one is due now, else None."""
        now = time.monotonic()
        with self._lock:
            if self._last is not None and now - self._last < self.interval_s:
                return None
            self._last = now
        try:
            doc = build_status(self._health(), self._thresholds(), self._machines())
        except Exception as exc:  # the report must never cost a batch
            log_event(log, logging.WARNING, "edge status not built", error=str(exc)[:300])
            return None
        raw = encode_status(doc)
        if len(raw) > MAX_STATUS_BYTES:
            # A rig serving very many machines: the per-machine versions are what grows.
            doc.update(models={}, thresholds={}, machines=doc["machines"][:32])
            raw = encode_status(doc)
        self.sent_total += 1
        return raw
