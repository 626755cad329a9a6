"""The detector lifecycle over the API: the registry, retraining on demand, rollback, and the
signed bundles edges poll for."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from cloud.api.auth import Admin, AnyUser, IngestEdge, Operator, check_machine
from cloud.api.dbcall import in_transaction
from cloud.api.deps import Services
from cloud.api.errors import ApiError
from cloud.lifecycle import registry
from shared.message import MACHINE_ID_RE, format_ts

router = APIRouter(prefix="/api/v1", tags=["models"])
# The manifest's prototype path, outside /api/v1.
legacy_router = APIRouter(tags=["models"])

MachineId = Annotated[str, Path(pattern=MACHINE_ID_RE.pattern, description="machine id")]


@router.get("/models", summary="Trained models with their validation metrics, newest first")
async def models(
    services: Services,
    user: AnyUser,
    machine_id: Annotated[str | None, Query(pattern=MACHINE_ID_RE.pattern)] = None,
) -> dict[str, Any]:
    if machine_id is not None:
        check_machine(user, machine_id)
    rows = await in_transaction(
        services, lambda c: registry.list_models(c, machine_id, user.machines)
    )
    return {"models": rows}


@router.get("/machines/{machine_id}/model", summary="The model in service on a machine")
async def active_model(machine_id: MachineId, services: Services, user: AnyUser) -> dict[str, Any]:
    check_machine(user, machine_id)
    row = await in_transaction(services, lambda c: registry.active(c, machine_id))
    if row is None:
        raise ApiError(404, "machine_id", f"machine {machine_id!r} has no model in service")
    return row  # type: ignore[no-any-return]


@router.post(
    "/machines/{machine_id}/retrain",
    status_code=202,
    summary="Queue a retraining of the machine's detector (operator, admin)",
)
async def retrain(machine_id: MachineId, services: Services, user: Operator) -> dict[str, Any]:
    check_machine(user, machine_id)
    job_id = await in_transaction(
        services, lambda c: registry.request_training(c, machine_id, user.username)
    )
    return {"job_id": job_id, "status_url": f"/api/v1/training-jobs/{job_id}"}


@router.get("/training-jobs/{job_id}", summary="A retraining job's state and outcome")
async def training_job(
    job_id: Annotated[int, Path(ge=1, le=2**63 - 1)], services: Services, user: AnyUser
) -> dict[str, Any]:
    row = await in_transaction(services, lambda c: registry.job(c, job_id))
    if row is None or not user.may_see(row["machine_id"]):
        raise ApiError(404, "job_id", f"no training job {job_id}")
    return row  # type: ignore[no-any-return]


@router.post(
    "/machines/{machine_id}/model/rollback",
    summary="Put the previous model back in service (admin)",
)
async def rollback(machine_id: MachineId, services: Services, admin: Admin) -> dict[str, Any]:
    return await in_transaction(  # type: ignore[no-any-return]
        services, lambda c: registry.rollback(c, machine_id, admin.username)
    )


@router.get(
    "/edge/models/{machine_id}",
    summary="For edges: the model in service on a machine (version and checksum)",
)
async def edge_model(machine_id: MachineId, services: Services, edge: IngestEdge) -> dict[str, Any]:
    row = await in_transaction(services, lambda c: registry.active(c, machine_id))
    if row is None:
        raise ApiError(404, "machine_id", f"machine {machine_id!r} has no model in service")
    return {
        "model_id": row["id"],
        "machine_id": machine_id,
        "version": row["version"],
        "strategy": row["strategy"],
        "bundle_sha256": row["bundle_sha256"],
        "bundle_url": f"/api/v1/edge/models/{machine_id}/bundle/{row['id']}",
    }


@router.get(
    "/edge/models/{machine_id}/bundle/{model_id}",
    summary="For edges: a signed model bundle (tar.gz); verify before use",
)
async def edge_bundle(
    machine_id: MachineId,
    model_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    services: Services,
    edge: IngestEdge,
) -> Response:
    found = await in_transaction(services, lambda c: registry.bundle(c, model_id))
    if found is None or found[0] != machine_id:
        raise ApiError(404, "model_id", f"no model {model_id} for machine {machine_id!r}")
    _, data, sha256 = found
    return Response(
        data,
        media_type="application/gzip",
        headers={"X-Bundle-SHA256": sha256, "Cache-Control": "no-store"},
    )


_PREDICTIONS = """
SELECT t.machine_id, r."timestamp", r.detection
FROM reading_totals t
JOIN LATERAL (
    SELECT s."timestamp", s.detection FROM sensor_readings s
    WHERE s.machine_id = t.machine_id AND s."timestamp" > now() - interval '15 minutes'
      AND s.detection ? 'probability_ahead'
    ORDER BY s."timestamp" DESC LIMIT 1
) r ON true
WHERE %(all)s OR t.machine_id = ANY(%(machines)s)
ORDER BY t.machine_id
"""


@legacy_router.get(
    "/api/lstm-predictions",
    summary="Latest predicted anomaly probability per machine (manifest path)",
)
async def lstm_predictions(services: Services, user: AnyUser) -> dict[str, Any]:
    """From the edge models' most recent scores of the last 15 minutes: the probability of an
    anomaly within the LSTM's forecast horizon, with the model version that computed it."""

    def work(conn: Any) -> list[tuple[Any, ...]]:
        return conn.execute(  # type: ignore[no-any-return]
            _PREDICTIONS, {"all": user.machines is None, "machines": list(user.machines or ())}
        ).fetchall()

    rows = await in_transaction(services, work)
    return {
        "predictions": {
            machine: {
                "timestamp": format_ts(ts),
                "probability_ahead": detection.get("probability_ahead"),
                "is_anomaly": detection.get("is_anomaly"),
                "score": detection.get("score"),
                "method": detection.get("method"),
                "model_version": detection.get("model_version"),
            }
            for machine, ts, detection in rows
        }
    }
