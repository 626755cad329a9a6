"""Anomalies detected at the edge (and stored with their reading): list and detail.

The list is newest first and paged by an opaque cursor (the keyset of ``cloud/store/
anomalies.py``: reading time and id), so pages stay stable while new anomalies arrive.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from cloud.api.deps import Db
from cloud.api.guards import AnyUser, check_machine
from cloud.api.params import MachineId, RowId
from cloud.api.schemas import AnomalyDetailOut, AnomalyPageOut
from cloud.fielderror import FieldError, NotFoundError
from cloud.store.anomalies import Anomaly, AnomalyFilter, get_anomaly, list_anomalies
from shared.message import format_ts

router = APIRouter(prefix="/api/v1", tags=["anomalies"])

MAX_PAGE = 500


def _encode_cursor(ts: datetime, row_id: int) -> str:
    micros = int(ts.timestamp() * 1_000_000)
    return base64.urlsafe_b64encode(f"{micros}:{row_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        micros, row_id = raw.split(":")
        return datetime.fromtimestamp(int(micros) / 1_000_000, UTC), int(row_id)
    except (ValueError, UnicodeDecodeError, OverflowError, OSError):
        raise FieldError("before", "not a cursor from a previous page's 'next'") from None


def _anomaly_out(row: Anomaly) -> dict[str, Any]:
    return {
        "id": row.id,
        "machine_id": row.machine_id,
        "edge_id": row.edge_id,
        "seq": row.seq,
        "timestamp": format_ts(row.reading_ts),
        "method": row.detection_method,
        "score": row.anomaly_score,
        "sensors": list(row.detected_sensors),
        "detected_at": format_ts(row.created_at),
    }


@router.get(
    "/anomalies",
    response_model=AnomalyPageOut,
    summary="Anomalies, newest first, paged with `next`",
)
async def anomalies(
    db: Db,
    user: AnyUser,
    machine_id: MachineId | None = None,
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
    where = AnomalyFilter(
        machine_id=machine_id,
        visible=user.machines,
        method=method,
        sensor=sensor,
        start=start,
        end=end,
        before=_decode_cursor(before) if before is not None else None,
    )
    page, more = await db.run(list_anomalies, where, limit)
    return {
        "anomalies": [_anomaly_out(r) for r in page],
        "next": _encode_cursor(page[-1].reading_ts, page[-1].id) if more else None,
    }


@router.get(
    "/anomalies/{anomaly_id}",
    response_model=AnomalyDetailOut,
    summary="One anomaly with its detection details and the reading it was found in",
)
async def anomaly(anomaly_id: RowId, db: Db, user: AnyUser) -> dict[str, Any]:
    found = await db.run(get_anomaly, anomaly_id)
    if found is None or not user.may_see(found[0].machine_id):
        raise NotFoundError("anomaly_id", f"no anomaly {anomaly_id}")
    row, reading = found
    return {**_anomaly_out(row), "details": row.details, "reading": reading}
