"""Alarm thresholds: catalog defaults, overridden fleet-wide and then per machine.

Resolution order for a sensor on a machine: the machine's row, else the fleet-wide row
(``machine_id`` NULL), else the catalog default. Every change is announced on the live
channel in its own transaction, so open dashboards recolour without a reload.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import psycopg

from cloud.fielderror import FieldError, NotFoundError
from cloud.live import notify_event
from shared.catalog import SENSORS_BY_NAME, Thresholds
from shared.message import CUSTOM_NAME_RE


@dataclass(frozen=True, slots=True)
class ThresholdEntry:
    critical_low: float | None
    critical_high: float | None
    warn_low: float | None
    warn_high: float | None
    source: str  # "default" (catalog), "fleet" or "machine"

    def as_json(self) -> dict[str, Any]:
        return {
            "critical_low": self.critical_low,
            "critical_high": self.critical_high,
            "warn_low": self.warn_low,
            "warn_high": self.warn_high,
            "source": self.source,
        }


def _entry(t: Thresholds, source: str) -> ThresholdEntry:
    # Warning bands are resolved by the catalog's rule here, once, so every client colours alike.
    return ThresholdEntry(t.low, t.high, t.effective_warn_low, t.effective_warn_high, source)


def check_sensor(sensor: str) -> None:
    if sensor not in SENSORS_BY_NAME and not CUSTOM_NAME_RE.fullmatch(sensor):
        raise FieldError("sensor", f"{sensor!r} is neither a core nor a custom sensor name")


def validate(
    critical_low: float | None,
    critical_high: float | None,
    warn_low: float | None,
    warn_high: float | None,
) -> None:
    named = {
        "critical_low": critical_low,
        "critical_high": critical_high,
        "warn_low": warn_low,
        "warn_high": warn_high,
    }
    for field, value in named.items():
        if value is not None and not math.isfinite(value):
            raise FieldError(field, "must be a finite number or null")
        if value is not None and abs(value) > 1e12:
            raise FieldError(field, "is out of range (|value| > 1e12)")
    if critical_low is None and critical_high is None:
        raise FieldError("critical_high", "give at least one of critical_low and critical_high")
    if critical_low is not None and critical_high is not None and critical_low >= critical_high:
        raise FieldError("critical_high", "must be greater than critical_low")
    if warn_low is not None and critical_low is not None and warn_low < critical_low:
        raise FieldError("warn_low", "must not be below critical_low")
    if warn_high is not None and critical_high is not None and warn_high > critical_high:
        raise FieldError("warn_high", "must not be above critical_high")
    if warn_low is not None and warn_high is not None and warn_low >= warn_high:
        raise FieldError("warn_high", "must be greater than warn_low")


def effective(conn: psycopg.Connection, machine_id: str | None) -> dict[str, ThresholdEntry]:
    """Every sensor with a threshold, for one machine (or the fleet default when None)."""
    result = {name: _entry(spec.thresholds(), "default") for name, spec in SENSORS_BY_NAME.items()}
    rows = conn.execute(
        "SELECT sensor, machine_id, low, high, warn_low, warn_high FROM thresholds "
        "WHERE machine_id IS NULL OR machine_id = %s ORDER BY machine_id NULLS FIRST",
        (machine_id,),
    ).fetchall()
    # Fleet rows first, machine rows after, so the machine's own wins.
    for sensor, machine, low, high, warn_low, warn_high in rows:
        result[sensor] = _entry(
            Thresholds(low, high, warn_low, warn_high), "machine" if machine else "fleet"
        )
    return result


def set_threshold(
    conn: psycopg.Connection,
    sensor: str,
    machine_id: str | None,
    values: dict[str, float | None],
    username: str,
) -> ThresholdEntry:
    check_sensor(sensor)
    validate(
        values["critical_low"], values["critical_high"], values["warn_low"], values["warn_high"]
    )
    conn.execute(
        "INSERT INTO thresholds (sensor, machine_id, low, high, warn_low, warn_high, "
        "updated_by) VALUES (%s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (sensor, coalesce(machine_id, '')) DO UPDATE SET low = excluded.low, "
        "high = excluded.high, warn_low = excluded.warn_low, warn_high = excluded.warn_high, "
        "updated_at = now(), updated_by = excluded.updated_by",
        (
            sensor,
            machine_id,
            values["critical_low"],
            values["critical_high"],
            values["warn_low"],
            values["warn_high"],
            username,
        ),
    )
    entry = effective(conn, machine_id)[sensor]
    _announce(conn, sensor, machine_id, entry)
    return entry


def clear_threshold(
    conn: psycopg.Connection, sensor: str, machine_id: str | None
) -> ThresholdEntry | None:
    """Drop an override; returns what applies now (None: the sensor has no threshold)."""
    check_sensor(sensor)
    deleted = conn.execute(
        "DELETE FROM thresholds WHERE sensor = %s AND machine_id IS NOT DISTINCT FROM %s",
        (sensor, machine_id),
    ).rowcount
    if not deleted:
        where = f"machine {machine_id!r}" if machine_id else "the fleet"
        raise NotFoundError("sensor", f"no override for {sensor!r} on {where} to remove")
    entry = effective(conn, machine_id).get(sensor)
    _announce(conn, sensor, machine_id, entry)
    return entry


def _announce(
    conn: psycopg.Connection, sensor: str, machine_id: str | None, entry: ThresholdEntry | None
) -> None:
    with conn.cursor() as cur:
        notify_event(
            cur,
            {
                "type": "thresholds",
                "machine_id": machine_id,
                "sensor": sensor,
                "entry": entry.as_json() if entry else None,
            },
        )
