"""A proposed custom sensor, checked exactly like an admin's own input, and its confirmation.

Whoever proposed it (the offline reader, a model, or the admin editing the review table),
a sensor passes the same checks before anything is stored: the name is a snake_case custom
name and not a core sensor, the unit is one we know (normalised: "degC" -> "°C"), the
category is one of the five, the range is ordered, the thresholds are ordered and inside the
range. The unit/category/description and the thresholds then go through the very models and
functions of the custom-sensor and threshold endpoints (``CustomSensorSpec``,
``ThresholdBody``, ``cloud.thresholds.validate``), and confirming calls the same store
functions those endpoints call.
"""

from __future__ import annotations

import math
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from cloud import thresholds
from cloud.api.routers.sensors import CustomSensorSpec
from cloud.api.routers.thresholds import ThresholdBody
from cloud.assistant.units import KNOWN_UNITS, normalise_unit
from cloud.fielderror import FieldError
from cloud.store import custom_sensors as registry
from shared.catalog import SENSOR_INDEX, Category
from shared.message import CUSTOM_NAME_RE

NUMERIC = ("min_range", "max_range", "low_threshold", "high_threshold")
TEXT_LIMITS = {"accuracy": 100, "output_signal": 100, "description": 1000}
FIELDS = ("sensor_name", *NUMERIC, "unit", "category", *TEXT_LIMITS)
_THRESHOLD_NAMES = {"critical_low": "low_threshold", "critical_high": "high_threshold"}


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("expected a number")
    if isinstance(value, str):
        value = value.strip().replace("−", "-").replace(",", "")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("expected a number") from None
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    if abs(number) > 1e12:
        raise ValueError("is out of range (|value| > 1e12)")
    return number


def check_sensor(raw: dict[str, Any], prefix: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The sensor with its values normalised, and every problem found (``field`` as
    ``{prefix}.{name}``). Nothing is raised: a proposal with problems is still shown for
    review, and confirming refuses while any remain."""
    problems: list[dict[str, str]] = []

    def problem(field: str, error: str) -> None:
        problems.append({"field": f"{prefix}.{field}", "error": error})

    clean: dict[str, Any] = {}
    name = raw.get("sensor_name")
    name = name.strip() if isinstance(name, str) else name
    clean["sensor_name"] = name if isinstance(name, str) else None
    if not isinstance(name, str) or not CUSTOM_NAME_RE.fullmatch(name):
        problem(
            "sensor_name",
            "required: snake_case, a lower-case letter then up to 62 letters, digits or '_'",
        )
    elif name in SENSOR_INDEX:
        problem("sensor_name", f"{name!r} is a core sensor: choose another name (e.g. {name}_aux)")

    for field in NUMERIC:
        try:
            clean[field] = _number(raw.get(field))
        except ValueError as exc:
            clean[field] = None
            problem(field, str(exc))

    unit_text = raw.get("unit")
    clean["unit"] = None
    if unit_text is None or (isinstance(unit_text, str) and not unit_text.strip()):
        problem("unit", "required: the unit the sensor reports in")
    elif not isinstance(unit_text, str):
        problem("unit", "expected a unit such as psi, °C, mm/s")
    else:
        unit = normalise_unit(unit_text)
        if unit is None:
            shown = ", ".join(KNOWN_UNITS[:12])
            problem("unit", f"unknown unit {unit_text[:32]!r}: use a known one ({shown}, ...)")
        clean["unit"] = unit or unit_text.strip()[:32]

    category = raw.get("category")
    category = category.strip().lower() if isinstance(category, str) else category
    clean["category"] = category if category in {c.value for c in Category} else None
    if clean["category"] is None:
        allowed = "|".join(c.value for c in Category)
        problem("category", f"required: one of {allowed}")

    for field, limit in TEXT_LIMITS.items():
        value = raw.get(field)
        if value is None or value == "":
            clean[field] = None
        elif not isinstance(value, str | int | float) or isinstance(value, bool):
            clean[field] = None
            problem(field, "expected text")
        else:
            clean[field] = str(value).strip()[:limit]

    lo, hi = clean["min_range"], clean["max_range"]
    if lo is None:
        problem("min_range", "required: the low end of the measuring range")
    if hi is None:
        problem("max_range", "required: the high end of the measuring range")
    if lo is not None and hi is not None and lo >= hi:
        problem("max_range", "must be greater than min_range")

    # The endpoints' own input models: what an admin could not type, a proposal cannot carry.
    try:
        CustomSensorSpec(
            unit=clean["unit"], category=clean["category"], description=clean["description"]
        )
    except ValidationError as exc:
        for err in exc.errors():
            problem(str(err["loc"][0]) if err["loc"] else "sensor_name", err["msg"])
    low, high = clean["low_threshold"], clean["high_threshold"]
    try:
        ThresholdBody(critical_low=low, critical_high=high)
        if low is not None or high is not None:
            thresholds.validate(low, high, None, None)
    except ValidationError as exc:
        for err in exc.errors():
            problem(_THRESHOLD_NAMES.get(str(err["loc"][0]), "high_threshold"), err["msg"])
    except FieldError as exc:
        problem(_THRESHOLD_NAMES.get(exc.field, exc.field), exc.message)
    if lo is not None and hi is not None and lo < hi:
        for field in ("low_threshold", "high_threshold"):
            value = clean[field]
            if value is not None and not lo <= value <= hi:
                problem(field, f"must lie inside the range {lo:g} … {hi:g}")
    return clean, problems


def check_sensors(
    sensors: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    out, problems = [], []
    names: set[str] = set()
    for index, raw in enumerate(sensors):
        clean, found = check_sensor(raw, f"sensors[{index}]")
        if clean["sensor_name"] in names:
            found.append(
                {"field": f"sensors[{index}].sensor_name", "error": "used twice in this proposal"}
            )
        names.add(clean["sensor_name"])
        clean["provenance"] = raw.get("provenance") or {}
        clean["problems"] = found
        out.append(clean)
        problems.extend(found)
    return out, problems


def apply_sensor(
    conn: psycopg.Connection,
    sensor: dict[str, Any],
    *,
    machine_id: str | None,
    username: str,
    proposal_id: int,
) -> dict[str, Any]:
    """Create (or annotate) the custom sensor and set its thresholds, through the same
    store functions as ``PUT /api/v1/custom-sensors/{name}`` and the threshold endpoints.
    ``sensor`` has passed ``check_sensor`` without problems."""
    name = sensor["sensor_name"]
    registered = registry.annotate_custom_sensor(
        conn,
        name,
        unit=sensor["unit"],
        category=Category(sensor["category"]),
        description=sensor["description"],
        confirmed=True,
    )
    entry = None
    if sensor["low_threshold"] is not None or sensor["high_threshold"] is not None:
        entry = thresholds.set_threshold(
            conn,
            name,
            machine_id,
            {
                "critical_low": sensor["low_threshold"],
                "critical_high": sensor["high_threshold"],
                "warn_low": None,
                "warn_high": None,
            },
            username,
        )
    conn.execute(
        "INSERT INTO custom_sensor_specs (name, min_range, max_range, accuracy, output_signal, "
        "provenance, proposal_id, updated_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (name) DO UPDATE SET min_range = excluded.min_range, "
        "max_range = excluded.max_range, accuracy = excluded.accuracy, "
        "output_signal = excluded.output_signal, provenance = excluded.provenance, "
        "proposal_id = excluded.proposal_id, updated_by = excluded.updated_by, "
        "updated_at = now()",
        (
            name,
            sensor["min_range"],
            sensor["max_range"],
            sensor["accuracy"],
            sensor["output_signal"],
            Jsonb(sensor.get("provenance") or {}),
            proposal_id,
            username,
        ),
    )
    return {
        "name": registered.name,
        "unit": registered.unit,
        "category": registered.category,
        "confirmed": registered.confirmed,
        "thresholds": entry.as_json() if entry else None,
        "machine_id": machine_id,
    }


def load_spec(conn: psycopg.Connection, name: str) -> dict[str, Any]:
    """The confirmed spec of custom sensor ``name`` (every value null when none was)."""
    row = conn.execute(
        "SELECT min_range, max_range, accuracy, output_signal, provenance, proposal_id, "
        "updated_by, updated_at FROM custom_sensor_specs WHERE name = %s",
        (name,),
    ).fetchone()
    if row is None:
        return {
            "name": name,
            "min_range": None,
            "max_range": None,
            "accuracy": None,
            "output_signal": None,
            "provenance": {},
            "proposal_id": None,
            "updated_by": None,
            "updated_at": None,
        }
    return {
        "name": name,
        "min_range": row[0],
        "max_range": row[1],
        "accuracy": row[2],
        "output_signal": row[3],
        "provenance": row[4] or {},
        "proposal_id": row[5],
        "updated_by": row[6],
        "updated_at": row[7].isoformat(),
    }
