"""The detector lifecycle over the API: the registry, retraining on demand, rollback, and the
signed bundles edges poll for."""

from __future__ import annotations

from typing import Any

import psycopg
from fastapi import APIRouter, Response

from cloud.api.deps import Db, Services
from cloud.api.guards import (
    Admin,
    AnyUser,
    IngestEdge,
    Operator,
    check_edge_machine,
    check_machine,
)
from cloud.api.params import MachineId, RowId
from cloud.api.routers import rul
from cloud.api.schemas import (
    EdgeModelOut,
    ModelOut,
    ModelsOut,
    PredictionsOut,
    RetrainOut,
    TrainingJobOut,
)
from cloud.audit import store as audit_store
from cloud.audit.context import AuditCtx
from cloud.fielderror import NotFoundError
from cloud.lifecycle import registry
from cloud.store.predictions import latest_predictions
from shared.message import format_ts

router = APIRouter(prefix="/api/v1", tags=["models"])
# The prototype's path (docs/manifest.md, API Reference Quick Card), outside /api/v1.
legacy_router = APIRouter(tags=["models"])


@router.get(
    "/models",
    response_model=ModelsOut,
    summary="Trained models with their validation metrics, newest first",
)
async def models(db: Db, user: AnyUser, machine_id: MachineId | None = None) -> dict[str, Any]:
    if machine_id is not None:
        check_machine(user, machine_id)
    return {"models": await db.run(registry.list_models, machine_id, user.machines)}


@router.get(
    "/machines/{machine_id}/model",
    response_model=ModelOut,
    summary="The model in service on a machine",
)
async def active_model(machine_id: MachineId, db: Db, user: AnyUser) -> dict[str, Any]:
    check_machine(user, machine_id)
    row = await db.run(registry.active, machine_id)
    if row is None:
        raise NotFoundError("machine_id", f"machine {machine_id!r} has no model in service")
    return row


@router.post(
    "/machines/{machine_id}/retrain",
    status_code=202,
    response_model=RetrainOut,
    summary="Queue a retraining of the machine's detector (operator, admin)",
)
async def retrain(machine_id: MachineId, db: Db, user: Operator, ctx: AuditCtx) -> dict[str, Any]:
    check_machine(user, machine_id)
    audit = ctx.entry(user, "model.retrain", f"machine:{machine_id}")
    work = audit_store.wrap(audit, registry.request_training, after=lambda j: {"job_id": j})
    job_id = await db.run(work, machine_id, user.username)
    return {"job_id": job_id, "status_url": f"/api/v1/training-jobs/{job_id}"}


@router.get(
    "/training-jobs/{job_id}",
    response_model=TrainingJobOut,
    summary="A retraining job's state and outcome",
)
async def training_job(job_id: RowId, db: Db, user: AnyUser) -> dict[str, Any]:
    row = await db.run(registry.job, job_id)
    if row is None or not user.may_see(row["machine_id"]):
        raise NotFoundError("job_id", f"no training job {job_id}")
    return row


@router.post(
    "/machines/{machine_id}/model/rollback",
    response_model=ModelOut,
    summary="Put the previous model back in service (admin)",
)
async def rollback(machine_id: MachineId, db: Db, admin: Admin, ctx: AuditCtx) -> dict[str, Any]:
    check_machine(admin, machine_id)  # an admin assigned some machines: only those
    audit = ctx.entry(admin, "model.rollback", f"machine:{machine_id}")
    work = audit_store.wrap(
        audit,
        registry.rollback,
        before=lambda c: _model_brief(registry.active(c, machine_id)),
        after=_model_brief,
    )
    return await db.run(work, machine_id, admin.username)


def _model_brief(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """The model in service as the audit trail records it (not its metrics or manifest)."""
    if row is None:
        return None
    return {k: row.get(k) for k in ("id", "version", "status", "strategy", "bundle_sha256")}


@router.get(
    "/edge/models/{machine_id}",
    response_model=EdgeModelOut,
    summary="For edges: the model in service on a machine (version and checksum)",
)
async def edge_model(
    machine_id: MachineId, services: Services, db: Db, edge: IngestEdge
) -> dict[str, Any]:
    await check_edge_machine(services, edge, machine_id)
    row = await db.run(registry.active_for_edge, machine_id)
    if row is None:
        raise NotFoundError("machine_id", f"machine {machine_id!r} has no model in service")
    return {
        "model_id": row["id"],
        "machine_id": machine_id,
        "version": row["version"],
        "strategy": row["strategy"],
        "bundle_sha256": row["bundle_sha256"],
        "bundle_url": f"/api/v1/edge/models/{machine_id}/bundle/{row['id']}",
        "statement": row["statement"],
    }


@router.get(
    "/edge/models/{machine_id}/bundle/{model_id}",
    response_class=Response,
    summary="For edges: a signed model bundle (tar.gz); verify before use",
    responses={
        200: {
            "description": "The bundle; its SHA-256 also in the X-Bundle-SHA256 header",
            "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
            "headers": {"X-Bundle-SHA256": {"schema": {"type": "string"}}},
        }
    },
)
async def edge_bundle(
    machine_id: MachineId, model_id: RowId, services: Services, db: Db, edge: IngestEdge
) -> Response:
    # Only the edge's machines, and only a model in service there: never a refused
    # candidate or a retired model (an edge gets an older one back through a rollback).
    await check_edge_machine(services, edge, machine_id)
    found = await db.run(_bundle_in_service, model_id)
    if found is None or found[0] != machine_id:
        raise NotFoundError(
            "model_id", f"no model {model_id} in service for machine {machine_id!r}"
        )
    _, data, sha256 = found
    return Response(
        data,
        media_type="application/gzip",
        headers={"X-Bundle-SHA256": sha256, "Cache-Control": "no-store"},
    )


def _bundle_in_service(conn: psycopg.Connection, model_id: int) -> tuple[str, bytes, str] | None:
    row = conn.execute(
        "SELECT machine_id, bundle, bundle_sha256 FROM model_registry "
        "WHERE id = %s AND status = 'active'",
        (model_id,),
    ).fetchone()
    return (row[0], bytes(row[1]), row[2]) if row else None


@legacy_router.get(
    "/api/lstm-predictions",
    response_model=PredictionsOut,
    summary="Latest predicted anomaly probability per machine (manifest path)",
)
async def lstm_predictions(db: Db, user: AnyUser) -> dict[str, Any]:
    """From the edge models' most recent scores of the last 15 minutes: the probability of an
    anomaly within the LSTM's forecast horizon, with the model version that computed it."""
    rows = await db.run(latest_predictions, user.machines)
    return {
        "predictions": {
            p.machine_id: {
                "timestamp": format_ts(p.timestamp),
                "probability_ahead": p.detection.get("probability_ahead"),
                "is_anomaly": p.detection.get("is_anomaly"),
                "score": p.detection.get("score"),
                "method": p.detection.get("method"),
                "model_version": p.detection.get("model_version"),
            }
            for p in rows
        }
    }


# Remaining useful life: the same lifecycle (registry kind 'rul'), its estimates and bands.
rul.register(router)
