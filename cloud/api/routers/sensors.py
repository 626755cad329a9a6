"""The sensor catalog and the custom-sensor registry (filled by ingest, annotated by admins).

``/api/admin/custom-sensors`` (GET/POST) keeps the manifest's prototype path working.
"""

from __future__ import annotations

from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from cloud.api.auth import Admin, AnyUser, check_machine
from cloud.api.dbcall import in_transaction
from cloud.api.deps import Services
from cloud.api.errors import ApiError
from cloud.auth import User
from shared.catalog import CORE_SENSORS, PRIORITY_SENSORS, SENSOR_INDEX, Category
from shared.message import CUSTOM_NAME_RE, MACHINE_ID_RE, format_ts

router = APIRouter(tags=["sensors"])

CustomName = Annotated[str, Path(pattern=CUSTOM_NAME_RE.pattern, description="custom sensor")]


class CustomSensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    unit: str | None = Field(default=None, max_length=32)
    category: Category | None = None
    description: str | None = Field(default=None, max_length=1000)
    confirmed: bool = True


class LegacyCustomSensor(CustomSensorSpec):
    name: str = Field(pattern=CUSTOM_NAME_RE.pattern)


def _catalog() -> list[dict[str, Any]]:
    out = []
    for spec in CORE_SENSORS:
        t = spec.thresholds()
        out.append(
            {
                "name": spec.name,
                "unit": spec.unit,
                "category": spec.category.value,
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
    return out


_CATALOG = {"sensors": _catalog()}

_SELECT_CUSTOM = (
    "SELECT name, first_seen, last_seen, first_machine, machines, samples, min_value, "
    "max_value, sum_value, unit, category, description, confirmed FROM custom_sensors"
)


def _custom_json(row: tuple[Any, ...], user: User) -> dict[str, Any]:
    (
        name,
        first,
        last,
        first_machine,
        machines,
        samples,
        low,
        high,
        total,
        unit,
        category,
        description,
        confirmed,
    ) = row
    visible = [m for m in machines if user.may_see(m)]
    return {
        "name": name,
        "first_seen": format_ts(first) if first else None,
        "last_seen": format_ts(last) if last else None,
        "first_machine": first_machine if first_machine in visible else None,
        "machines": visible,
        "count": samples,
        "min": low,
        "max": high,
        "mean": total / samples if samples else None,
        "unit": unit,
        "category": category,
        "description": description,
        "confirmed": confirmed,
    }


def _list_custom(conn: psycopg.Connection, machine_id: str | None) -> list[tuple[Any, ...]]:
    if machine_id is None:
        return conn.execute(f"{_SELECT_CUSTOM} ORDER BY name").fetchall()  # type: ignore[arg-type]
    return conn.execute(
        f"{_SELECT_CUSTOM} WHERE machines @> ARRAY[%s] ORDER BY name",  # type: ignore[arg-type]
        (machine_id,),
    ).fetchall()


def _visible(row: tuple[Any, ...], user: User) -> bool:
    # Registered by an admin but never seen (no machines yet): everybody may know of it.
    return user.machines is None or not row[4] or any(user.may_see(m) for m in row[4])


@router.get("/api/v1/sensors", summary="The 50 core sensors: units, ranges, default thresholds")
async def sensors(user: AnyUser) -> dict[str, Any]:
    return _CATALOG


@router.get("/api/v1/custom-sensors", summary="Custom sensors seen at runtime")
async def custom_sensors(
    services: Services,
    user: AnyUser,
    machine_id: Annotated[str | None, Query(pattern=MACHINE_ID_RE.pattern)] = None,
) -> dict[str, Any]:
    if machine_id is not None:
        check_machine(user, machine_id)
    rows = await in_transaction(services, lambda c: _list_custom(c, machine_id))
    return {"custom_sensors": [_custom_json(r, user) for r in rows if _visible(r, user)]}


@router.get("/api/v1/custom-sensors/{name}", summary="One custom sensor")
async def custom_sensor(name: CustomName, services: Services, user: AnyUser) -> dict[str, Any]:
    rows = await in_transaction(
        services,
        lambda c: c.execute(f"{_SELECT_CUSTOM} WHERE name = %s", (name,)).fetchall(),  # type: ignore[arg-type]
    )
    if not rows or not _visible(rows[0], user):
        raise ApiError(404, "name", f"no custom sensor {name!r}")
    return _custom_json(rows[0], user)


async def _annotate(
    services: Services, name: str, spec: CustomSensorSpec, user: User
) -> dict[str, Any]:
    if name in SENSOR_INDEX:
        raise ApiError(422, "name", f"{name!r} is a core sensor")

    def work(conn: psycopg.Connection) -> tuple[Any, ...]:
        conn.execute(
            "INSERT INTO custom_sensors (name, samples, sum_value, unit, category, description, "
            "confirmed) VALUES (%s, 0, 0, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
            "unit = excluded.unit, category = excluded.category, "
            "description = excluded.description, confirmed = excluded.confirmed",
            (
                name,
                spec.unit,
                spec.category.value if spec.category else None,
                spec.description,
                spec.confirmed,
            ),
        )
        return conn.execute(f"{_SELECT_CUSTOM} WHERE name = %s", (name,)).fetchone()  # type: ignore[arg-type,return-value]

    return _custom_json(await in_transaction(services, work), user)


@router.put(
    "/api/v1/custom-sensors/{name}",
    summary="Register or annotate a custom sensor: unit, category (admin)",
)
async def annotate_custom_sensor(
    name: CustomName, body: CustomSensorSpec, services: Services, admin: Admin
) -> dict[str, Any]:
    return await _annotate(services, name, body, admin)


@router.get("/api/admin/custom-sensors", summary="Custom sensor registry (manifest path; admin)")
async def legacy_custom_sensors(services: Services, admin: Admin) -> dict[str, Any]:
    rows = await in_transaction(services, lambda c: _list_custom(c, None))
    return {"custom_sensors": [_custom_json(r, admin) for r in rows]}


@router.post(
    "/api/admin/custom-sensors",
    summary="Register or annotate a custom sensor (manifest path; admin)",
)
async def legacy_register_custom_sensor(
    body: LegacyCustomSensor, services: Services, admin: Admin
) -> dict[str, Any]:
    return await _annotate(services, body.name, body, admin)
