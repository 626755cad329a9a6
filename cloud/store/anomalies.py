"""Anomalies detected at the edge (stored with their reading by ``cloud/storage.py``).

Pages are newest first by (reading time, id): a keyset, so pages stay stable while new
anomalies arrive and a deep page costs what the first one does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row, dict_row

from cloud.readings import ONE_SQL, reading_json


@dataclass(frozen=True, slots=True)
class Anomaly:
    id: int
    edge_id: str
    seq: int
    reading_ts: datetime
    machine_id: str
    detection_method: str
    anomaly_score: float
    detected_sensors: list[str]
    details: dict[str, Any] | None
    created_at: datetime
    # The operator's workflow (migration 0016).
    severity: str
    state: str
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    ack_note: str | None
    resolved_by: str | None
    resolved_at: datetime | None
    resolution_note: str | None


@dataclass(frozen=True, slots=True)
class AnomalyFilter:
    machine_id: str | None = None
    # Only these machines (a scoped user's); None: every machine.
    visible: tuple[str, ...] | None = None
    method: str | None = None
    sensor: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    severity: str | None = None
    state: str | None = None
    # Strictly older than this (reading time, id): the last row of the previous page.
    before: tuple[datetime, int] | None = None


_COLUMNS = (
    "id, edge_id, seq, reading_ts, machine_id, detection_method, anomaly_score, "
    "detected_sensors, details, created_at, severity, state, acknowledged_by, acknowledged_at, "
    "ack_note, resolved_by, resolved_at, resolution_note"
)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def list_anomalies(
    conn: psycopg.Connection, where: AnomalyFilter, limit: int
) -> tuple[list[Anomaly], bool]:
    """Up to ``limit`` anomalies, newest first, and whether more follow."""
    conditions: list[sql.Composable] = []
    params: dict[str, Any] = {"limit": limit + 1}
    if where.machine_id is not None:
        conditions.append(sql.SQL("machine_id = %(machine)s"))
        params["machine"] = where.machine_id
    if where.visible is not None:
        conditions.append(sql.SQL("machine_id = ANY(%(visible)s)"))
        params["visible"] = list(where.visible)
    if where.method is not None:
        conditions.append(sql.SQL("detection_method = %(method)s"))
        params["method"] = where.method
    if where.sensor is not None:
        conditions.append(sql.SQL("%(sensor)s = ANY(detected_sensors)"))
        params["sensor"] = where.sensor
    if where.severity is not None:
        conditions.append(sql.SQL("severity = %(severity)s"))
        params["severity"] = where.severity
    if where.state is not None:
        conditions.append(sql.SQL("state = %(state)s"))
        params["state"] = where.state
    if where.start is not None:
        conditions.append(sql.SQL("reading_ts >= %(from)s"))
        params["from"] = _utc(where.start)
    if where.end is not None:
        conditions.append(sql.SQL("reading_ts < %(to)s"))
        params["to"] = _utc(where.end)
    if where.before is not None:
        params["cursor_ts"], params["cursor_id"] = where.before
        conditions.append(sql.SQL("(reading_ts, id) < (%(cursor_ts)s, %(cursor_id)s)"))
    query = sql.SQL(
        f"SELECT {_COLUMNS} FROM anomaly_detections WHERE {{}} "
        "ORDER BY reading_ts DESC, id DESC LIMIT %(limit)s"
    ).format(sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true"))
    with conn.cursor(row_factory=class_row(Anomaly)) as cur:
        cur.execute(query, params)
        rows = cur.fetchall()
    return rows[:limit], len(rows) > limit


def get_anomaly(
    conn: psycopg.Connection, anomaly_id: int
) -> tuple[Anomaly, dict[str, Any] | None] | None:
    """The anomaly and the reading it was found in (in the API's reading shape; None when
    the reading is gone, e.g. its partition was dropped)."""
    with conn.cursor(row_factory=class_row(Anomaly)) as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM anomaly_detections WHERE id = %s",
            (anomaly_id,),
        )
        anomaly = cur.fetchone()
    if anomaly is None:
        return None
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(ONE_SQL, (anomaly.edge_id, anomaly.seq))
        reading = cur.fetchone()
    return anomaly, reading_json(reading) if reading else None
