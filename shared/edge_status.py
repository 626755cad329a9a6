"""The edge's status report: a small JSON document the edge attaches to a batch it sends every
``status_interval_s`` seconds (Kafka header ``edge_status``, HTTP header ``X-Edge-Status``), so
the cloud knows each rig's health without reaching into it (issue 13 item 6). With nothing to
send (every input down, or a quiet rig) the report travels alone: a Kafka message with an empty
value and that header, or ``POST /api/v1/edges/status``; it names its edge (``edge_id``).

Both sides use this module: the edge builds the document (``edge.status``), the cloud checks it
with ``parse_status`` before storing it (``cloud.edge_fleet``). The check is strict and bounded:
the document arrives from a network peer, and the fleet page shows its strings.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.message import EDGE_ID_RE

STATUS_VERSION = 1
KAFKA_HEADER = "edge_status"
HTTP_HEADER = "X-Edge-Status"
STATUS_PATH = "/api/v1/edges/status"
# A header travels with every message it is attached to: a few kilobytes at most.
MAX_STATUS_BYTES = 8 * 1024
MAX_INPUTS = 32
MAX_MACHINES = 128
MAX_DEVICES = 32
STATUSES = ("ok", "degraded", "unhealthy")
# Input, device and machine names, model and thresholds versions: plain ASCII (HTTP headers
# carry Latin-1 only, and the page shows them as text).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,63}")
_KEYS = frozenset(
    {
        "v",
        "edge_id",
        "at",
        "version",
        "status",
        "uptime_s",
        "backlog",
        "dropped",
        "inputs",
        "machines",
        "models",
        "thresholds",
    }
)
_INPUT_KEYS = frozenset({"healthy", "last_reading_age_s", "down"})


class StatusError(ValueError):
    """The status document is not one an edge writes; ``field`` names the offending part."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def encode(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc)


def _name(field: str, value: Any) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise StatusError(field, "1-64 characters of letters, digits, '_.:@/+-'")
    return value


def _count(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**62:
        raise StatusError(field, "expected a non-negative integer")
    return value


def _seconds(field: str, value: Any, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1e10:
        raise StatusError(field, "expected seconds (a non-negative number)")
    return float(value)


def _versions(field: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > MAX_MACHINES:
        raise StatusError(field, f"expected an object of at most {MAX_MACHINES} machines")
    return {_name(f"{field}.{str(m)[:64]}", m): _name(f"{field}.{m}", v) for m, v in value.items()}


def parse_status(raw: bytes | str) -> dict[str, Any]:
    """The checked status document (raises ``StatusError`` naming the offending field)."""
    if len(raw) > MAX_STATUS_BYTES:
        raise StatusError("edge_status", f"{len(raw)} bytes; at most {MAX_STATUS_BYTES}")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise StatusError("edge_status", "not JSON") from None
    if not isinstance(doc, dict):
        raise StatusError("edge_status", "expected an object")
    unknown = doc.keys() - _KEYS
    if unknown:
        raise StatusError(f"edge_status.{str(sorted(unknown)[0])[:64]}", "not a status field")
    if doc.get("v") != STATUS_VERSION:
        raise StatusError("edge_status.v", f"expected {STATUS_VERSION}")
    try:
        at = datetime.fromisoformat(str(doc.get("at")))
    except ValueError:
        raise StatusError("edge_status.at", "expected an ISO 8601 time") from None
    if at.tzinfo is None:
        raise StatusError("edge_status.at", "expected a time with its UTC offset")
    if doc.get("status") not in STATUSES:
        raise StatusError("edge_status.status", f"one of {', '.join(STATUSES)}")
    inputs = doc.get("inputs", {})
    if not isinstance(inputs, dict) or len(inputs) > MAX_INPUTS:
        raise StatusError("edge_status.inputs", f"expected at most {MAX_INPUTS} inputs")
    checked_inputs: dict[str, dict[str, Any]] = {}
    for name, entry in inputs.items():
        path = f"edge_status.inputs.{_name('edge_status.inputs', name)}"
        if not isinstance(entry, dict) or entry.keys() - _INPUT_KEYS:
            raise StatusError(path, "expected {healthy, last_reading_age_s, down}")
        if not isinstance(entry.get("healthy"), bool):
            raise StatusError(f"{path}.healthy", "expected true or false")
        down = entry.get("down", [])
        if not isinstance(down, list) or len(down) > MAX_DEVICES:
            raise StatusError(f"{path}.down", f"expected at most {MAX_DEVICES} devices")
        checked_inputs[name] = {
            "healthy": entry["healthy"],
            "last_reading_age_s": _seconds(
                f"{path}.last_reading_age_s", entry.get("last_reading_age_s"), optional=True
            ),
            "down": [_name(f"{path}.down", d) for d in down],
        }
    edge_id = doc.get("edge_id")
    if edge_id is not None and (not isinstance(edge_id, str) or not EDGE_ID_RE.fullmatch(edge_id)):
        raise StatusError("edge_status.edge_id", "1-64 characters of letters, digits, '_.:-'")
    machines = doc.get("machines", [])
    if not isinstance(machines, list) or len(machines) > MAX_MACHINES:
        raise StatusError("edge_status.machines", f"expected at most {MAX_MACHINES} machines")
    return {
        "v": STATUS_VERSION,
        "edge_id": edge_id,
        "at": at.astimezone(UTC).isoformat(),
        "version": _name("edge_status.version", doc.get("version")),
        "status": doc["status"],
        "uptime_s": _seconds("edge_status.uptime_s", doc.get("uptime_s")),
        "backlog": _count("edge_status.backlog", doc.get("backlog")),
        "dropped": _count("edge_status.dropped", doc.get("dropped")),
        "inputs": checked_inputs,
        "machines": sorted({_name("edge_status.machines", m) for m in machines}),
        "models": _versions("edge_status.models", doc.get("models", {})),
        "thresholds": _versions("edge_status.thresholds", doc.get("thresholds", {})),
    }
