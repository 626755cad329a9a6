"""The custom-sensor registry: filled by ingest (``cloud/storage.py``), annotated by admins."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import class_row

from cloud.fielderror import FieldError, NotFoundError
from shared.catalog import SENSOR_INDEX, Category


@dataclass(frozen=True, slots=True)
class CustomSensor:
    name: str
    # None: registered by an admin, never received.
    first_seen: datetime | None
    last_seen: datetime | None
    first_machine: str | None
    machines: list[str]
    samples: int
    min_value: float | None
    max_value: float | None
    sum_value: float
    unit: str | None
    category: str | None
    description: str | None
    confirmed: bool

    @property
    def mean(self) -> float | None:
        return self.sum_value / self.samples if self.samples else None


_SELECT = (
    "SELECT name, first_seen, last_seen, first_machine, machines, samples, min_value, "
    "max_value, sum_value, unit, category, description, confirmed FROM custom_sensors"
)


def list_custom_sensors(conn: psycopg.Connection, machine_id: str | None) -> list[CustomSensor]:
    """All custom sensors by name, or those ``machine_id`` has sent."""
    with conn.cursor(row_factory=class_row(CustomSensor)) as cur:
        if machine_id is None:
            cur.execute(f"{_SELECT} ORDER BY name")
        else:
            cur.execute(
                f"{_SELECT} WHERE machines @> ARRAY[%s] ORDER BY name",
                (machine_id,),
            )
        return cur.fetchall()


def get_custom_sensor(conn: psycopg.Connection, name: str) -> CustomSensor | None:
    with conn.cursor(row_factory=class_row(CustomSensor)) as cur:
        cur.execute(f"{_SELECT} WHERE name = %s", (name,))
        return cur.fetchone()


def annotate_custom_sensor(
    conn: psycopg.Connection,
    name: str,
    *,
    unit: str | None,
    category: Category | None,
    description: str | None,
    confirmed: bool,
) -> CustomSensor:
    """Register ``name`` (before it is ever received) or set what an admin knows of it."""
    if name in SENSOR_INDEX:
        raise FieldError("name", f"{name!r} is a core sensor")
    conn.execute(
        "INSERT INTO custom_sensors (name, samples, sum_value, unit, category, description, "
        "confirmed) VALUES (%s, 0, 0, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
        "unit = excluded.unit, category = excluded.category, "
        "description = excluded.description, confirmed = excluded.confirmed",
        (name, unit, category.value if category else None, description, confirmed),
    )
    sensor = get_custom_sensor(conn, name)
    assert sensor is not None  # inserted or updated just above, in this transaction
    return sensor


def set_range(
    conn: psycopg.Connection,
    name: str,
    min_range: float | None,
    max_range: float | None,
    username: str | None,
) -> None:
    """Set the measuring range of registered custom sensor ``name`` (an admin's word: the
    spec sheet's provenance of the two values is dropped; its other values are kept)."""
    if min_range is not None and max_range is not None and not min_range < max_range:
        raise FieldError("max_range", "must be greater than min_range")
    if get_custom_sensor(conn, name) is None:
        raise NotFoundError("name", f"no custom sensor {name!r}: register it first")
    conn.execute(
        "INSERT INTO custom_sensor_specs (name, min_range, max_range, updated_by) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
        "min_range = excluded.min_range, max_range = excluded.max_range, "
        "provenance = custom_sensor_specs.provenance - 'min_range' - 'max_range', "
        "updated_by = excluded.updated_by, updated_at = now()",
        (name, min_range, max_range, username),
    )
