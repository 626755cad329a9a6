"""Remaining useful life per machine: the edges' estimates over time (``machine_rul``, filled by
a trigger from the readings' ``detection.rul``, migration 0015), what the API says about them,
and the dashboard's colour bands.

The answer is honest by construction: without a RUL model in service and without estimates a
machine's status is ``no_model``; with too few estimates it is ``insufficient_history``; an
estimate older than ``STALE_MINUTES`` is ``stale`` (shown with its time, never refreshed by
guesswork). No number is ever made up here: every figure is an edge model's output.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import psycopg
from psycopg.rows import dict_row

from cloud.fielderror import FieldError

# Estimates needed before the API gives a number (one is a cold start, a padded window).
MIN_ESTIMATES = 3
# Estimates (the newest, within TREND_SPAN) that the trend is fitted on, and how many it needs.
TREND_POINTS = 30
MIN_TREND_POINTS = 5
TREND_SPAN = timedelta(hours=6)
# Slopes of the RUL over time, in hours of life per hour. Near 0: nothing is being used up
# (a healthy machine at the model's cap). About -1: life goes by as the clock does. Faster
# than STEEP (or a second half much steeper than the first): the wear is accelerating.
STABLE_SLOPE = -0.25
STEEP_SLOPE = -1.5
STALE_MINUTES = 15
# The interval level the rig models are calibrated to (models.rul.estimator, interval=0.8).
DEFAULT_LEVEL = 0.8


@dataclass(frozen=True)
class Bands:
    green_hours: float
    yellow_hours: float

    def as_json(self) -> dict[str, float]:
        return {"green_hours": self.green_hours, "yellow_hours": self.yellow_hours}


def bands(conn: psycopg.Connection) -> Bands:
    row = conn.execute("SELECT green_hours, yellow_hours FROM rul_bands").fetchone()
    return Bands(float(row[0]), float(row[1])) if row else Bands(168.0, 24.0)


def set_bands(
    conn: psycopg.Connection, green_hours: float, yellow_hours: float, username: str | None
) -> Bands:
    if not green_hours > yellow_hours:
        raise FieldError("green_hours", "must be above yellow_hours")
    conn.execute(
        "UPDATE rul_bands SET green_hours = %s, yellow_hours = %s, updated_by = %s, "
        "updated_at = now()",
        (green_hours, yellow_hours, username),
    )
    return bands(conn)


def trend(
    times: list[datetime], ruls: list[float], capped: list[bool]
) -> tuple[str | None, float | None]:
    """(stable / degrading / accelerating, slope in h/h) from estimates oldest first; (None,
    None) with fewer than MIN_TREND_POINTS."""
    if len(ruls) < MIN_TREND_POINTS:
        return None, None
    if all(capped):
        return "stable", 0.0
    t = np.array([(x - times[0]).total_seconds() / 3600.0 for x in times])
    y = np.asarray(ruls, dtype=np.float64)
    if t[-1] - t[0] <= 0:
        return None, None
    slope = float(np.polyfit(t, y, 1)[0])
    half = len(t) // 2
    late = float(np.polyfit(t[half:], y[half:], 1)[0]) if len(t) - half >= 3 else slope
    early = float(np.polyfit(t[: half + 1], y[: half + 1], 1)[0]) if half + 1 >= 3 else slope
    if slope > STABLE_SLOPE:
        return "stable", round(slope, 3)
    if slope < STEEP_SLOPE or (late < 1.5 * early and late < -1.0):
        return "accelerating", round(slope, 3)
    return "degrading", round(slope, 3)


# Per machine, its newest TREND_POINTS estimates: one index range scan each (machine_rul grows
# by one row a minute per machine; nothing here reads a machine's whole history).
_RECENT = """
SELECT k.machine_id, r.ts, r.rul_hours, r.low_hours, r.high_hours, r.max_hours, r.capped,
       r.critical_sensors, r.model_version
FROM unnest(%(machines)s::text[]) AS k(machine_id)
CROSS JOIN LATERAL (
    SELECT * FROM machine_rul m WHERE m.machine_id = k.machine_id
    ORDER BY m.ts DESC LIMIT %(points)s
) r
ORDER BY k.machine_id, r.ts
"""


def _recent(conn: psycopg.Connection, machines: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Per machine, its newest estimates within TREND_SPAN of its newest one, oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_RECENT, {"machines": machines, "points": TREND_POINTS})
        out: dict[str, list[dict[str, Any]]] = {}
        for row in cur.fetchall():
            out.setdefault(row["machine_id"], []).append(row)
    for machine, rows in out.items():
        newest = rows[-1]["ts"]
        out[machine] = [r for r in rows if r["ts"] > newest - TREND_SPAN]
    return out


def _active_models(
    conn: psycopg.Connection, machines: tuple[str, ...] | None
) -> dict[str, dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT id, machine_id, version, manifest ->> 'version' AS bundle_version, "
            "metrics -> 'validation' -> 'coverage' AS coverage, "
            "(manifest ->> 'interval')::double precision AS level "
            "FROM model_registry WHERE kind = 'rul' AND status = 'active' "
            "AND (%(all)s OR machine_id = ANY(%(machines)s))",
            {"all": machines is None, "machines": list(machines or ())},
        )
        return {r["machine_id"]: r for r in cur.fetchall()}


def _answer(
    machine_id: str,
    recent: list[dict[str, Any]],
    model: dict[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    total = len(recent)
    doc: dict[str, Any] = {
        "machine_id": machine_id,
        "status": "ok",
        "message": None,
        "rul_hours": None,
        "at_least": False,
        "interval": None,
        "confidence": None,
        "degradation_trend": None,
        "trend_hours_per_hour": None,
        "critical_sensors": [],
        "model": None,
        "time": None,
        "estimates": total,
    }
    if model is not None:
        doc["model"] = {
            "model_id": model["id"],
            "registry_version": model["version"],
            "version": model["bundle_version"],
            "validated_coverage": model["coverage"],
        }
    if not recent:
        if model is None:
            doc["status"] = "no_model"
            doc["message"] = (
                "no RUL model is in service for this machine and its edge sends no estimate: "
                "its remaining life is unknown"
            )
        else:
            doc["status"] = "insufficient_history"
            doc["message"] = "a RUL model is in service; no estimate has arrived from the edge yet"
        return doc
    last = recent[-1]
    doc["time"] = last["ts"].isoformat()
    if doc["model"] is None or doc["model"]["version"] != last["model_version"]:
        # What computed the number is what the edge says it ran (the registry's model may
        # not have reached the edge yet).
        doc["model"] = {
            "model_id": None,
            "registry_version": None,
            "validated_coverage": None,
            "version": last["model_version"],
        }
    if total < MIN_ESTIMATES:
        doc["status"] = "insufficient_history"
        doc["message"] = (
            f"{total} estimate(s) so far; {MIN_ESTIMATES} are needed before a remaining life "
            "is given"
        )
        return doc
    level = float(model["level"]) if model and model.get("level") else DEFAULT_LEVEL
    doc.update(
        rul_hours=round(float(last["rul_hours"]), 3),
        at_least=bool(last["capped"]),
        interval={
            "low_hours": round(float(last["low_hours"]), 3),
            "high_hours": round(float(last["high_hours"]), 3),
            "level": level,
        },
        confidence=level,
        critical_sensors=list(last["critical_sensors"] or []),
    )
    if last["capped"]:
        doc["message"] = (
            f"no wear the model can count down from: at least {float(last['max_hours']):g} h"
            if last["max_hours"] is not None
            else "no wear the model can count down from"
        )
    label, slope = trend(
        [r["ts"] for r in recent],
        [float(r["rul_hours"]) for r in recent],
        [bool(r["capped"]) for r in recent],
    )
    doc["degradation_trend"] = label
    doc["trend_hours_per_hour"] = slope
    if now - last["ts"] > timedelta(minutes=STALE_MINUTES):
        doc["status"] = "stale"
        doc["message"] = (
            f"the newest estimate is from {last['ts'].isoformat()}, more than "
            f"{STALE_MINUTES} minutes ago"
        )
    return doc


def _now(conn: psycopg.Connection) -> datetime:
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]


def machine_rul(conn: psycopg.Connection, machine_id: str) -> dict[str, Any]:
    recent = _recent(conn, [machine_id]).get(machine_id, [])
    model = _active_models(conn, (machine_id,)).get(machine_id)
    return _answer(machine_id, recent, model, _now(conn))


def fleet_rul(conn: psycopg.Connection, machines: tuple[str, ...] | None) -> dict[str, Any]:
    """Every visible machine that reports readings or estimates, with its answer."""
    known = [
        r[0]
        for r in conn.execute(
            # Estimates arrive in readings, so every machine with one is in reading_totals.
            "SELECT machine_id FROM reading_totals "
            "UNION SELECT machine_id FROM model_registry WHERE kind = 'rul' ORDER BY 1"
        ).fetchall()
        if machines is None or r[0] in machines
    ]
    recent = _recent(conn, known)
    models = _active_models(conn, machines)
    now = _now(conn)
    return {
        "machines": [_answer(m, recent.get(m, []), models.get(m), now) for m in known],
        "bands": bands(conn).as_json(),
    }


def history(
    conn: psycopg.Connection,
    machine_id: str,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT ts, rul_hours, low_hours, high_hours, capped, model_version, critical_sensors "
            "FROM (SELECT * FROM machine_rul WHERE machine_id = %s "
            "AND (%s::timestamptz IS NULL OR ts >= %s) AND (%s::timestamptz IS NULL OR ts < %s) "
            "ORDER BY ts DESC LIMIT %s) s ORDER BY ts",
            (machine_id, since, since, until, until, limit),
        )
        rows = cur.fetchall()
    return {
        "machine_id": machine_id,
        "points": [
            {
                "time": r["ts"].isoformat(),
                "rul_hours": r["rul_hours"],
                "low_hours": r["low_hours"],
                "high_hours": r["high_hours"],
                "at_least": r["capped"],
                "model_version": r["model_version"],
                "critical_sensors": r["critical_sensors"],
            }
            for r in rows
        ],
    }
