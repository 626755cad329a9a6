"""Machines and sensor history, downsampled to time buckets (min/max/avg per bucket)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Response
from psycopg import Error as PsycopgError
from psycopg import sql
from starlette.concurrency import run_in_threadpool

from cloud.api.deps import Services
from cloud.api.errors import ApiError
from shared.catalog import SENSOR_INDEX
from shared.message import CUSTOM_NAME_RE, MACHINE_ID_RE, format_ts

router = APIRouter(prefix="/api/v1", tags=["machines"])

MAX_POINTS = 5000


def _json(doc: Any) -> Response:
    return Response(orjson.dumps(doc), media_type="application/json")


@router.get("/machines", summary="Machines that have sent readings")
async def machines(services: Services) -> Response:
    def query() -> list[dict[str, Any]]:
        with services.pool.connection() as conn:
            rows = conn.execute(
                "SELECT m.machine_id, m.first_seen, coalesce(t.total, 0), t.last_timestamp "
                "FROM machines m LEFT JOIN reading_totals t USING (machine_id) "
                "ORDER BY m.machine_id").fetchall()
        return [{"machine_id": m, "first_seen": format_ts(f), "total_readings": int(n),
                 "last_timestamp": format_ts(t) if t else None} for m, f, n, t in rows]

    try:
        return _json({"machines": await run_in_threadpool(query)})
    except PsycopgError as exc:
        raise ApiError(503, "$", f"database unavailable: {type(exc).__name__}",
                       retry_after=5) from None


@router.get("/machines/{machine_id}/history",
            summary="One sensor's history, downsampled to at most `points` time buckets")
async def history(
    services: Services,
    machine_id: Annotated[str, Path(description="machine id")],
    sensor: Annotated[str, Query(description="core sensor or custom sensor name")],
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    points: Annotated[int, Query(ge=1, le=MAX_POINTS)] = 500,
) -> Response:
    if not MACHINE_ID_RE.match(machine_id):
        raise ApiError(422, "machine_id", "not a valid machine id")
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
    value = (sql.Identifier(sensor) if sensor in SENSOR_INDEX
             else sql.SQL("(custom_sensors->>{})::float8").format(sql.Literal(sensor)))
    query = sql.SQL(
        'SELECT date_bin(%(step)s, "timestamp", %(start)s) AS bucket, min({v}), max({v}), '
        "avg({v}), count({v}) FROM sensor_readings WHERE machine_id = %(machine)s "
        'AND "timestamp" >= %(start)s AND "timestamp" < %(end)s GROUP BY 1 ORDER BY 1'
    ).format(v=value)

    def run() -> list[dict[str, Any]]:
        with services.pool.connection() as conn:
            rows = conn.execute(query, {"step": step, "start": start, "end": end,
                                        "machine": machine_id}).fetchall()
        return [{"t": format_ts(b), "min": lo, "max": hi, "avg": avg, "n": n}
                for b, lo, hi, avg, n in rows if n]

    try:
        buckets = await run_in_threadpool(run)
    except PsycopgError as exc:
        raise ApiError(503, "$", f"database unavailable: {type(exc).__name__}",
                       retry_after=5) from None
    return _json({"machine_id": machine_id, "sensor": sensor, "from": format_ts(start),
                  "to": format_ts(end), "bucket_s": step.total_seconds(), "points": buckets})
