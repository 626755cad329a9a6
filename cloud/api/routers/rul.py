"""Remaining useful life over the API: per machine the newest estimate (the manifest's shape:
``rul_hours``, interval, ``confidence``, ``degradation_trend``, ``critical_sensors``, model
version, time) and its history; the fleet view the dashboard polls; the colour bands of the
countdown (an admin setting); and, for edges, the RUL model in service and its rollback.

Added to ``cloud.api.routers.models``' router (the lifecycle's, under ``/api/v1``) by
``register``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from cloud.api.deps import Db, Services
from cloud.api.guards import Admin, AnyUser, IngestEdge, check_edge_machine, check_machine
from cloud.api.params import MachineId
from cloud.api.schemas import ModelOut, ModelStatementOut, Out
from cloud.fielderror import NotFoundError
from cloud.lifecycle import registry
from cloud.store import rul as store


class CriticalSensorOut(Out):
    sensor: str
    share: float = Field(description="share of the life this sensor's readings take away")


class IntervalOut(Out):
    low_hours: float
    high_hours: float
    level: float = Field(description="nominal probability that the true life is inside")


class RulModelOut(Out):
    version: str | None = Field(description="the bundle version that computed the estimate")
    model_id: int | None = Field(description="registry id of the model in service")
    registry_version: int | None
    validated_coverage: float | None = Field(
        description="interval coverage on the gate's held-out simulated runs"
    )


class RulOut(Out):
    machine_id: str
    status: Literal["ok", "no_model", "insufficient_history", "stale"]
    message: str | None = Field(description="why there is no number, or what it means")
    rul_hours: float | None = Field(description="estimated remaining useful life, hours")
    at_least: bool = Field(description="true: no wear seen, the life is at least rul_hours")
    interval: IntervalOut | None
    confidence: float | None = Field(description="the interval's calibrated level")
    degradation_trend: Literal["stable", "degrading", "accelerating"] | None
    trend_hours_per_hour: float | None = Field(
        description="slope of the estimates: hours of life lost per hour (-1: as the clock)"
    )
    critical_sensors: list[CriticalSensorOut]
    model: RulModelOut | None
    time: str | None = Field(description="when the newest estimate was made (reading time)")
    estimates: int = Field(
        description="estimates the answer rests on: the newest, at most 30 within 6 h of the last"
    )


class RulPointOut(Out):
    time: str
    rul_hours: float
    low_hours: float
    high_hours: float
    at_least: bool
    model_version: str | None
    critical_sensors: list[CriticalSensorOut]


class RulHistoryOut(Out):
    machine_id: str
    points: list[RulPointOut]


class BandsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    green_hours: float = Field(gt=0, le=1e6, description="green above this many hours")
    yellow_hours: float = Field(gt=0, le=1e6, description="yellow above this, red below")


class BandsOut(Out):
    green_hours: float
    yellow_hours: float


class FleetRulOut(Out):
    machines: list[RulOut]
    bands: BandsOut


class EdgeRulModelOut(Out):
    model_id: int
    machine_id: str
    version: int
    kind: Literal["rul"]
    bundle_sha256: str
    bundle_url: str
    # Signed model statement (shared/model_statement.py); null: registered without one.
    statement: ModelStatementOut | None


async def machine_rul(machine_id: MachineId, db: Db, user: AnyUser) -> dict[str, Any]:
    check_machine(user, machine_id)
    return await db.run(store.machine_rul, machine_id)


async def rul_history(
    machine_id: MachineId,
    db: Db,
    user: AnyUser,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1440,
) -> dict[str, Any]:
    check_machine(user, machine_id)
    return await db.run(store.history, machine_id, since, until, limit)


async def fleet_rul(db: Db, user: AnyUser) -> dict[str, Any]:
    return await db.run(store.fleet_rul, user.machines)


async def get_bands(db: Db, user: AnyUser) -> dict[str, float]:
    return (await db.run(store.bands)).as_json()


async def put_bands(body: BandsIn, db: Db, admin: Admin) -> dict[str, float]:
    result = await db.run(store.set_bands, body.green_hours, body.yellow_hours, admin.username)
    return result.as_json()


async def rollback_rul(machine_id: MachineId, db: Db, admin: Admin) -> dict[str, Any]:
    check_machine(admin, machine_id)  # an admin assigned some machines: only those
    return await db.run(registry.rollback, machine_id, admin.username, "rul")


async def edge_rul_model(
    machine_id: MachineId, services: Services, db: Db, edge: IngestEdge
) -> dict[str, Any]:
    await check_edge_machine(services, edge, machine_id)
    row = await db.run(registry.active_for_edge, machine_id, "rul")
    if row is None:
        raise NotFoundError("machine_id", f"machine {machine_id!r} has no RUL model in service")
    return {
        "model_id": row["id"],
        "machine_id": machine_id,
        "version": row["version"],
        "kind": "rul",
        "bundle_sha256": row["bundle_sha256"],
        "bundle_url": f"/api/v1/edge/models/{machine_id}/bundle/{row['id']}",
        "statement": row["statement"],
    }


def register(router: APIRouter) -> None:
    """Add the RUL routes to ``router`` (the lifecycle's, under ``/api/v1``): plain routes,
    so everything that walks the API's routers sees them."""
    router.get(
        "/machines/{machine_id}/rul",
        response_model=RulOut,
        summary="Remaining useful life of a machine: estimate, interval, trend, critical sensors",
        tags=["rul"],
    )(machine_rul)
    router.get(
        "/machines/{machine_id}/rul/history",
        response_model=RulHistoryOut,
        summary="A machine's RUL estimates over time, oldest first",
        tags=["rul"],
    )(rul_history)
    router.get(
        "/rul",
        response_model=FleetRulOut,
        summary="Every visible machine's remaining useful life, with the dashboard's bands",
        tags=["rul"],
    )(fleet_rul)
    router.put(
        "/rul/bands",
        response_model=BandsOut,
        summary="Set the countdown's colour bands (admin): green above green_hours, red below "
        "yellow_hours",
        tags=["rul"],
    )(put_bands)
    router.post(
        "/machines/{machine_id}/rul/model/rollback",
        response_model=ModelOut,
        summary="Put the previous RUL model back in service (admin)",
        tags=["rul"],
    )(rollback_rul)
    router.get(
        "/edge/models/{machine_id}/rul",
        response_model=EdgeRulModelOut,
        summary="For edges: the RUL model in service on a machine (version and checksum)",
        tags=["rul"],
    )(edge_rul_model)
    router.get(
        "/rul/bands",
        response_model=BandsOut,
        summary="Colour bands of the countdown",
        tags=["rul"],
    )(get_bands)
