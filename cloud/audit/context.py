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
