"""Anomalies detected at the edge (and stored with their reading): the fleet feed, detail,
context, and the operator's workflow (open -> acknowledged -> resolved).

The feed is newest first and paged by an opaque cursor (the keyset of ``cloud/store/
anomalies.py``: reading time and id), so pages stay stable while new anomalies arrive; it
filters by machine, severity, state and time, and the live stream pushes new anomalies
(``anomaly``) and workflow steps (``anomaly_state``). Acknowledging and resolving is for
operators and admins, on the machines they may see (another machine's anomaly is a 404).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from cloud.api.deps import Db
from cloud.api.errors import ApiError
from cloud.api.guards import AnyUser, Operator, check_machine
from cloud.api.params import MachineId, RowId
from cloud.api.schemas_alerting import (
    AnomalyContextOut,
    AnomalyFeedOut,
    AnomalyWorkflowDetailOut,
    AnomalyWorkflowOut,
    Severity,
    State,
    WorkflowIn,
)
from cloud.audit import store as audit_store
from cloud.audit.context import AuditCtx, RequestInfo, snapshot
from cloud.fielderror import FieldError, NotFoundError
from cloud.store.anomalies import Anomaly, AnomalyFilter, get_anomaly, list_anomalies
from cloud.store.anomaly_workflow import TransitionError, anomaly_context, transition
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
        "severity": row.severity,
        "state": row.state,
        "acknowledged_by": row.acknowledged_by,
        "acknowledged_at": _ts(row.acknowledged_at),
        "ack_note": row.ack_note,
        "resolved_by": row.resolved_by,
        "resolved_at": _ts(row.resolved_at),
        "resolution_note": row.resolution_note,
    }


def _ts(value: datetime | None) -> str | None:
    return format_ts(value) if value is not None else None


@router.get(
    "/anomalies",
    response_model=AnomalyFeedOut,
    summary="The fleet's anomalies, newest first, paged with `next`",
)
async def anomalies(
    db: Db,
    user: AnyUser,
    machine_id: MachineId | None = None,
    method: Annotated[str | None, Query(max_length=32)] = None,
    sensor: Annotated[str | None, Query(max_length=64)] = None,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    severity: Severity | None = None,
    state: State | None = None,
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
        severity=severity,
        state=state,
        before=_decode_cursor(before) if before is not None else None,
    )
    page, more = await db.run(list_anomalies, where, limit)
    return {
        "anomalies": [_anomaly_out(r) for r in page],
        "next": _encode_cursor(page[-1].reading_ts, page[-1].id) if more else None,
    }


@router.get(
    "/anomalies/{anomaly_id}",
    response_model=AnomalyWorkflowDetailOut,
    summary="One anomaly with its detection details and the reading it was found in",
)
async def anomaly(anomaly_id: RowId, db: Db, user: AnyUser) -> dict[str, Any]:
    found = await db.run(get_anomaly, anomaly_id)
    if found is None or not user.may_see(found[0].machine_id):
        raise NotFoundError("anomaly_id", f"no anomaly {anomaly_id}")
    row, reading = found
    return {**_anomaly_out(row), "details": row.details, "reading": reading}


@router.get(
    "/anomalies/{anomaly_id}/context",
    response_model=AnomalyContextOut,
    summary="What the detail page shows: readings around it, contributing sensors with "
    "shares, the model and thresholds that judged it, similar past anomalies of its machine",
)
async def anomaly_context_view(
    anomaly_id: RowId,
    db: Db,
    user: AnyUser,
    window_s: Annotated[int, Query(ge=10, le=86_400, description="seconds each side")] = 300,
) -> dict[str, Any]:
    return await db.run(anomaly_context, anomaly_id, window_s, user.machines)


# An anomaly's workflow fields: what an acknowledge or resolve records before and after.
_WORKFLOW = ("machine_id", "state", "acknowledged_by", "ack_note", "resolved_by", "resolution_note")


async def _step(
    anomaly_id: int, action: str, body: WorkflowIn, db: Db, user: Any, ctx: RequestInfo
) -> Any:
    audit = ctx.entry(user, f"anomaly.{action}", f"anomaly:{anomaly_id}")
    work = audit_store.wrap(
        audit,
        transition,
        before=snapshot("anomaly_detections", only=_WORKFLOW, id=anomaly_id),
        after=lambda r: {k: getattr(r, k, None) for k in _WORKFLOW},
    )
    try:
        row = await db.run(work, anomaly_id, action, user.username, body.note, user.machines)
    except TransitionError as exc:
        raise ApiError(409, "state", str(exc)) from None
    return _anomaly_out(row)


@router.post(
    "/anomalies/{anomaly_id}/acknowledge",
    response_model=AnomalyWorkflowOut,
    summary="Acknowledge an open anomaly (who and when are recorded, with the note)",
    responses={409: {"description": "not open (already acknowledged or resolved)"}},
)
async def acknowledge(
    anomaly_id: RowId, body: WorkflowIn, db: Db, user: Operator, ctx: AuditCtx
) -> Any:
    return await _step(anomaly_id, "acknowledge", body, db, user, ctx)


@router.post(
    "/anomalies/{anomaly_id}/resolve",
    response_model=AnomalyWorkflowOut,
    summary="Resolve an open or acknowledged anomaly (who, when and the note are recorded)",
    responses={409: {"description": "already resolved"}},
)
async def resolve(
    anomaly_id: RowId, body: WorkflowIn, db: Db, user: Operator, ctx: AuditCtx
) -> Any:
    return await _step(anomaly_id, "resolve", body, db, user, ctx)
