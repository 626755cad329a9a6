"""The reading message and its codec, used by the edge, the cloud and the simulator.

One reading = one sample of one machine taken by one edge. ``(edge_id, seq)`` identifies it
everywhere: the edge assigns ``seq`` from a per-edge monotonic counter when the reading is
committed to its buffer, and the cloud stores each key exactly once however often it is
delivered.

Wire format (JSON, UTF-8, schema version 1)::

    {"v": 1, "machine_id": "A", "edge_id": "rig-07", "seq": 1731234567000001,
     "ts": "2026-11-22T15:41:22.123456Z",
     "values": {"temperature": 72.5, "rpm": null, ...},
     "quality": {"rpm": "bad"},
     "custom": {"hydraulic_pressure": 2500.0},
     "detection": {...}}

``values`` holds core sensors only (names from the catalog); ``custom`` anything else. A value
that could not be read is ``null`` with its quality set; ``quality`` lists only the sensors
whose quality is not ``good``. Non-finite numbers never travel: JSON has no NaN.

``parse_reading`` also accepts the manifest's integrator shape (sensor fields at top level
plus ``custom_sensors``) so that ``POST /api/v1/ingest`` takes both.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.catalog import SENSOR_INDEX

SCHEMA_VERSION = 1

MACHINE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
EDGE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
CUSTOM_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
QUALITIES = frozenset({"good", "bad", "uncertain"})
MAX_SEQ = 2**63 - 1
# Anything larger in magnitude is a unit or decoding error, not a measurement; it would
# also overflow the float32 register encodings and poison model scaling.
MAX_ABS_VALUE = 1e12
MAX_CUSTOM_SENSORS = 256

_RESERVED_KEYS = frozenset(
    {
        "v",
        "machine_id",
        "edge_id",
        "seq",
        "ts",
        "timestamp",
        "values",
        "quality",
        "custom",
        "custom_sensors",
        "detection",
    }
)


class MessageError(ValueError):
    """A reading that cannot be accepted. ``field`` is the JSON path of the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(slots=True)
class Reading:
    machine_id: str
    edge_id: str
    seq: int
    ts: datetime
    values: dict[str, float | None]
    custom: dict[str, float] = field(default_factory=dict)
    quality: dict[str, str] = field(default_factory=dict)
    detection: dict[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "machine_id": self.machine_id,
            "edge_id": self.edge_id,
            "seq": self.seq,
            "ts": format_ts(self.ts),
            "values": self.values,
        }
        if self.quality:
            doc["quality"] = self.quality
        if self.custom:
            doc["custom"] = self.custom
        if self.detection is not None:
            doc["detection"] = self.detection
        return doc


def format_ts(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_reading(reading: Reading) -> bytes:
    # orjson: ~5x faster than json on the edge's hot path; it also refuses NaN/Infinity
    # (it writes null), and parse_reading has already refused them on the way in.
    return orjson.dumps(reading.to_wire())


def decode_reading(raw: bytes | str) -> Reading:
    """Decode one wire message; raises ``MessageError`` naming the offending field."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MessageError("$", f"not valid JSON ({exc})") from None
    return parse_reading(doc)


def _number(path: str, value: Any) -> float:
    # bool is an int subclass; a JSON true is not a measurement.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MessageError(path, f"expected a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise MessageError(path, "must be a finite number (NaN and Infinity are not readings)")
    if abs(number) > MAX_ABS_VALUE:
        raise MessageError(path, f"magnitude {number:g} exceeds the limit {MAX_ABS_VALUE:g}")
    return number


def _numbers(path: str, raw: dict[str, Any], *, allow_null: bool) -> dict[str, float | None]:
    """Validate a mapping of sensor values. The fast path is a type check and one chained
    comparison per value (NaN and infinities fail the comparison); the slow path only runs
    to word the error."""
    values = raw.values()
    # All floats (the normal case): one C-level pass each. A finite sum rules out NaN and
    # infinities, after which max/min are reliable.
    if (
        values
        and set(map(type, values)) == {float}
        and math.isfinite(sum(values))
        and max(values) <= MAX_ABS_VALUE
        and min(values) >= -MAX_ABS_VALUE
    ):
        return dict(raw)
    out: dict[str, float | None] = {}
    for name, value in raw.items():
        kind = type(value)
        if kind is float and -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE:
            out[name] = value
        elif kind is int and -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE:
            out[name] = float(value)
        elif value is None and allow_null:
            out[name] = None
        else:
            if value is None:
                raise MessageError(f"{path}.{name}", "expected a number, got null")
            out[name] = _number(f"{path}.{name}", value)
    return out


def _parse_ts(path: str, value: Any) -> datetime:
    if not isinstance(value, str):
        raise MessageError(path, "expected an ISO 8601 timestamp string")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise MessageError(path, f"not an ISO 8601 timestamp: {value!r}") from None
    if ts.tzinfo is None:
        # The prototype sent naive local timestamps and got negative latencies; naive
        # input is taken as UTC, which is what every edge of ours sends.
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


def parse_reading(
    doc: Any,
    *,
    path: str = "$",
    default_edge_id: str | None = None,
    default_seq: int | None = None,
    now: datetime | None = None,
) -> Reading:
    """Validate a decoded JSON document into a ``Reading``.

    The canonical wire shape has ``values``; the integrator shape has sensor names at top level
    and ``custom_sensors``. ``default_edge_id``/``default_seq``/``now`` fill what an integrator
    may leave out; without them those fields are required.
    """
    if not isinstance(doc, dict):
        raise MessageError(path, "expected a JSON object")

    version = doc.get("v", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise MessageError(f"{path}.v", f"unsupported schema version {version!r}")

    machine_id = doc.get("machine_id")
    if not isinstance(machine_id, str) or not MACHINE_ID_RE.match(machine_id):
        raise MessageError(
            f"{path}.machine_id",
            "required; 1-32 characters of letters, digits, '_', '.', '-' starting with a "
            "letter or digit",
        )

    edge_id = doc.get("edge_id", default_edge_id)
    if not isinstance(edge_id, str) or not EDGE_ID_RE.match(edge_id):
        raise MessageError(
            f"{path}.edge_id", "required; 1-64 characters of letters, digits, '_', '.', ':', '-'"
        )

    seq = doc.get("seq", default_seq)
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
        raise MessageError(f"{path}.seq", "required; an integer from 0 to 2^63-1")

    ts_key = "ts" if "ts" in doc else "timestamp"
    if ts_key in doc:
        ts = _parse_ts(f"{path}.{ts_key}", doc[ts_key])
    elif now is not None:
        ts = now
    else:
        raise MessageError(f"{path}.ts", "required")

    values: dict[str, float | None] = {}
    custom: dict[str, float] = {}
    if "values" in doc:
        raw_values = doc["values"]
        if not isinstance(raw_values, dict):
            raise MessageError(f"{path}.values", "expected an object of sensor name to number")
        # Subset test first: no set is built for the normal case of known names only.
        if not raw_values.keys() <= _CORE_NAMES:
            name = sorted(raw_values.keys() - _CORE_NAMES)[0]
            raise MessageError(f"{path}.values.{name}", "not a core sensor; send it in custom")
        values = _numbers(f"{path}.values", raw_values, allow_null=True)
        raw_custom = doc.get("custom", {})
        custom_path = f"{path}.custom"
    else:
        # Integrator shape: every non-reserved top-level key is a sensor. Unknown ones become
        # custom sensors, which is how the platform discovers new hardware.
        for name, value in doc.items():
            if name in _RESERVED_KEYS:
                continue
            if name in SENSOR_INDEX:
                values[name] = None if value is None else _number(f"{path}.{name}", value)
            else:
                _check_custom_name(f"{path}.{name}", name)
                custom[name] = _number(f"{path}.{name}", value)
        raw_custom = doc.get("custom_sensors", doc.get("custom", {}))
        custom_path = f"{path}.custom_sensors" if "custom_sensors" in doc else f"{path}.custom"

    if not isinstance(raw_custom, dict):
        raise MessageError(custom_path, "expected an object of sensor name to number")
    for name in raw_custom:
        if name in SENSOR_INDEX:
            raise MessageError(f"{custom_path}.{name}", "is a core sensor; send it as a value")
        _check_custom_name(f"{custom_path}.{name}", name)
    if raw_custom:
        custom.update(_numbers(custom_path, raw_custom, allow_null=False))  # type: ignore[arg-type]
    if len(custom) > MAX_CUSTOM_SENSORS:
        raise MessageError(custom_path, f"more than {MAX_CUSTOM_SENSORS} custom sensors")

    quality: dict[str, str] = {}
    raw_quality = doc.get("quality", {})
    if not isinstance(raw_quality, dict):
        raise MessageError(f"{path}.quality", "expected an object of sensor name to quality")
    for name, q in raw_quality.items():
        if q not in QUALITIES:
            raise MessageError(f"{path}.quality.{name}", f"expected one of {sorted(QUALITIES)}")
        if name not in values and name not in custom:
            raise MessageError(f"{path}.quality.{name}", "quality for a sensor with no value")
        if q != "good":
            quality[name] = q

    if not values and not custom:
        raise MessageError(path, "a reading needs at least one sensor value")

    detection = doc.get("detection")
    if detection is not None and not isinstance(detection, dict):
        raise MessageError(f"{path}.detection", "expected an object")

    return Reading(machine_id, edge_id, seq, ts, values, custom, quality, detection)


_CORE_NAMES = frozenset(SENSOR_INDEX)


def _check_custom_name(path: str, name: str) -> None:
    if not CUSTOM_NAME_RE.match(name):
        raise MessageError(
            path, "custom sensor names are snake_case: a-z first, then a-z, 0-9, '_' (max 63)"
        )
