"""Alerting through the API: alerts with their notifications' delivery results for every user
(a scoped user sees its machines' alerts only), and the rules, channels and silences that
admins manage. Everything is validated by ``cloud/alerting/config.py``: a refusal is a 422
naming the field (``params.count``, ``config.url``, ``ends_at``). The evaluation itself runs
in ``rig-cloud alerts`` (cloud/alerting/service.py)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from cloud.alerting import store
from cloud.alerting.config import ChannelIn, ChannelPatch, RuleIn, RulePatch, SilenceIn
from cloud.api.deps import Db
from cloud.api.guards import Admin, AnyUser, check_machine
from cloud.api.params import MachineId, RowId
from cloud.api.schemas_alerting import (
    AlertListOut,
    ChannelListOut,
    ChannelOut,
    RuleListOut,
    RuleOut,
    SilenceListOut,
    SilenceOut,
)
from cloud.audit import store as audit_store
from cloud.audit.context import AuditCtx, snapshot

router = APIRouter(prefix="/api/v1", tags=["alerting"])


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


@router.get("/alerts", response_model=AlertListOut, summary="Alerts, newest first")
async def alerts(
    db: Db,
    user: AnyUser,
    status: Literal["firing", "resolved"] | None = None,
    machine_id: MachineId | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    if machine_id is not None:
        check_machine(user, machine_id)
    rows = await db.run(store.list_alerts, user.machines, status, machine_id, limit)
    for row in rows:
        for key in ("started_at", "updated_at", "resolved_at"):
            row[key] = _iso(row[key])
        for n in row["notifications"]:
            n["created_at"] = _iso(n["created_at"])
            n["sent_at"] = _iso(n["sent_at"])
    return {"alerts": rows}


# --- rules ----------------------------------------------------------------------------------


@router.get("/alerting/rules", response_model=RuleListOut, summary="Alert rules")
async def rules(db: Db, user: Admin) -> dict[str, Any]:
    return {"rules": [asdict(r) for r in await db.run(store.list_rules)]}


def _public(value: Any) -> Any:
    """A rule, channel or silence as the audit trail records it: a channel's config (URLs
    with tokens, SMTP passwords) is left out (sealed in the detail instead)."""
    return {k: v for k, v in asdict(value).items() if k != "config"}


_NO_CONFIG = ("config",)


@router.post("/alerting/rules", response_model=RuleOut, status_code=201, summary="Add a rule")
async def add_rule(body: RuleIn, db: Db, user: Admin, ctx: AuditCtx) -> dict[str, Any]:
    audit = ctx.entry(user, "alert_rule.create", f"alert_rule:{body.name}")
    work = audit_store.wrap(audit, store.create_rule, after=_public)
    return asdict(await db.run(work, body, user.username))


@router.patch("/alerting/rules/{rule_id}", response_model=RuleOut, summary="Change a rule")
async def change_rule(
    rule_id: RowId, body: RulePatch, db: Db, user: Admin, ctx: AuditCtx
) -> dict[str, Any]:
    audit = ctx.entry(user, "alert_rule.change", f"alert_rule:{rule_id}")
    before = snapshot("alert_rules", id=rule_id)
    work = audit_store.wrap(audit, store.update_rule, before=before, after=_public)
    return asdict(await db.run(work, rule_id, body))


@router.delete("/alerting/rules/{rule_id}", status_code=204, summary="Delete a rule")
async def remove_rule(rule_id: RowId, db: Db, user: Admin, ctx: AuditCtx) -> Response:
    audit = ctx.entry(user, "alert_rule.delete", f"alert_rule:{rule_id}")
    before = snapshot("alert_rules", id=rule_id)
    await db.run(audit_store.wrap(audit, store.delete_rule, before=before), rule_id)
    return Response(status_code=204)


# --- channels -------------------------------------------------------------------------------


@router.get("/alerting/channels", response_model=ChannelListOut, summary="Channels")
async def channels(db: Db, user: Admin) -> dict[str, Any]:
    return {"channels": [asdict(c) for c in await db.run(store.list_channels)]}


@router.post(
    "/alerting/channels", response_model=ChannelOut, status_code=201, summary="Add a channel"
)
async def add_channel(body: ChannelIn, db: Db, user: Admin, ctx: AuditCtx) -> dict[str, Any]:
    audit = ctx.entry(user, "alert_channel.create", f"alert_channel:{body.name}")
    work = audit_store.wrap(
        audit, store.create_channel, after=_public, sensitive={"config": body.config}
    )
    return asdict(await db.run(work, body, user.username))


@router.patch(
    "/alerting/channels/{channel_id}", response_model=ChannelOut, summary="Change a channel"
)
async def change_channel(
    channel_id: RowId, body: ChannelPatch, db: Db, user: Admin, ctx: AuditCtx
) -> dict[str, Any]:
    audit = ctx.entry(user, "alert_channel.change", f"alert_channel:{channel_id}")
    work = audit_store.wrap(
        audit,
        store.update_channel,
        before=snapshot("alert_channels", exclude=_NO_CONFIG, id=channel_id),
        after=_public,
        sensitive={"config": body.config} if body.config is not None else None,
    )
    return asdict(await db.run(work, channel_id, body))


@router.delete("/alerting/channels/{channel_id}", status_code=204, summary="Delete a channel")
async def remove_channel(channel_id: RowId, db: Db, user: Admin, ctx: AuditCtx) -> Response:
    audit = ctx.entry(user, "alert_channel.delete", f"alert_channel:{channel_id}")
    before = snapshot("alert_channels", exclude=_NO_CONFIG, id=channel_id)
    await db.run(audit_store.wrap(audit, store.delete_channel, before=before), channel_id)
    return Response(status_code=204)


# --- silences -------------------------------------------------------------------------------


def _silence_out(s: store.Silence) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        **asdict(s),
        "starts_at": s.starts_at.isoformat(),
        "ends_at": s.ends_at.isoformat(),
        "active": s.starts_at <= now < s.ends_at,
    }


@router.get("/alerting/silences", response_model=SilenceListOut, summary="Silences")
async def silences(
    db: Db, user: Admin, active: Annotated[bool, Query(description="only current ones")] = False
) -> dict[str, Any]:
    return {"silences": [_silence_out(s) for s in await db.run(store.list_silences, active)]}


@router.post(
    "/alerting/silences",
    response_model=SilenceOut,
    status_code=201,
    summary="Mute matching alerts until ends_at",
)
async def add_silence(body: SilenceIn, db: Db, user: Admin, ctx: AuditCtx) -> dict[str, Any]:
    audit = ctx.entry(user, "alert_silence.create", "alert_silence:new")
    work = audit_store.wrap(audit, store.create_silence, after=_public)
    return _silence_out(await db.run(work, body, user.username))


@router.delete(
    "/alerting/silences/{silence_id}",
    response_model=SilenceOut,
    summary="End a silence now (kept for the record)",
)
async def expire_silence(silence_id: RowId, db: Db, user: Admin, ctx: AuditCtx) -> dict[str, Any]:
    audit = ctx.entry(user, "alert_silence.expire", f"alert_silence:{silence_id}")
    before = snapshot("alert_silences", id=silence_id)
    work = audit_store.wrap(audit, store.expire_silence, before=before, after=_public)
    return _silence_out(await db.run(work, silence_id))
