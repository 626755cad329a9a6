"""The audit trail for admins and auditors: the filtered list (JSON, CSV or PDF), chain
verification, and signing the chain heads on demand (cloud/audit/, docs/audit.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from cloud.api.deps import Db
from cloud.api.errors import ApiError
from cloud.api.guards import Admin
from cloud.audit import export, store
from cloud.audit.context import AuditCtx
from cloud.audit.settings import current

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])

# One request reads at most this many rows (the viewer pages with `before`).
PAGE_MAX = 1000
EXPORT_MAX = {"csv": 50_000, "pdf": 2_000}
# PostgreSQL text cannot hold NUL: refused as invalid input (422), not a database error.
_NO_NUL = r"^[^\x00]*$"


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AuditEventOut(_Out):
    category: str
    seq: int
    at: str
    actor: str | None
    role: str | None
    ip: str | None
    user_agent: str | None
    source: str | None
    action: str
    resource: str
    outcome: str
    before: Any
    after: Any
    detail: dict[str, Any]
    hash: str
    prev_hash: str


class BurstOut(_Out):
    kind: Literal["ip", "account"]
    who: str
    failures: int
    first: str
    last: str


class AuditPageOut(_Out):
    events: list[AuditEventOut]
    bursts: list[BurstOut]
    next_before: str | None
    next_before_seq: int | None


class ProblemOut(_Out):
    category: str
    seq: int | None
    kind: str
    message: str


class ChainOut(_Out):
    rows: int
    head_seq: int
    base_seq: int


class VerifyOut(_Out):
    ok: bool
    problem: ProblemOut | None
    chains: dict[str, ChainOut]
    checkpoints_checked: int
    latest_checkpoint: str | None
    signature_checked: bool


class CheckpointOut(_Out):
    statement: str
    key_id: str
    signature: str


_FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/pdf": {"schema": {"type": "string", "format": "binary"}},
        }
    }
}


def _verify(conn: psycopg.Connection) -> dict[str, Any]:
    settings = current()
    return store.verify(conn, store.configured_public_key(settings), settings.checkpoint_file)


@router.get(
    "",
    response_model=AuditPageOut,
    responses=_FILE_RESPONSES,
    summary="Audit events, newest first, filtered (admin); format=csv or pdf: an export, "
    "itself recorded",
)
async def audit_events(
    db: Db,
    admin: Admin,
    ctx: AuditCtx,
    actor: Annotated[str | None, Query(max_length=128, pattern=_NO_NUL)] = None,
    action: Annotated[
        str | None, Query(max_length=64, pattern=_NO_NUL, description="a prefix")
    ] = None,
    resource: Annotated[
        str | None, Query(max_length=256, pattern=_NO_NUL, description="a substring")
    ] = None,
    category: Literal["auth", "change", "export", "audit"] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before: Annotated[datetime | None, Query(description="paging: older than this")] = None,
    before_seq: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 200,
    output: Annotated[
        Literal["json", "csv", "pdf"], Query(alias="format", description="csv, pdf: a download")
    ] = "json",
) -> Any:
    for name, value in (("since", since), ("until", until), ("before", before)):
        if value is not None and value.tzinfo is None:
            raise ApiError(422, name, f"{name} needs a time zone (e.g. 2026-11-29T12:00:00Z)")
    filters = store.Filters(
        actor=actor,
        action=action,
        resource=resource,
        category=category,
        since=since,
        until=until,
        before_at=before,
        before_seq=before_seq,
    )
    if output == "json":

        def page(conn: psycopg.Connection) -> dict[str, Any]:
            events = store.query(conn, filters, limit)
            last = events[-1] if len(events) == limit else None
            return {
                "events": events,
                "bursts": store.failed_login_bursts(conn, filters),
                "next_before": last["at"] if last else None,
                "next_before_seq": last["seq"] if last else None,
            }

        return await db.run(page)
    described = {
        "actor": actor,
        "action": action,
        "resource": resource,
        "category": category,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
    }

    def export_rows(conn: psycopg.Connection) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        rows = store.query(conn, filters, EXPORT_MAX[output])
        # The export is an event of its own, committed with the read.
        store.append(
            conn,
            ctx.entry(
                admin,
                f"audit.export_{output}",
                "audit_log",
                category="export",
                detail={"filters": {k: v for k, v in described.items() if v}, "rows": len(rows)},
            ),
        )
        return rows, _verify(conn)

    rows, verification = await db.run(export_rows)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if output == "csv":
        body = export.to_csv(rows)
        media = "text/csv; charset=utf-8"
    else:
        body = await run_in_threadpool(
            export.to_pdf, rows, described, verification, admin.username, stamp
        )
        media = "application/pdf"
    return Response(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="rig-alpha-audit-{stamp}.{output}"'},
    )


@router.get(
    "/verify",
    response_model=VerifyOut,
    summary="Verify every chain and signed checkpoint; the first edited, deleted or inserted "
    "row (admin)",
)
async def verify_chain(db: Db, admin: Admin) -> dict[str, Any]:
    return await db.run(_verify)


@router.post(
    "/checkpoint",
    response_model=CheckpointOut,
    status_code=201,
    summary="Sign the chain heads now with the audit signing key (admin)",
    responses={409: {"description": "no signing key configured on this server"}},
)
async def sign_now(db: Db, admin: Admin) -> dict[str, Any]:
    settings = current()
    if settings.signing_key_file is None:
        raise ApiError(
            409,
            "$",
            "no RIG_AUDIT_SIGNING_KEY_FILE on this server: sign with `rig-cloud audit sign`",
        )
    key = str(settings.signing_key_file)
    checkpoint = await db.run(store.create_checkpoint, key, settings.checkpoint_file)
    return checkpoint.as_json()
