"""Machines and sensor history, downsampled to time buckets (min/max/avg per bucket)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
import psycopg
from fastapi import APIRouter, Path, Query, Response
from psycopg import sql

from cloud.api.auth import AnyUser, check_machine
from cloud.api.dbcall import in_transaction
from cloud.api.deps import Services
from cloud.api.errors import ApiError
from cloud.readings import latest_readings
from shared.catalog import SENSOR_INDEX
from shared.message import CUSTOM_NAME_RE, MACHINE_ID_RE, format_ts

router = APIRouter(prefix="/api/v1", tags=["machines"])

MachineId = Annotated[str, Path(pattern=MACHINE_ID_RE.pattern, description="machine id")]

MAX_POINTS = 5000


def _json(doc: Any) -> Response:
    return Response(orjson.dumps(doc), media_type="application/json")


@router.get("/machines", summary="Machines that have sent readings (those the user may see)")
async def machines(services: Services, user: AnyUser) -> Response:
    def query(conn: psycopg.Connection) -> list[dict[str, Any]]:
        rows = conn.execute(
            "SELECT m.machine_id, m.first_seen, coalesce(t.total, 0), t.last_timestamp "
            "FROM machines m LEFT JOIN reading_totals t USING (machine_id) "
            "WHERE %(all)s OR m.machine_id = ANY(%(machines)s) ORDER BY m.machine_id",
            {"all": user.machines is None, "machines": list(user.machines or ())},
        ).fetchall()
        return [
            {
                "machine_id": m,
                "first_seen": format_ts(f),
                "total_readings": int(n),
                "last_timestamp": format_ts(t) if t else None,
            }
            for m, f, n, t in rows
        ]

    return _json({"machines": await in_transaction(services, query)})


@router.get(
    "/machines/{machine_id}/latest", summary="The newest readings of a machine, oldest first"
)
async def latest(
    services: Services,
    user: AnyUser,
    machine_id: MachineId,
    limit: Annotated[int, Query(ge=1, le=1000)] = 30,
) -> Response:
    check_machine(user, machine_id)
    readings = await in_transaction(services, lambda c: latest_readings(c, machine_id, limit))
    return _json({"machine_id": machine_id, "readings": readings})


@router.get(
    "/machines/{machine_id}/history",
    summary="One sensor's history, downsampled to at most `points` time buckets",
)
async def history(
    services: Services,
    user: AnyUser,
    machine_id: MachineId,
    sensor: Annotated[str, Query(description="core sensor or custom sensor name")],
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    points: Annotated[int, Query(ge=1, le=MAX_POINTS)] = 500,
) -> Response:
    check_machine(user, machine_id)
    if sensor not in SENSOR_INDEX and not CUSTOM_NAME_RE.match(sensor):
        raise ApiError(422, "sensor", f"{sensor!r} is neither a core nor a custom sensor name")
    # Naive times are taken as UTC, like reading timestamps.
    end = end or datetime.now(UTC)
    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    start = start or end - timedelta(hours=1)
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    if start >= end:
        raise ApiError(422, "from", "must be before 'to'")
    step = max(timedelta(milliseconds=1), (end - start) / points)
    if sensor in SENSOR_INDEX and step >= timedelta(minutes=1):
        # Buckets of whole minutes come from the per-minute rollups: 60x fewer rows than raw
        # 1 Hz data, and min/max/avg merge exactly. The range widens to whole minutes.
        step = timedelta(minutes=math.ceil(step.total_seconds() / 60))
        start = start.replace(second=0, microsecond=0)
        query = sql.SQL(
            "SELECT date_bin(%(step)s, minute, %(start)s) AS bucket, min({lo}), max({hi}), "
            "sum({total}) / nullif(sum({n}), 0), sum({n}) FROM sensor_minute_rollup "
            "WHERE machine_id = %(machine)s AND minute >= %(start)s AND minute < %(end)s "
            "GROUP BY 1 ORDER BY 1"
        ).format(
            lo=sql.Identifier(f"{sensor}_min"),
            hi=sql.Identifier(f"{sensor}_max"),
            total=sql.Identifier(f"{sensor}_sum"),
            n=sql.Identifier(f"{sensor}_n"),
        )
        resolution = "minute"
    else:
        value = (
            sql.Identifier(sensor)
            if sensor in SENSOR_INDEX
            else sql.SQL("(custom_sensors->>{})::float8").format(sql.Literal(sensor))
        )
        query = sql.SQL(
            'SELECT date_bin(%(step)s, "timestamp", %(start)s) AS bucket, min({v}), max({v}), '
            "avg({v}), count({v}) FROM sensor_readings WHERE machine_id = %(machine)s "
            'AND "timestamp" >= %(start)s AND "timestamp" < %(end)s GROUP BY 1 ORDER BY 1'
        ).format(v=value)
        resolution = "raw"

    def run(conn: psycopg.Connection) -> list[dict[str, Any]]:
        rows = conn.execute(
            query, {"step": step, "start": start, "end": end, "machine": machine_id}
        ).fetchall()
        return [
            {"t": format_ts(b), "min": lo, "max": hi, "avg": avg, "n": int(n)}
            for b, lo, hi, avg, n in rows
            if n
        ]

    buckets = await in_transaction(services, run)
    return _json(
        {
            "machine_id": machine_id,
            "sensor": sensor,
            "from": format_ts(start),
            "to": format_ts(end),
            "bucket_s": step.total_seconds(),
            "resolution": resolution,
            "points": buckets,
        }
    )
