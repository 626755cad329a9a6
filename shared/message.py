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

``ts`` (or ``timestamp``) may also be a number: epoch seconds below 10^11, epoch milliseconds
from 10^11 up to 10^14 (Node-RED's ``Date.now()``); either way inside the TimeWindow. Messages
this codec encodes always carry the ISO string.

``parse_reading`` also accepts the integrator shape of ``docs/manifest.md`` §3.2 (sensor fields
at top level plus ``custom_sensors``) so that ``POST /api/v1/ingest`` takes both.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, overload

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
# One encoded reading at most: 50 core values, 256 custom ones and a detection fit in a
# quarter of this. Larger is a misconfigured device (an MQTT payload with thousands of keys),
# and it would exceed Kafka's default message limit or block the edge's forwarding.
MAX_READING_BYTES = 128 * 1024
# The detection travels with the reading and is stored as JSONB: bounded like the rest.
MAX_DETECTION_BYTES = 16 * 1024
MAX_DETECTION_LIST = 64
MAX_FORECAST_STEPS = 64
DETECTION_METHOD_RE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,31}$")
MODEL_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}$")
# ``detection.thresholds_version``: which threshold table judged the reading ("catalog", the
# cloud table's hash, "+pinned" when the edge YAML pins some limits of that machine).
THRESHOLDS_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}$")


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Timestamps a reading may carry, relative to the receiver's clock.

    ``max_age``: how far back a backfill may reach (an edge that was offline for months
    still delivers its buffer). ``max_ahead``: how far a sender's clock may run fast. A
    timestamp outside is a device clock reading garbage or a hostile client, and would
    otherwise create storage partitions for years nobody lived through."""

    max_age: timedelta = timedelta(days=400)
    max_ahead: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        if self.max_age <= timedelta(0) or self.max_ahead < timedelta(0):
            raise ValueError("max_age must be positive and max_ahead not negative")

    def problem(self, ts: datetime, now: datetime | None = None) -> str | None:
        """Why ``ts`` is outside the window (None when it is inside)."""
        now = now or datetime.now(UTC)
        if ts < now - self.max_age:
            return (
                f"timestamp out of range: {format_ts(ts)} is more than "
                f"{_span(self.max_age)} in the past"
            )
        if ts > now + self.max_ahead:
            return (
                f"timestamp out of range: {format_ts(ts)} is more than "
                f"{_span(self.max_ahead)} in the future"
            )
        return None


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 86400 == 0:
        return f"{seconds // 86400} days"
    if seconds % 60 == 0:
        return f"{seconds // 60} minutes"
    return f"{seconds} seconds"


DEFAULT_WINDOW = TimeWindow()

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
    # strftime pads years below 1000 inconsistently across platforms; isoformat does not.
    return ts.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def encode_reading(reading: Reading) -> bytes:
    # orjson: ~5x faster than json on the edge's hot path; it also refuses NaN/Infinity
    # (it writes null), and parse_reading has already refused them on the way in.
    return orjson.dumps(reading.to_wire())


def decode_reading(
    raw: bytes | str, *, window: TimeWindow | None = DEFAULT_WINDOW, now: datetime | None = None
) -> Reading:
    """Decode one wire message; raises ``MessageError`` naming the offending field, and
    nothing else, whatever the bytes are."""
    if len(raw) > MAX_READING_BYTES:
        raise MessageError("$", f"{len(raw)} bytes; a reading is at most {MAX_READING_BYTES}")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MessageError("$", f"not valid JSON ({exc})") from None
    return parse_reading(doc, window=window, now=now)


def check_reading(
    reading: Reading, *, window: TimeWindow | None = DEFAULT_WINDOW, now: datetime | None = None
) -> bytes:
    """Validate a reading built in process (the edge's sources) by the same rules as a
    received one, and return its encoding. Raises ``MessageError`` naming the field.

    Encoding and decoding once costs ~20 us; it is the only way to be sure that what an
    edge forwards is exactly what the cloud accepts (one definition of validity)."""
    try:
        payload = encode_reading(reading)
    except (TypeError, ValueError, OverflowError) as exc:
        raise MessageError("$", f"cannot be encoded: {exc}") from None
    decode_reading(payload, window=window, now=now)
    return payload


def _number(path: str, value: Any) -> float:
    # bool is an int subclass; a JSON true is not a measurement.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MessageError(path, f"expected a number, got {type(value).__name__}")
    if isinstance(value, int) and not -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE:
        # float() of a 400-digit integer raises OverflowError: compare as integers first.
        raise MessageError(path, f"magnitude exceeds the limit {MAX_ABS_VALUE:g}")
    number = float(value)
    if not math.isfinite(number):
        raise MessageError(path, "must be a finite number (NaN and Infinity are not readings)")
    if abs(number) > MAX_ABS_VALUE:
        raise MessageError(path, f"magnitude {number:g} exceeds the limit {MAX_ABS_VALUE:g}")
    return number


@overload
def _numbers(path: str, raw: dict[str, Any], *, allow_null: Literal[False]) -> dict[str, float]: ...
@overload
def _numbers(path: str, raw: dict[str, Any], *, allow_null: bool) -> dict[str, float | None]: ...
def _numbers(
    path: str, raw: dict[str, Any], *, allow_null: bool
) -> dict[str, float] | dict[str, float | None]:
    """Validate a mapping of sensor values (null only with ``allow_null``: the overloads
    give the caller a mapping without None otherwise). The fast path is a type check and
    one chained comparison per value (NaN and infinities fail the comparison); the slow
    path only runs to word the error."""
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


# Epoch numbers: below this a timestamp is in seconds, from it up to EPOCH_MAX_MS in
# milliseconds. 1e11 s is the year 5138 and 1e11 ms is 1973-03-03, so no time a reading
# can carry (the acceptance window is months, not decades) is ambiguous between the two.
# Microseconds and nanoseconds (1e15 and more today) are refused rather than guessed.
EPOCH_SECONDS_BELOW = 10**11
EPOCH_MAX_MS = 10**14
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _epoch_ts(path: str, value: int | float) -> datetime:
    """An epoch timestamp (Node-RED's ``Date.now()`` milliseconds, Unix seconds), seconds or
    milliseconds by magnitude (see EPOCH_SECONDS_BELOW)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise MessageError(path, "an epoch timestamp must be a finite number")
    if value < 0:
        raise MessageError(path, f"epoch timestamp {value!r} is before 1970")
    if value >= EPOCH_MAX_MS:
        raise MessageError(
            path,
            f"epoch timestamp {value!r} is too large for milliseconds (microseconds or "
            "nanoseconds?); send seconds or milliseconds since 1970-01-01 UTC",
        )
    if value < EPOCH_SECONDS_BELOW:
        # Integers exactly; a float's fraction to the microsecond.
        return _EPOCH + timedelta(seconds=value)
    return _EPOCH + timedelta(milliseconds=value)


def _parse_ts(path: str, value: Any) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _epoch_ts(path, value)
    if not isinstance(value, str):
        raise MessageError(
            path, "expected an ISO 8601 timestamp string or epoch seconds/milliseconds"
        )
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise MessageError(path, f"not an ISO 8601 timestamp: {value!r}") from None
    if ts.tzinfo is None:
        # The prototype sent naive local timestamps (``docs/manifest.md`` §3.3) and got
        # negative latencies; naive
        # input is taken as UTC, which is what every edge of ours sends.
        ts = ts.replace(tzinfo=UTC)
    try:
        return ts.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00:00+01:00 is a valid ISO string whose UTC time is before year 1.
        raise MessageError(path, f"timestamp out of range: {value!r}") from None


def parse_reading(
    doc: Any,
    *,
    path: str = "$",
    default_edge_id: str | None = None,
    default_seq: int | None = None,
    default_ts: datetime | None = None,
    now: datetime | None = None,
    window: TimeWindow | None = DEFAULT_WINDOW,
) -> Reading:
    """Validate a decoded JSON document into a ``Reading``.

    This is the one definition of a valid reading: the edge (``check_reading``), the ingest
    API and the aggregator all call it, so whatever one accepts the others store. It raises
    ``MessageError`` naming the offending field and never any other exception.

    The canonical wire shape has ``values``; the integrator shape has sensor names at top level
    and ``custom_sensors``. ``default_edge_id``/``default_seq``/``default_ts`` fill what an
    integrator may leave out; without them those fields are required. ``window`` bounds the
    timestamp relative to ``now`` (the receiver's clock); None accepts any time.
    """
    if not isinstance(doc, dict):
        raise MessageError(path, "expected a JSON object")

    version = doc.get("v", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise MessageError(f"{path}.v", f"unsupported schema version {version!r}")

    machine_id = doc.get("machine_id")
    if not isinstance(machine_id, str) or not MACHINE_ID_RE.fullmatch(machine_id):
        raise MessageError(
            f"{path}.machine_id",
            "required; 1-32 characters of letters, digits, '_', '.', '-' starting with a "
            "letter or digit",
        )

    edge_id = doc.get("edge_id", default_edge_id)
    if not isinstance(edge_id, str) or not EDGE_ID_RE.fullmatch(edge_id):
        raise MessageError(
            f"{path}.edge_id", "required; 1-64 characters of letters, digits, '_', '.', ':', '-'"
        )

    seq = doc.get("seq", default_seq)
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
        raise MessageError(f"{path}.seq", "required; an integer from 0 to 2^63-1")

    ts_key = "ts" if "ts" in doc else "timestamp"
    if ts_key in doc:
        ts = _parse_ts(f"{path}.{ts_key}", doc[ts_key])
    elif default_ts is not None:
        ts = default_ts
    else:
        raise MessageError(f"{path}.ts", "required")
    if window is not None:
        problem = window.problem(ts, now)
        if problem is not None:
            raise MessageError(f"{path}.{ts_key}", problem)

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
        custom.update(_numbers(custom_path, raw_custom, allow_null=False))
    if len(custom) > MAX_CUSTOM_SENSORS:
        raise MessageError(custom_path, f"more than {MAX_CUSTOM_SENSORS} custom sensors")

    quality: dict[str, str] = {}
    raw_quality = doc.get("quality", {})
    if not isinstance(raw_quality, dict):
        raise MessageError(f"{path}.quality", "expected an object of sensor name to quality")
    for name, q in raw_quality.items():
        if not isinstance(q, str) or q not in QUALITIES:
            raise MessageError(f"{path}.quality.{name}", f"expected one of {sorted(QUALITIES)}")
        if name not in values and name not in custom:
            raise MessageError(f"{path}.quality.{name}", "quality for a sensor with no value")
        if q != "good":
            quality[name] = q

    if not values and not custom:
        raise MessageError(path, "a reading needs at least one sensor value")

    detection = doc.get("detection")
    if detection is not None:
        detection = _check_detection(f"{path}.detection", detection, values, custom, nested=False)

    return Reading(machine_id, edge_id, seq, ts, values, custom, quality, detection)


def _check_detection(
    path: str,
    detection: Any,
    values: dict[str, float | None],
    custom: dict[str, float],
    *,
    nested: bool,
) -> dict[str, Any]:
    """The detection a sender attached: every key known, every value of its type and
    bounded, sensor names that belong to the reading. It is stored as JSONB and read by the
    anomaly writer, so anything loose here would fail there, for every redelivery."""
    if not isinstance(detection, dict):
        raise MessageError(path, "expected an object")
    allowed = _DETECTION_NESTED_KEYS if nested else _DETECTION_KEYS
    unknown = detection.keys() - allowed
    if unknown:
        raise MessageError(f"{path}.{sorted(unknown)[0]}", "not a detection field")
    method = detection.get("method")
    if not isinstance(method, str) or not DETECTION_METHOD_RE.fullmatch(method):
        raise MessageError(f"{path}.method", "required; 1-32 characters of a-z, 0-9, '_.:-'")
    if not isinstance(detection.get("is_anomaly", False), bool):
        raise MessageError(f"{path}.is_anomaly", "expected true or false")
    _number(f"{path}.score", detection.get("score"))

    def known(name: Any, field_path: str, *, absent_ok: bool = False) -> None:
        if not isinstance(name, str):
            raise MessageError(field_path, "expected a sensor name")
        if name in values or name in custom:
            return
        if absent_ok and (name in SENSOR_INDEX or CUSTOM_NAME_RE.fullmatch(name)):
            return
        raise MessageError(field_path, f"{name[:64]!r} is not a sensor of this reading")

    for key in ("sensors", "warnings", "missing_sensors"):
        names = detection.get(key, [])
        if not isinstance(names, list) or len(names) > MAX_DETECTION_LIST:
            raise MessageError(f"{path}.{key}", f"expected a list of at most {MAX_DETECTION_LIST}")
        for i, name in enumerate(names):
            known(name, f"{path}.{key}[{i}]", absent_ok=key == "missing_sensors")
    contributions = detection.get("contributions", [])
    if not isinstance(contributions, list) or len(contributions) > MAX_DETECTION_LIST:
        raise MessageError(f"{path}.contributions", f"expected at most {MAX_DETECTION_LIST}")
    for i, item in enumerate(contributions):
        item_path = f"{path}.contributions[{i}]"
        if not isinstance(item, dict) or item.keys() != {"sensor", "share"}:
            raise MessageError(item_path, 'expected {"sensor": name, "share": number}')
        known(item["sensor"], f"{item_path}.sensor", absent_ok=True)
        share = _number(f"{item_path}.share", item["share"])
        if not 0.0 <= share <= 1.0:
            raise MessageError(f"{item_path}.share", "a share is between 0 and 1")
    version = detection.get("model_version")
    if version is not None and (
        not isinstance(version, str) or not MODEL_VERSION_RE.fullmatch(version)
    ):
        raise MessageError(f"{path}.model_version", "1-64 characters of letters, digits, '_.:+-'")
    thresholds_version = detection.get("thresholds_version")
    if thresholds_version is not None and (
        not isinstance(thresholds_version, str)
        or not THRESHOLDS_VERSION_RE.fullmatch(thresholds_version)
    ):
        raise MessageError(
            f"{path}.thresholds_version", "1-64 characters of letters, digits, '_.:+-'"
        )
    probability = detection.get("probability_ahead")
    if (
        probability is not None
        and not 0.0 <= _number(f"{path}.probability_ahead", probability) <= 1.0
    ):
        raise MessageError(f"{path}.probability_ahead", "a probability is between 0 and 1")
    if not isinstance(detection.get("warming_up", False), bool):
        raise MessageError(f"{path}.warming_up", "expected true or false")
    forecast = detection.get("forecast")
    if forecast is not None:
        if not isinstance(forecast, dict) or len(forecast) > MAX_DETECTION_LIST:
            raise MessageError(f"{path}.forecast", "expected an object of sensor to values")
        for name, steps in forecast.items():
            known(name, f"{path}.forecast.{name[:64]}", absent_ok=True)
            if not isinstance(steps, list) or len(steps) > MAX_FORECAST_STEPS:
                raise MessageError(
                    f"{path}.forecast.{name}", f"expected at most {MAX_FORECAST_STEPS} values"
                )
            for i, step in enumerate(steps):
                _number(f"{path}.forecast.{name}[{i}]", step)
    if "thresholds" in detection:
        _check_detection(f"{path}.thresholds", detection["thresholds"], values, custom, nested=True)
    if not nested and "rul" in detection:
        _check_rul(f"{path}.rul", detection["rul"])
    if not nested:
        size = len(orjson.dumps(detection))
        if size > MAX_DETECTION_BYTES:
            raise MessageError(path, f"{size} bytes; a detection is at most {MAX_DETECTION_BYTES}")
    return detection


# Remaining useful life (detector/rul.py): hours, at most ~114 years (anything longer is a
# unit error, not a forecast).
MAX_RUL_HOURS = 1e6
_RUL_KEYS = frozenset(
    {
        "rul_hours",
        "low_hours",
        "high_hours",
        "max_hours",
        "capped",
        "rows",
        "critical_sensors",
        "model_version",
    }
)


def _check_rul(path: str, rul: Any) -> None:
    """``detection.rul``: the edge's remaining-life estimate, stored per machine by the cloud.
    The interval must contain the estimate; shares are between 0 and 1."""
    if not isinstance(rul, dict):
        raise MessageError(path, "expected an object")
    unknown = rul.keys() - _RUL_KEYS
    if unknown:
        raise MessageError(f"{path}.{str(sorted(unknown)[0])[:64]}", "not a RUL field")
    hours: dict[str, float] = {}
    for key in ("rul_hours", "low_hours", "high_hours"):
        if key not in rul:
            raise MessageError(f"{path}.{key}", "required")
        hours[key] = _number(f"{path}.{key}", rul[key])
    for key in ("rul_hours", "low_hours", "high_hours", "max_hours"):
        if key in rul and not 0.0 <= _number(f"{path}.{key}", rul[key]) <= MAX_RUL_HOURS:
            raise MessageError(f"{path}.{key}", f"hours between 0 and {MAX_RUL_HOURS:g}")
    if not hours["low_hours"] <= hours["rul_hours"] <= hours["high_hours"]:
        raise MessageError(path, "low_hours <= rul_hours <= high_hours does not hold")
    if not isinstance(rul.get("capped", False), bool):
        raise MessageError(f"{path}.capped", "expected true or false")
    rows = rul.get("rows", 0)
    if isinstance(rows, bool) or not isinstance(rows, int) or not 0 <= rows <= 1_000_000:
        raise MessageError(f"{path}.rows", "expected an integer from 0 to 1000000")
    version = rul.get("model_version")
    if version is not None and (
        not isinstance(version, str) or not MODEL_VERSION_RE.fullmatch(version)
    ):
        raise MessageError(f"{path}.model_version", "1-64 characters of letters, digits, '_.:+-'")
    critical = rul.get("critical_sensors", [])
    if not isinstance(critical, list) or len(critical) > MAX_DETECTION_LIST:
        raise MessageError(f"{path}.critical_sensors", f"expected at most {MAX_DETECTION_LIST}")
    for i, item in enumerate(critical):
        item_path = f"{path}.critical_sensors[{i}]"
        if not isinstance(item, dict) or item.keys() != {"sensor", "share"}:
            raise MessageError(item_path, 'expected {"sensor": name, "share": number}')
        name = item["sensor"]
        if not isinstance(name, str) or not (
            name in SENSOR_INDEX or CUSTOM_NAME_RE.fullmatch(name)
        ):
            raise MessageError(f"{item_path}.sensor", "expected a sensor name")
        share = _number(f"{item_path}.share", item["share"])
        if not 0.0 <= share <= 1.0:
            raise MessageError(f"{item_path}.share", "a share is between 0 and 1")


# The fields the edge's detectors write (edge/detection.py, edge/onnx_detector.py).
_DETECTION_NESTED_KEYS = frozenset(
    {"method", "is_anomaly", "score", "sensors", "warnings", "thresholds_version"}
)
_DETECTION_KEYS = _DETECTION_NESTED_KEYS | {
    "contributions",
    "model_version",
    "probability_ahead",
    "warming_up",
    "missing_sensors",
    "forecast",
    "thresholds",
    "rul",
}


_CORE_NAMES = frozenset(SENSOR_INDEX)


def _check_custom_name(path: str, name: str) -> None:
    if not CUSTOM_NAME_RE.fullmatch(name):
        raise MessageError(
            path, "custom sensor names are snake_case: a-z first, then a-z, 0-9, '_' (max 63)"
        )
