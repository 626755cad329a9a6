"""Anomalies detected at the edge (and stored with their reading): list and detail.

The list is newest first and paged by an opaque keyset cursor (reading time, id), so pages
stay stable while new anomalies arrive and a deep page costs what the first one does.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Path, Query
from psycopg import sql
from psycopg.rows import dict_row

from cloud.api.auth import AnyUser, check_machine
from cloud.api.dbcall import in_transaction
from cloud.api.deps import Services
from cloud.api.errors import ApiError
from cloud.readings import ONE_SQL, reading_json
from shared.message import MACHINE_ID_RE, format_ts

router = APIRouter(prefix="/api/v1", tags=["anomalies"])

MAX_PAGE = 500
_COLUMNS = (
    "id, edge_id, seq, reading_ts, machine_id, detection_method, anomaly_score, "
    "detected_sensors, details, created_at"
)


def _encode_cursor(ts: datetime, row_id: int) -> str:
    micros = int(ts.timestamp() * 1_000_000)
    return base64.urlsafe_b64encode(f"{micros}:{row_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        micros, row_id = raw.split(":")
        return datetime.fromtimestamp(int(micros) / 1_000_000, UTC), int(row_id)
    except (ValueError, UnicodeDecodeError, OverflowError, OSError):
        raise ApiError(422, "before", "not a cursor from a previous page's 'next'") from None


def _anomaly_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "machine_id": row["machine_id"],
        "edge_id": row["edge_id"],
        "seq": row["seq"],
        "timestamp": format_ts(row["reading_ts"]),
        "method": row["detection_method"],
        "score": row["anomaly_score"],
        "sensors": list(row["detected_sensors"]),
        "detected_at": format_ts(row["created_at"]),
    }


@router.get("/anomalies", summary="Anomalies, newest first, paged with `next`")
async def anomalies(
    services: Services,
    user: AnyUser,
    machine_id: Annotated[str | None, Query(pattern=MACHINE_ID_RE.pattern)] = None,
    method: Annotated[str | None, Query(max_length=32)] = None,
    sensor: Annotated[str | None, Query(max_length=64)] = None,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    before: Annotated[
        str | None, Query(max_length=200, description="cursor: a page's `next`")
    ] = None,
) -> dict[str, Any]:
    if machine_id is not None:
        check_machine(user, machine_id)
    conditions: list[sql.Composable] = []
    params: dict[str, Any] = {"limit": limit + 1}
    if machine_id is not None:
        conditions.append(sql.SQL("machine_id = %(machine)s"))
        params["machine"] = machine_id
    elif user.machines is not None:
        conditions.append(sql.SQL("machine_id = ANY(%(machines)s)"))
        params["machines"] = list(user.machines)
    if method is not None:
        conditions.append(sql.SQL("detection_method = %(method)s"))
        params["method"] = method
    if sensor is not None:
        conditions.append(sql.SQL("%(sensor)s = ANY(detected_sensors)"))
        params["sensor"] = sensor
    for name, value, op in (("from", start, ">="), ("to", end, "<")):
        if value is not None:
            params[name] = value if value.tzinfo else value.replace(tzinfo=UTC)
            conditions.append(sql.SQL(f"reading_ts {op} %({name})s"))
    if before is not None:
        params["cursor_ts"], params["cursor_id"] = _decode_cursor(before)
        conditions.append(sql.SQL("(reading_ts, id) < (%(cursor_ts)s, %(cursor_id)s)"))
    where = sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true")
    query = sql.SQL(
        f"SELECT {_COLUMNS} FROM anomaly_detections WHERE {{}} "
        "ORDER BY reading_ts DESC, id DESC LIMIT %(limit)s"
    ).format(where)

    def work(conn: psycopg.Connection) -> list[dict[str, Any]]:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)
            return cur.fetchall()

    rows = await in_transaction(services, work)
    page = rows[:limit]
    more = len(rows) > limit
    return {
        "anomalies": [_anomaly_json(r) for r in page],
        "next": _encode_cursor(page[-1]["reading_ts"], page[-1]["id"]) if more else None,
    }


@router.get(
    "/anomalies/{anomaly_id}",
    summary="One anomaly with its detection details and the reading it was found in",
)
async def anomaly(
    anomaly_id: Annotated[int, Path(ge=1, le=2**63 - 1)], services: Services, user: AnyUser
) -> dict[str, Any]:
    def work(conn: psycopg.Connection) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"SELECT {_COLUMNS} FROM anomaly_detections WHERE id = %s",  # type: ignore[arg-type]
                (anomaly_id,),
            )
            row = cur.fetchone()
            if row is None:
                return None, None
            cur.execute(ONE_SQL, (row["edge_id"], row["seq"]))  # type: ignore[arg-type]
            return row, cur.fetchone()

    row, reading = await in_transaction(services, work)
    if row is None or not user.may_see(row["machine_id"]):
        raise ApiError(404, "anomaly_id", f"no anomaly {anomaly_id}")
    return {
        **_anomaly_json(row),
        "details": row["details"],
        "reading": reading_json(reading) if reading else None,
    }
