"""Thresholds: read by every user, changed by admins, fleet-wide or per machine.

``/api/thresholds`` (GET/POST) keeps the manifest's prototype path working.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from cloud import thresholds
from cloud.api.auth import Admin, AnyUser, check_machine
from cloud.api.dbcall import in_transaction
from cloud.api.deps import Services
from cloud.api.errors import ApiError
from shared.catalog import SENSOR_INDEX
from shared.message import CUSTOM_NAME_RE, MACHINE_ID_RE

router = APIRouter(tags=["thresholds"])

MachineId = Annotated[str, Path(pattern=MACHINE_ID_RE.pattern, description="machine id")]
SensorName = Annotated[str, Path(description="core or custom sensor name")]


class ThresholdBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    critical_low: float | None = Field(default=None, allow_inf_nan=False)
    critical_high: float | None = Field(default=None, allow_inf_nan=False)
    warn_low: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="null: the manifest rule (critical_low × 1.1)",
    )
    warn_high: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="null: the manifest rule (critical_high × 0.9)",
    )


class LegacyThresholdBody(ThresholdBody):
    sensor: str
    machine_id: str | None = Field(default=None, pattern=MACHINE_ID_RE.pattern)


def _check_sensor(sensor: str) -> None:
    if sensor not in SENSOR_INDEX and not CUSTOM_NAME_RE.match(sensor):
        raise ApiError(422, "sensor", f"{sensor!r} is neither a core nor a custom sensor name")


async def _table(services: Services, machine_id: str | None) -> dict[str, Any]:
    entries = await in_transaction(services, lambda c: thresholds.effective(c, machine_id))
    return {
        "machine_id": machine_id,
        "thresholds": {name: e.as_json() for name, e in sorted(entries.items())},
    }


async def _set(
    services: Services, sensor: str, machine_id: str | None, body: ThresholdBody, username: str
) -> dict[str, Any]:
    _check_sensor(sensor)
    values = body.model_dump(include={"critical_low", "critical_high", "warn_low", "warn_high"})
    entry = await in_transaction(
        services, lambda c: thresholds.set_threshold(c, sensor, machine_id, values, username)
    )
    return {"machine_id": machine_id, "sensor": sensor, **entry.as_json()}


async def _clear(services: Services, sensor: str, machine_id: str | None) -> dict[str, Any]:
    _check_sensor(sensor)
    try:
        entry = await in_transaction(
            services, lambda c: thresholds.clear_threshold(c, sensor, machine_id)
        )
    except LookupError:
        raise ApiError(404, "sensor", f"no override for {sensor!r} to remove") from None
    return {"machine_id": machine_id, "sensor": sensor, "entry": entry.as_json() if entry else None}


@router.get(
    "/api/v1/thresholds", summary="Fleet-wide thresholds (catalog defaults with fleet overrides)"
)
async def fleet_thresholds(services: Services, user: AnyUser) -> dict[str, Any]:
    return await _table(services, None)


@router.put("/api/v1/thresholds/{sensor}", summary="Set a fleet-wide threshold (admin)")
async def set_fleet_threshold(
    sensor: SensorName, body: ThresholdBody, services: Services, admin: Admin
) -> dict[str, Any]:
    return await _set(services, sensor, None, body, admin.username)


@router.delete("/api/v1/thresholds/{sensor}", summary="Remove a fleet-wide override (admin)")
async def clear_fleet_threshold(
    sensor: SensorName, services: Services, admin: Admin
) -> dict[str, Any]:
    return await _clear(services, sensor, None)


@router.get(
    "/api/v1/machines/{machine_id}/thresholds", summary="Thresholds in force on one machine"
)
async def machine_thresholds(
    machine_id: MachineId, services: Services, user: AnyUser
) -> dict[str, Any]:
    check_machine(user, machine_id)
    return await _table(services, machine_id)


@router.put(
    "/api/v1/machines/{machine_id}/thresholds/{sensor}",
    summary="Override a threshold on one machine (admin)",
)
async def set_machine_threshold(
    machine_id: MachineId, sensor: SensorName, body: ThresholdBody, services: Services, admin: Admin
) -> dict[str, Any]:
    return await _set(services, sensor, machine_id, body, admin.username)


@router.delete(
    "/api/v1/machines/{machine_id}/thresholds/{sensor}",
    summary="Remove a machine's override (admin)",
)
async def clear_machine_threshold(
    machine_id: MachineId, sensor: SensorName, services: Services, admin: Admin
) -> dict[str, Any]:
    return await _clear(services, sensor, machine_id)


@router.get("/api/thresholds", summary="Thresholds (manifest path; admin)")
async def legacy_thresholds(
    services: Services,
    admin: Admin,
    machine_id: Annotated[str | None, Query(pattern=MACHINE_ID_RE.pattern)] = None,
) -> dict[str, Any]:
    return await _table(services, machine_id)


@router.post("/api/thresholds", summary="Set a threshold (manifest path; admin)")
async def legacy_set_threshold(
    body: LegacyThresholdBody, services: Services, admin: Admin
) -> dict[str, Any]:
    return await _set(services, body.sensor, body.machine_id, body, admin.username)
