"""Machines, their newest readings and sensor history (downsampled to time buckets).

These answers can be large (1000 readings of 50 sensors, 5000 buckets) and are polled by
every open dashboard, so they are serialised with orjson into a ready ``Response``: FastAPI
passes it through without a second validation. ``response_model`` still documents the body;
``cloud/api/test_response_models.py`` checks the bodies against it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Response

from cloud.api.deps import Db
from cloud.api.guards import AnyUser, check_machine
from cloud.api.params import MachineId, SensorName
from cloud.api.schemas import HistoryOut, LatestOut, MachinesOut
from cloud.readings import latest_readings
from cloud.store.history import MAX_POINTS, history_buckets, plan_history
from cloud.store.machines import list_machines
from shared.message import format_ts

router = APIRouter(prefix="/api/v1", tags=["machines"])


def _json(doc: Any) -> Response:
    return Response(orjson.dumps(doc), media_type="application/json")


@router.get(
    "/machines",
    response_model=MachinesOut,
    summary="Machines that have sent readings (those the user may see)",
)
async def machines(db: Db, user: AnyUser) -> Response:
    rows = await db.run(list_machines, user.machines)
    return _json(
        {
            "machines": [
                {
                    "machine_id": m.machine_id,
                    "first_seen": format_ts(m.first_seen),
                    "total_readings": m.total_readings,
                    "last_timestamp": format_ts(m.last_timestamp) if m.last_timestamp else None,
                }
                for m in rows
            ]
        }
    )


@router.get(
    "/machines/{machine_id}/latest",
    response_model=LatestOut,
    summary="The newest readings of a machine, oldest first",
)
async def latest(
    db: Db,
    user: AnyUser,
    machine_id: MachineId,
    limit: Annotated[int, Query(ge=1, le=1000)] = 30,
) -> Response:
    check_machine(user, machine_id)
    readings = await db.run(latest_readings, machine_id, limit)
    return _json({"machine_id": machine_id, "readings": readings})


@router.get(
    "/machines/{machine_id}/history",
    response_model=HistoryOut,
    summary="One sensor's history, downsampled to at most `points` time buckets",
)
async def history(
    db: Db,
    user: AnyUser,
    machine_id: MachineId,
    sensor: SensorName,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    points: Annotated[int, Query(ge=1, le=MAX_POINTS)] = 500,
) -> Response:
    check_machine(user, machine_id)
    window = plan_history(sensor, start, end, points)
    buckets = await db.run(history_buckets, machine_id, window)
    return _json(
        {
            "machine_id": machine_id,
            "sensor": sensor,
            "from": format_ts(window.start),
            "to": format_ts(window.end),
            "bucket_s": window.step.total_seconds(),
            "resolution": window.resolution,
            "points": [
                {"t": format_ts(b.t), "min": b.min, "max": b.max, "avg": b.avg, "n": b.n}
                for b in buckets
            ],
        }
    )
