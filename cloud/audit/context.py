"""Who did it and from where: a FastAPI dependency for routers that record audit rows."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from cloud.audit.chain import Entry

_UA_MAX = 256


@dataclass(frozen=True)
class RequestInfo:
    ip: str | None
    user_agent: str | None

    def entry(
        self,
        user: Any,
        action: str,
        resource: str,
        *,
        category: str = "change",
        outcome: str = "ok",
        detail: dict[str, Any] | None = None,
        before: Any = None,
    ) -> Entry:
        """An entry for ``user`` (an ``accounts.User``; None or a name for others)."""
        if user is None or isinstance(user, str):
            name, role = user, None
        else:
            name = getattr(user, "username", None)
            role = getattr(getattr(user, "role", None), "value", getattr(user, "role", None))
        return Entry(
            category=category,
            action=action,
            resource=resource,
            actor=name,
            role=role,
            ip=self.ip,
            user_agent=self.user_agent,
            source="api",
            outcome=outcome,
            before=before,
            detail=detail or {},
        )


def request_info(request: Request) -> RequestInfo:
    # The peer address as uvicorn reports it: behind a proxy that is the proxy unless the
    # server trusts its forwarded headers (--forwarded-allow-ips).
    ip = request.client.host if request.client else None
    agent = request.headers.get("user-agent")
    return RequestInfo(ip=ip, user_agent=agent[:_UA_MAX] if agent else None)


AuditCtx = Annotated[RequestInfo, Depends(request_info)]


def cli_entry(
    action: str,
    resource: str,
    *,
    detail: dict[str, Any] | None = None,
    before: Any = None,
    category: str = "change",
) -> Entry:
    """An entry for a ``rig-cloud`` command: the operating-system user who ran it."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = str(os.getuid())
    return Entry(
        category=category,
        action=action,
        resource=resource,
        actor=f"cli:{who}",
        role="cli",
        source="cli",
        before=before,
        detail=detail or {},
    )


def record_login(
    conn: Any, info: RequestInfo, username: str, ok: bool, *, reason: str | None = None
) -> None:
    """A login attempt in the ``auth`` chain. A failed attempt for a name that is no account
    keeps the typed name only sealed (people type passwords into the user field)."""
    from cloud.audit.store import append

    row = conn.execute("SELECT role FROM users WHERE username = %s", (username,)).fetchone()
    known = row is not None
    entry = Entry(
        category="auth",
        action="auth.login",
        resource=f"user:{username}" if known else "user:?",
        actor=username if known else None,
        role=row[0] if known else None,
        ip=info.ip,
        user_agent=info.user_agent,
        outcome="ok" if ok else "failure",
        detail={"known_user": known, **({"reason": reason} if reason else {})},
    )
    append(conn, entry, sensitive=None if known else {"attempted_username": username})


def user_state(username: str) -> Any:
    """``before=`` for user changes: role, machines and state (never the password hash)."""

    def read(conn: Any) -> dict[str, Any] | None:
        row = conn.execute(
            "SELECT role, machines, disabled FROM users WHERE username = %s", (username,)
        ).fetchone()
        if row is None:
            return None
        return {"username": username, "role": row[0], "machines": row[1], "disabled": row[2]}

    return read


def edge_key_state(key_id: str) -> Any:
    def read(conn: Any) -> dict[str, Any] | None:
        row = conn.execute(
            "SELECT edge_id, created_by, revoked_at FROM edge_api_keys WHERE key_id = %s",
            (key_id,),
        ).fetchone()
        if row is None:
            return None
        return {"key_id": key_id, "edge_id": row[0], "created_by": row[1], "revoked_at": row[2]}

    return read


def snapshot(
    table: str, exclude: tuple[str, ...] = (), only: tuple[str, ...] = (), **match: Any
) -> Any:
    """``before=`` reading one row of ``table`` (matched with IS NOT DISTINCT FROM, so a NULL
    machine_id means the fleet-wide row) as JSON: its ``only`` columns, or all but ``exclude``."""
    from psycopg import sql

    def read(conn: Any) -> Any:
        where = sql.SQL(" AND ").join(
            sql.SQL("{} IS NOT DISTINCT FROM {}").format(sql.Identifier(k), sql.Placeholder())
            for k in match
        )
        if only:
            shown: sql.Composable = sql.SQL("jsonb_build_object({})").format(
                sql.SQL(", ").join(
                    sql.SQL("{}, {}").format(sql.Literal(c), sql.Identifier(c)) for c in only
                )
            )
        else:
            shown = sql.SQL("to_jsonb(t)") + sql.SQL("").join(
                sql.SQL(" - ") + sql.Literal(c) for c in exclude
            )
        query = sql.SQL("SELECT {} FROM {} t WHERE {}").format(shown, sql.Identifier(table), where)
        rows = conn.execute(query, list(match.values())).fetchall()
        return rows[0][0] if len(rows) == 1 else [r[0] for r in rows] or None

    return read
