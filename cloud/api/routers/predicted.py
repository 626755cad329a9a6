"""GET /api/v1/predicted-anomalies: the anomalies the edges' forecasts predict
(``cloud.store.predicted``): *predicted* while the forecast horizon runs, then *confirmed* by
an actual anomaly of that machine or *expired*. Any logged-in user, their machines only."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from cloud.api.deps import Db
from cloud.api.guards import AnyUser, check_machine
from cloud.api.params import MachineId
from cloud.store.predicted import Predicted, list_predicted
from shared.message import format_ts

router = APIRouter(prefix="/api/v1", tags=["anomalies"])

PredictedState = Literal["predicted", "confirmed", "expired"]


class PredictedOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int
    machine_id: str
    edge_id: str
    predicted_at: str = Field(description="the reading whose forecast predicted it")
    horizon_until: str = Field(description="an anomaly up to then confirms it, else it expires")
    probability: float = Field(description="probability_ahead of that reading")
    model_version: str | None
    state: PredictedState
    confirmed_by: int | None = Field(description="the anomaly that confirmed it")
    settled_at: str | None


class PredictedListOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    predicted: list[PredictedOut]


def _ts(value: datetime | None) -> str | None:
    return None if value is None else format_ts(value)


def _out(p: Predicted) -> dict[str, Any]:
    return {
        "id": p.id,
        "machine_id": p.machine_id,
        "edge_id": p.edge_id,
        "predicted_at": format_ts(p.predicted_at),
        "horizon_until": format_ts(p.horizon_until),
        "probability": p.probability,
        "model_version": p.model_version,
        "state": p.state,
        "confirmed_by": p.confirmed_by,
        "settled_at": _ts(p.settled_at),
    }


@router.get(
    "/predicted-anomalies",
    response_model=PredictedListOut,
    summary="Predicted anomalies, newest first: predicted, confirmed or expired",
)
async def predicted_anomalies(
    db: Db,
    user: AnyUser,
    machine_id: MachineId | None = None,
    state: PredictedState | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    if machine_id is not None:
        check_machine(user, machine_id)
    rows = await db.run(list_predicted, user.machines, machine_id, state, limit)
    return {"predicted": [_out(p) for p in rows]}
