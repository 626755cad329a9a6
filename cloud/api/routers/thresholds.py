"""Thresholds: read by every user, changed by admins, fleet-wide or per machine.

``/api/thresholds`` (GET/POST) keeps the prototype's path working
(``docs/manifest.md``, API Reference Quick Card).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from cloud import thresholds
from cloud.accounts import User
from cloud.api.deps import Db
from cloud.api.errors import ApiError
from cloud.api.guards import Admin, AnyUser, check_machine
from cloud.api.params import MachineId, SensorName
from cloud.api.schemas import ThresholdClearedOut, ThresholdSetOut, ThresholdTableOut
from cloud.audit import store as audit_store
from cloud.audit.context import AuditCtx, RequestInfo, snapshot

router = APIRouter(tags=["thresholds"])


class ThresholdBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    critical_low: float | None = Field(default=None, allow_inf_nan=False)
    critical_high: float | None = Field(default=None, allow_inf_nan=False)
    warn_low: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="null: the default rule, critical_low × 1.1",
    )
    warn_high: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="null: the default rule, critical_high × 0.9",
    )


class LegacyThresholdBody(ThresholdBody):
    sensor: SensorName
    machine_id: MachineId | None = None


async def _table(db: Db, machine_id: str | None) -> dict[str, Any]:
    entries = await db.run(thresholds.effective, machine_id)
    return {
        "machine_id": machine_id,
        "thresholds": {name: e.as_json() for name, e in sorted(entries.items())},
    }


# What a threshold change records as before (the override row; null: none).
_ROW = ("low", "high", "warn_low", "warn_high", "updated_by", "updated_at")


def _check_scope(admin: User, machine_id: str | None) -> None:
    """An admin assigned some machines changes only those: not another machine's override,
    nor a fleet-wide value that would apply to machines they cannot see."""
    if machine_id is not None:
        check_machine(admin, machine_id)
    elif admin.machines is not None:
        raise ApiError(
            403,
            "machine_id",
            f"admin {admin.username!r} is assigned only some machines: fleet-wide thresholds "
            "need an admin of every machine",
        )


async def _set(
    db: Db,
    sensor: str,
    machine_id: str | None,
    body: ThresholdBody,
    admin: User,
    ctx: RequestInfo,
) -> dict[str, Any]:
    _check_scope(admin, machine_id)
    values = body.model_dump(include={"critical_low", "critical_high", "warn_low", "warn_high"})
    audit = ctx.entry(admin, "threshold.set", f"threshold:{machine_id or '*'}/{sensor}")
    before = snapshot("thresholds", only=_ROW, sensor=sensor, machine_id=machine_id)
    work = audit_store.wrap(audit, thresholds.set_threshold, before=before)
    entry = await db.run(work, sensor, machine_id, values, admin.username)
    return {"machine_id": machine_id, "sensor": sensor, **entry.as_json()}


async def _clear(
    db: Db, sensor: str, machine_id: str | None, admin: User, ctx: RequestInfo
) -> dict[str, Any]:
    _check_scope(admin, machine_id)
    audit = ctx.entry(admin, "threshold.clear", f"threshold:{machine_id or '*'}/{sensor}")
    before = snapshot("thresholds", only=_ROW, sensor=sensor, machine_id=machine_id)
    work = audit_store.wrap(audit, thresholds.clear_threshold, before=before)
    entry = await db.run(work, sensor, machine_id)
    return {"machine_id": machine_id, "sensor": sensor, "entry": entry.as_json() if entry else None}


@router.get(
    "/api/v1/thresholds",
    response_model=ThresholdTableOut,
    summary="Fleet-wide thresholds (catalog defaults with fleet overrides)",
)
async def fleet_thresholds(db: Db, user: AnyUser) -> dict[str, Any]:
    return await _table(db, None)


@router.put(
    "/api/v1/thresholds/{sensor}",
    response_model=ThresholdSetOut,
    summary="Set a fleet-wide threshold (admin)",
)
async def set_fleet_threshold(
    sensor: SensorName, body: ThresholdBody, db: Db, admin: Admin, ctx: AuditCtx
) -> dict[str, Any]:
    return await _set(db, sensor, None, body, admin, ctx)


@router.delete(
    "/api/v1/thresholds/{sensor}",
    response_model=ThresholdClearedOut,
    summary="Remove a fleet-wide override (admin)",
)
async def clear_fleet_threshold(
    sensor: SensorName, db: Db, admin: Admin, ctx: AuditCtx
) -> dict[str, Any]:
    return await _clear(db, sensor, None, admin, ctx)


@router.get(
    "/api/v1/machines/{machine_id}/thresholds",
    response_model=ThresholdTableOut,
    summary="Thresholds in force on one machine",
)
async def machine_thresholds(machine_id: MachineId, db: Db, user: AnyUser) -> dict[str, Any]:
    check_machine(user, machine_id)
    return await _table(db, machine_id)


@router.put(
    "/api/v1/machines/{machine_id}/thresholds/{sensor}",
    response_model=ThresholdSetOut,
    summary="Override a threshold on one machine (admin)",
)
async def set_machine_threshold(
    machine_id: MachineId,
    sensor: SensorName,
    body: ThresholdBody,
    db: Db,
    admin: Admin,
    ctx: AuditCtx,
) -> dict[str, Any]:
    return await _set(db, sensor, machine_id, body, admin, ctx)


@router.delete(
    "/api/v1/machines/{machine_id}/thresholds/{sensor}",
    response_model=ThresholdClearedOut,
    summary="Remove a machine's override (admin)",
)
async def clear_machine_threshold(
    machine_id: MachineId, sensor: SensorName, db: Db, admin: Admin, ctx: AuditCtx
) -> dict[str, Any]:
    return await _clear(db, sensor, machine_id, admin, ctx)


@router.get(
    "/api/thresholds",
    response_model=ThresholdTableOut,
    summary="Thresholds (manifest path; admin)",
)
async def legacy_thresholds(
    db: Db, admin: Admin, machine_id: MachineId | None = None
) -> dict[str, Any]:
    return await _table(db, machine_id)


@router.post(
    "/api/thresholds",
    response_model=ThresholdSetOut,
    summary="Set a threshold (manifest path; admin)",
)
async def legacy_set_threshold(
    body: LegacyThresholdBody, db: Db, admin: Admin, ctx: AuditCtx
) -> dict[str, Any]:
    return await _set(db, body.sensor, body.machine_id, body, admin, ctx)
