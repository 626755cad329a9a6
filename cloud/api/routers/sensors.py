"""The sensor catalog and the custom-sensor registry (filled by ingest, annotated by admins).

``/api/admin/custom-sensors`` (GET/POST) keeps the prototype's path working
(``docs/manifest.md``, API Reference Quick Card).
"""

from __future__ import annotations

from typing import Any

import psycopg
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from cloud.accounts import User
from cloud.api.deps import Db
from cloud.api.guards import Admin, AnyUser, check_machine
from cloud.api.params import CustomSensorName, MachineId
from cloud.api.schemas import CatalogOut, CustomSensorOut, CustomSensorsOut, CustomSensorSpecOut
from cloud.audit import store as audit_store
from cloud.audit.context import AuditCtx, RequestInfo, snapshot
from cloud.fielderror import NotFoundError
from cloud.store import custom_sensors as registry
from cloud.store.custom_sensors import CustomSensor
from shared.catalog import CORE_SENSORS, PRIORITY_SENSORS, Category
from shared.message import format_ts

router = APIRouter(tags=["sensors"])


class CustomSensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    unit: str | None = Field(default=None, max_length=32)
    category: Category | None = None
    description: str | None = Field(default=None, max_length=1000)
    confirmed: bool = True


class CustomSensorRange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_range: float | None = Field(
        default=None, allow_inf_nan=False, description="low end of the measuring range"
    )
    max_range: float | None = Field(
        default=None, allow_inf_nan=False, description="high end; greater than min_range"
    )


class LegacyCustomSensor(CustomSensorSpec):
    name: CustomSensorName


def _catalog() -> CatalogOut:
    sensors = []
    for spec in CORE_SENSORS:
        t = spec.thresholds()
        sensors.append(
            {
                "name": spec.name,
                "unit": spec.unit,
                "category": spec.category,
                "typical": spec.typical,
                "min": spec.min_value,
                "max": spec.max_value,
                "critical_low": t.low,
                "critical_high": t.high,
                "warn_low": t.effective_warn_low,
                "warn_high": t.effective_warn_high,
                "priority": spec.name in PRIORITY_SENSORS,
            }
        )
    return CatalogOut.model_validate({"sensors": sensors})


_CATALOG = _catalog()


def _visible(sensor: CustomSensor, user: User) -> bool:
    # Registered by an admin but never seen (no machines yet): everybody may know of it.
    return (
        user.machines is None
        or not sensor.machines
        or any(user.may_see(m) for m in sensor.machines)
    )


def _custom_out(sensor: CustomSensor, user: User) -> dict[str, Any]:
    visible = [m for m in sensor.machines if user.may_see(m)]
    return {
        "name": sensor.name,
        "first_seen": format_ts(sensor.first_seen) if sensor.first_seen else None,
        "last_seen": format_ts(sensor.last_seen) if sensor.last_seen else None,
        "first_machine": sensor.first_machine if sensor.first_machine in visible else None,
        "machines": visible,
        "count": sensor.samples,
        "min": sensor.min_value,
        "max": sensor.max_value,
        "mean": sensor.mean,
        "unit": sensor.unit,
        "category": sensor.category,
        "description": sensor.description,
        "confirmed": sensor.confirmed,
    }


@router.get(
    "/api/v1/sensors",
    response_model=CatalogOut,
    summary="The 50 core sensors: units, ranges, default thresholds",
)
async def sensors(user: AnyUser) -> CatalogOut:
    return _CATALOG


@router.get(
    "/api/v1/custom-sensors",
    response_model=CustomSensorsOut,
    summary="Custom sensors seen at runtime",
)
async def custom_sensors(
    db: Db, user: AnyUser, machine_id: MachineId | None = None
) -> dict[str, Any]:
    if machine_id is not None:
        check_machine(user, machine_id)
    rows = await db.run(registry.list_custom_sensors, machine_id)
    return {"custom_sensors": [_custom_out(s, user) for s in rows if _visible(s, user)]}


@router.get(
    "/api/v1/custom-sensors/{name}", response_model=CustomSensorOut, summary="One custom sensor"
)
async def custom_sensor(name: CustomSensorName, db: Db, user: AnyUser) -> dict[str, Any]:
    sensor = await db.run(registry.get_custom_sensor, name)
    if sensor is None or not _visible(sensor, user):
        raise NotFoundError("name", f"no custom sensor {name!r}")
    return _custom_out(sensor, user)


# What an annotation changes: recorded before and after.
_SPEC = ("unit", "category", "description", "confirmed")


async def _annotate(
    db: Db, name: str, spec: CustomSensorSpec, user: User, ctx: RequestInfo
) -> dict[str, Any]:
    audit = ctx.entry(user, "custom_sensor.annotate", f"custom_sensor:{name}")
    sensor = await db.run(
        audit_store.wrap(
            audit,
            registry.annotate_custom_sensor,
            before=snapshot("custom_sensors", only=_SPEC, name=name),
            after=lambda s: {k: getattr(s, k, None) for k in _SPEC},
        ),
        name,
        unit=spec.unit,
        category=spec.category,
        description=spec.description,
        confirmed=spec.confirmed,
    )
    return _custom_out(sensor, user)


@router.put(
    "/api/v1/custom-sensors/{name}",
    response_model=CustomSensorOut,
    summary="Register or annotate a custom sensor: unit, category (admin)",
)
async def annotate_custom_sensor(
    name: CustomSensorName, body: CustomSensorSpec, db: Db, admin: Admin, ctx: AuditCtx
) -> dict[str, Any]:
    return await _annotate(db, name, body, admin, ctx)


_RANGE = ("min_range", "max_range")


@router.put(
    "/api/v1/custom-sensors/{name}/range",
    response_model=CustomSensorSpecOut,
    summary="Set a registered custom sensor's measuring range (admin)",
)
async def set_custom_sensor_range(
    name: CustomSensorName, body: CustomSensorRange, db: Db, admin: Admin, ctx: AuditCtx
) -> dict[str, Any]:
    # Imported here: the spec reader's module imports this router (its request models).
    from cloud.assistant.proposals import load_spec

    audit = ctx.entry(admin, "custom_sensor.range", f"custom_sensor:{name}")

    def work(conn: psycopg.Connection) -> dict[str, Any]:
        registry.set_range(conn, name, body.min_range, body.max_range, admin.username)
        return load_spec(conn, name)

    return await db.run(
        audit_store.wrap(
            audit,
            work,
            before=snapshot("custom_sensor_specs", only=_RANGE, name=name),
            after=lambda spec: {k: spec[k] for k in _RANGE},
        )
    )


@router.get(
    "/api/admin/custom-sensors",
    response_model=CustomSensorsOut,
    summary="Custom sensor registry (manifest path; admin)",
)
async def legacy_custom_sensors(db: Db, admin: Admin) -> dict[str, Any]:
    rows = await db.run(registry.list_custom_sensors, None)
    return {"custom_sensors": [_custom_out(s, admin) for s in rows]}


@router.post(
    "/api/admin/custom-sensors",
    response_model=CustomSensorOut,
    summary="Register or annotate a custom sensor (manifest path; admin)",
)
async def legacy_register_custom_sensor(
    body: LegacyCustomSensor, db: Db, admin: Admin, ctx: AuditCtx
) -> dict[str, Any]:
    return await _annotate(db, body.name, body, admin, ctx)
