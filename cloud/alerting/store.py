"""Alerting's tables (migration 0017): rules, channels and silences as the admin API manages
them, alerts as the evaluator keeps them, and the notification queue with each delivery's
result, as the dispatcher works through it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb

from cloud.alerting.config import ChannelIn, ChannelPatch, RuleIn, RulePatch, SilenceIn
from cloud.alerting.rules import Rule
from cloud.fielderror import FieldError, NotFoundError

_RULE_COLUMNS = "id, name, kind, machine_id, sensor, params, severity, channel_ids, enabled"


@dataclass(frozen=True, slots=True)
class Channel:
    id: int
    name: str
    kind: str
    config: dict[str, Any]
    enabled: bool


@dataclass(frozen=True, slots=True)
class Silence:
    id: int
    rule_id: int | None
    machine_id: str | None
    sensor: str | None
    starts_at: datetime
    ends_at: datetime
    comment: str
    created_by: str | None


# --- rules ----------------------------------------------------------------------------------


def list_rules(conn: psycopg.Connection, enabled_only: bool = False) -> list[Rule]:
    where = " WHERE enabled" if enabled_only else ""
    with conn.cursor(row_factory=class_row(Rule)) as cur:
        cur.execute(f"SELECT {_RULE_COLUMNS} FROM alert_rules{where} ORDER BY id")
        return cur.fetchall()


def _check_channels(conn: psycopg.Connection, ids: list[int]) -> None:
    if not ids:
        return
    found = {r[0] for r in conn.execute("SELECT id FROM alert_channels WHERE id = ANY(%s)", (ids,))}
    missing = sorted(set(ids) - found)
    if missing:
        raise FieldError("channel_ids", f"no channel {missing[0]}")


def create_rule(conn: psycopg.Connection, rule: RuleIn, by: str) -> Rule:
    rule.check()
    _check_channels(conn, rule.channel_ids)
    if conn.execute("SELECT 1 FROM alert_rules WHERE name = %s", (rule.name,)).fetchone():
        raise FieldError("name", f"a rule named {rule.name!r} exists")
    with conn.cursor(row_factory=class_row(Rule)) as cur:
        cur.execute(
            "INSERT INTO alert_rules (name, kind, machine_id, sensor, params, severity, "
            "channel_ids, enabled, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
            f"RETURNING {_RULE_COLUMNS}",
            (
                rule.name,
                rule.kind,
                rule.machine_id,
                rule.sensor,
                Jsonb(rule.params),
                rule.severity,
                rule.channel_ids,
                rule.enabled,
                by,
            ),
        )
        row = cur.fetchone()
    assert row is not None
    return row


def update_rule(conn: psycopg.Connection, rule_id: int, patch: RulePatch) -> Rule:
    with conn.cursor(row_factory=class_row(Rule)) as cur:
        cur.execute(f"SELECT {_RULE_COLUMNS} FROM alert_rules WHERE id = %s FOR UPDATE", (rule_id,))
        current = cur.fetchone()
    if current is None:
        raise NotFoundError("rule_id", f"no rule {rule_id}")
    merged = RuleIn(
        name=current.name,
        kind=current.kind,  # type: ignore[arg-type]
        machine_id=current.machine_id,
        sensor=current.sensor,
        params=patch.params if patch.params is not None else current.params,
        severity=patch.severity or current.severity,  # type: ignore[arg-type]
        channel_ids=patch.channel_ids if patch.channel_ids is not None else current.channel_ids,
        enabled=patch.enabled if patch.enabled is not None else current.enabled,
    )
    merged.check()
    _check_channels(conn, merged.channel_ids)
    with conn.cursor(row_factory=class_row(Rule)) as cur:
        cur.execute(
            "UPDATE alert_rules SET params = %s, severity = %s, channel_ids = %s, enabled = %s "
            f"WHERE id = %s RETURNING {_RULE_COLUMNS}",
            (Jsonb(merged.params), merged.severity, merged.channel_ids, merged.enabled, rule_id),
        )
        row = cur.fetchone()
    assert row is not None
    return row


def delete_rule(conn: psycopg.Connection, rule_id: int) -> None:
    if conn.execute("DELETE FROM alert_rules WHERE id = %s", (rule_id,)).rowcount == 0:
        raise NotFoundError("rule_id", f"no rule {rule_id}")


# --- channels -------------------------------------------------------------------------------


def list_channels(conn: psycopg.Connection, enabled_only: bool = False) -> list[Channel]:
    where = " WHERE enabled" if enabled_only else ""
    with conn.cursor(row_factory=class_row(Channel)) as cur:
        cur.execute(
            f"SELECT id, name, kind, config, enabled FROM alert_channels{where} ORDER BY id"
        )
        return cur.fetchall()


def create_channel(conn: psycopg.Connection, channel: ChannelIn, by: str) -> Channel:
    channel.check()
    if conn.execute("SELECT 1 FROM alert_channels WHERE name = %s", (channel.name,)).fetchone():
        raise FieldError("name", f"a channel named {channel.name!r} exists")
    with conn.cursor(row_factory=class_row(Channel)) as cur:
        cur.execute(
            "INSERT INTO alert_channels (name, kind, config, enabled, created_by) "
            "VALUES (%s, %s, %s, %s, %s) RETURNING id, name, kind, config, enabled",
            (channel.name, channel.kind, Jsonb(channel.config), channel.enabled, by),
        )
        row = cur.fetchone()
    assert row is not None
    return row


def update_channel(conn: psycopg.Connection, channel_id: int, patch: ChannelPatch) -> Channel:
    with conn.cursor(row_factory=class_row(Channel)) as cur:
        cur.execute(
            "SELECT id, name, kind, config, enabled FROM alert_channels WHERE id = %s FOR UPDATE",
            (channel_id,),
        )
        current = cur.fetchone()
    if current is None:
        raise NotFoundError("channel_id", f"no channel {channel_id}")
    config = patch.config if patch.config is not None else current.config
    ChannelIn(name=current.name, kind=current.kind, config=config).check()  # type: ignore[arg-type]
    enabled = patch.enabled if patch.enabled is not None else current.enabled
    with conn.cursor(row_factory=class_row(Channel)) as cur:
        cur.execute(
            "UPDATE alert_channels SET config = %s, enabled = %s WHERE id = %s "
            "RETURNING id, name, kind, config, enabled",
            (Jsonb(config), enabled, channel_id),
        )
        row = cur.fetchone()
    assert row is not None
    return row


def delete_channel(conn: psycopg.Connection, channel_id: int) -> None:
    if conn.execute("DELETE FROM alert_channels WHERE id = %s", (channel_id,)).rowcount == 0:
        raise NotFoundError("channel_id", f"no channel {channel_id}")


# --- silences -------------------------------------------------------------------------------

_SILENCE_COLUMNS = "id, rule_id, machine_id, sensor, starts_at, ends_at, comment, created_by"


def list_silences(conn: psycopg.Connection, active_only: bool = False) -> list[Silence]:
    where = " WHERE ends_at > now()" if active_only else ""
    with conn.cursor(row_factory=class_row(Silence)) as cur:
        cur.execute(f"SELECT {_SILENCE_COLUMNS} FROM alert_silences{where} ORDER BY ends_at DESC")
        return cur.fetchall()


def create_silence(conn: psycopg.Connection, silence: SilenceIn, by: str) -> Silence:
    silence.check()
    if (
        silence.rule_id is not None
        and not conn.execute(
            "SELECT 1 FROM alert_rules WHERE id = %s", (silence.rule_id,)
        ).fetchone()
    ):
        raise FieldError("rule_id", f"no rule {silence.rule_id}")
    ends = conn.execute("SELECT %s::timestamptz <= now()", (silence.ends_at,)).fetchone()
    if ends and ends[0]:
        raise FieldError("ends_at", "is in the past: a silence must end in the future")
    with conn.cursor(row_factory=class_row(Silence)) as cur:
        cur.execute(
            "INSERT INTO alert_silences (rule_id, machine_id, sensor, starts_at, ends_at, "
            "comment, created_by) VALUES (%s, %s, %s, coalesce(%s, now()), %s, %s, %s) "
            f"RETURNING {_SILENCE_COLUMNS}",
            (
                silence.rule_id,
                silence.machine_id,
                silence.sensor,
                silence.starts_at,
                silence.ends_at,
                silence.comment,
                by,
            ),
        )
        row = cur.fetchone()
    assert row is not None
    return row


def expire_silence(conn: psycopg.Connection, silence_id: int) -> Silence:
    """Ends a silence now (kept, for the record of what was muted when)."""
    with conn.cursor(row_factory=class_row(Silence)) as cur:
        cur.execute(
            "UPDATE alert_silences SET ends_at = GREATEST(starts_at + interval '1 microsecond', "
            f"LEAST(ends_at, now())) WHERE id = %s RETURNING {_SILENCE_COLUMNS}",
            (silence_id,),
        )
        row = cur.fetchone()
    if row is None:
        raise NotFoundError("silence_id", f"no silence {silence_id}")
    return row


def active_silence(
    conn: psycopg.Connection, rule_id: int, machine_id: str | None, sensor: str | None
) -> int | None:
    """The id of a silence muting an alert of this rule, machine and sensor now, or None."""
    row = conn.execute(
        "SELECT id FROM alert_silences WHERE starts_at <= now() AND ends_at > now() "
        "AND (rule_id IS NULL OR rule_id = %s) "
        "AND (machine_id IS NULL OR machine_id = %s) "
        "AND (sensor IS NULL OR sensor = %s) ORDER BY ends_at DESC LIMIT 1",
        (rule_id, machine_id, sensor),
    ).fetchone()
    return int(row[0]) if row else None


# --- alerts and notifications as the API shows them -----------------------------------------


def list_alerts(
    conn: psycopg.Connection,
    visible: tuple[str, ...] | None,
    status: str | None,
    machine_id: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Newest first, each with its notifications (delivery results)."""
    conditions = ["true"]
    params: list[Any] = []
    if visible is not None:
        # A scoped user sees its machines' alerts; edge alerts name no machine and stay hidden.
        conditions.append("machine_id = ANY(%s)")
        params.append(list(visible))
    if status is not None:
        conditions.append("status = %s")
        params.append(status)
    if machine_id is not None:
        conditions.append("machine_id = %s")
        params.append(machine_id)
    params.append(limit)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT id, group_key, rule_id, rule_name, kind, machine_id, sensor, edge_id, "
            "severity, status, summary, occurrences, first_anomaly_id, last_anomaly_id, "
            "started_at, updated_at, resolved_at FROM alerts WHERE "
            + " AND ".join(conditions)
            + " ORDER BY started_at DESC, id DESC LIMIT %s",
            params,
        )
        alerts = cur.fetchall()
        ids = [a["id"] for a in alerts]
        cur.execute(
            "SELECT id, alert_id, channel_id, channel_name, event, status, attempts, last_error, "
            "created_at, sent_at, silence_id FROM alert_notifications WHERE alert_id = ANY(%s) "
            "ORDER BY id",
            (ids,),
        )
        notes = cur.fetchall()
    by_alert: dict[int, list[dict[str, Any]]] = {}
    for n in notes:
        by_alert.setdefault(n.pop("alert_id"), []).append(n)
    for a in alerts:
        a["notifications"] = by_alert.get(a["id"], [])
    return alerts
