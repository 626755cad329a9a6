"""GET /api/v1/edges: every edge as it last reported itself (``cloud.edge_fleet``), for the
fleet page. Operators and admins; a machine-scoped operator sees only the edges serving one
of their machines, and of those only their machines.

POST /api/v1/edges/status: an edge's status report sent alone (it had no readings to carry
it), with its ingest key like its readings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from cloud.api.deps import Db
from cloud.api.errors import ApiError
from cloud.api.guards import IngestEdge, Operator
from cloud.edge_fleet import list_edges, record_status
from cloud.scoring import INTEGRATOR_EDGE_PREFIX
from shared.edge_status import MAX_STATUS_BYTES, StatusError, parse_status
from shared.message import format_ts

router = APIRouter(prefix="/api/v1", tags=["edges"])


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EdgeInputOut(_Closed):
    healthy: bool = Field(description="every device of this input answers")
    last_reading_age_s: float | None = Field(
        description="seconds since the input's last reading, at the time of the report"
    )
    down: list[str] = Field(description="devices of this input that do not answer")


class EdgeOut(_Closed):
    edge_id: str
    first_seen: str
    last_seen: str = Field(description="the newest batch or status report from this edge")
    silent_s: float = Field(description="seconds since last_seen")
    status_reported_at: str | None = Field(
        description="when the edge made its newest status report (None: it never sent one)"
    )
    version: str | None = Field(description="rig-edge version")
    status: str | None = Field(description="ok, degraded or unhealthy, as the edge judges")
    uptime_s: float | None
    backlog: int | None = Field(description="readings buffered on the rig")
    dropped_total: int | None = Field(
        description="readings the rig lost since it started (full buffer, full queue)"
    )
    machines: list[str] = Field(description="machines this edge serves")
    inputs: dict[str, EdgeInputOut] = Field(description="health of each data source")
    models: dict[str, str] = Field(description="model version in service per machine")
    thresholds: dict[str, str] = Field(description="thresholds version in service per machine")


class EdgesOut(_Closed):
    edges: list[EdgeOut]


def _ts(value: datetime | None) -> str | None:
    return None if value is None else format_ts(value)


def _out(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "first_seen": _ts(row["first_seen"]),
        "last_seen": _ts(row["last_seen"]),
        "status_reported_at": _ts(row["status_reported_at"]),
        "silent_s": round(max(float(row["silent_s"]), 0.0), 1),
    }


@router.get("/edges", response_model=EdgesOut)
async def edges(db: Db, user: Operator) -> dict[str, Any]:
    """Every edge with its last report: last seen, version, backlog, drops, per-source
    health, the models and thresholds versions in service."""
    rows = await db.run(list_edges, user.machines)
    return {"edges": [_out(r) for r in rows]}


@router.post(
    "/edges/status",
    status_code=204,
    response_class=Response,
    summary="For edges: the edge's status report, sent alone",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "description": "shared/edge_status.py: v, edge_id, at, version, status, "
                        "uptime_s, backlog, dropped, inputs, machines, models, thresholds",
                    }
                }
            },
        }
    },
)
async def edge_status(request: Request, db: Db, edge: IngestEdge) -> Response:
    """The report of the key's edge (with the shared bootstrap key: the edge it names)."""
    raw = await request.body()
    if len(raw) > MAX_STATUS_BYTES:
        raise ApiError(413, "$", f"a status report is at most {MAX_STATUS_BYTES} bytes")
    try:
        doc = parse_status(raw)
    except StatusError as exc:
        raise ApiError(422, exc.field, exc.problem) from None
    named = doc["edge_id"]
    edge_id = edge.edge_id if edge.edge_id is not None else named
    if edge_id is None:
        raise ApiError(422, "edge_status.edge_id", "required with the shared ingest key")
    if named not in (None, edge_id) or not edge.may_write_edge(edge_id):
        raise ApiError(403, "edge_status.edge_id", f"this API key belongs to edge {edge.name!r}")
    if edge_id.startswith(INTEGRATOR_EDGE_PREFIX):
        raise ApiError(422, "edge_status.edge_id", "an integrator's post is not an edge")
    await db.run(record_status, {edge_id: doc})
    return Response(status_code=204)
