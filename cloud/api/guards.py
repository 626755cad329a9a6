"""Who may call what: the session and ingest-key dependencies every router declares.

Each endpoint names its callers with one of the guards below (``Allow(...)`` for users by
role, ``IngestKeyGuard`` for edges); ``cloud/api/test_access.py`` walks every route and checks
that each declares one and refuses everybody else.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Request, WebSocket

from cloud.accounts import EdgeKey, Role, User, machine_edge, session_user, verify_edge_key
from cloud.api.deps import CACHE_SECONDS, AppServices, Database, Services, get_services
from cloud.api.errors import ApiError

SESSION_COOKIE = "rig_session"
_CACHE_LIMIT = 10_000

V = TypeVar("V")


def token_from(headers: object, cookies: dict[str, str]) -> str | None:
    authorization = getattr(headers, "get", lambda _k: None)("authorization")
    if authorization and authorization.lower().startswith("bearer "):
        return str(authorization[7:].strip()) or None
    return cookies.get(SESSION_COOKIE) or None


async def _remembered(
    cache: dict[str, tuple[float, V]], token: str, lookup: Callable[[], Awaitable[V]]
) -> V:
    """``lookup()``'s answer for ``token``, trusted for CACHE_SECONDS (misses too: a client
    retrying a wrong key must not cost a query each time). Cleared when full: an attacker
    sending random tokens cannot grow it without bound. A database error propagates (503)."""
    now = time.monotonic()
    hit = cache.get(token)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    value = await lookup()
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[token] = (now, value)
    return value


async def _lookup_session(services: AppServices, token: str) -> User | None:
    db = Database(services.pool)
    idle = timedelta(minutes=services.settings.session_idle_minutes)
    return await _remembered(
        services.credentials.sessions, token, lambda: db.run(session_user, token, idle)
    )


async def optional_user(request: Request, services: Services) -> User | None:
    """The logged-in user, or None (pages use it to redirect to the login page)."""
    token = token_from(request.headers, request.cookies)
    return await _lookup_session(services, token) if token else None


async def websocket_user(websocket: WebSocket) -> User | None:
    services = get_services(websocket)
    token = token_from(websocket.headers, websocket.cookies)
    return await _lookup_session(services, token) if token else None


class Allow:
    """Dependency: a logged-in user whose role is one of ``roles`` (401 / 403 otherwise)."""

    def __init__(self, *roles: Role) -> None:
        self.roles = frozenset(roles)

    async def __call__(self, request: Request, services: Services) -> User:
        user = await optional_user(request, services)
        if user is None:
            raise ApiError(401, "$", "log in first: session cookie or Bearer token required")
        if user.role not in self.roles:
            allowed = ", ".join(sorted(r.value for r in self.roles))
            raise ApiError(
                403, "$", f"role {user.role.value!r} may not do this (allowed: {allowed})"
            )
        return user


ANY_USER = Allow(Role.ADMIN, Role.OPERATOR, Role.VIEWER)
OPERATORS = Allow(Role.ADMIN, Role.OPERATOR)
ADMINS = Allow(Role.ADMIN)

AnyUser = Annotated[User, Depends(ANY_USER)]
Operator = Annotated[User, Depends(OPERATORS)]
Admin = Annotated[User, Depends(ADMINS)]


def check_machine(user: User, machine_id: str) -> None:
    if not user.may_see(machine_id):
        raise ApiError(
            403, "machine_id", f"user {user.username!r} is not assigned machine {machine_id!r}"
        )


# The bootstrap key's name in answers that report a key's edge (``GET /api/v1/ingest/check``);
# no issued key may carry it (cloud/accounts.py RESERVED_EDGE_IDS).
BOOTSTRAP_NAME = "default"


@dataclass(frozen=True, slots=True)
class EdgePrincipal:
    """Who an ingest key speaks for: the bootstrap key (any edge, any machine) or one edge,
    bound to the machines its key was issued for (``machines`` None: an unbound key, which
    may touch only machines no other edge serves)."""

    edge_id: str | None
    key_id: str | None = None
    machines: frozenset[str] | None = None

    @property
    def bootstrap(self) -> bool:
        return self.edge_id is None

    @property
    def name(self) -> str:
        return BOOTSTRAP_NAME if self.edge_id is None else self.edge_id

    def may_write_edge(self, edge_id: str) -> bool:
        return self.edge_id is None or self.edge_id == edge_id


BOOTSTRAP = EdgePrincipal(edge_id=None)


async def machines_refused(
    services: AppServices, principal: EdgePrincipal, machine_ids: set[str] | frozenset[str]
) -> tuple[str, str] | None:
    """(machine, why) for the first of ``machine_ids`` the principal may not touch, or None.
    A bound key: its machines only. An unbound key: machines whose newest reading came from
    its own edge (or an integrator) or that have none yet (cached like credentials: one
    indexed query per machine every few seconds, not per reading)."""
    if principal.bootstrap:
        return None
    if principal.machines is not None:
        for machine_id in sorted(machine_ids):
            if machine_id not in principal.machines:
                return machine_id, f"this API key (edge {principal.edge_id!r}) is not bound to it"
        return None
    db = Database(services.pool)
    for machine_id in sorted(machine_ids):
        owner: str | None = await _remembered(
            services.credentials.owners, machine_id, partial(db.run, machine_edge, machine_id)
        )
        # Readings an integrator posted with the bootstrap key (edge "ingest:...") make no
        # edge the machine's owner.
        if owner is not None and owner != principal.edge_id and not owner.startswith("ingest:"):
            return machine_id, f"served by another edge; this API key belongs to {principal.name!r}"
    return None


async def check_edge_machine(
    services: AppServices, principal: EdgePrincipal, machine_id: str
) -> None:
    refused = await machines_refused(services, principal, {machine_id})
    if refused is not None:
        raise ApiError(403, "machine_id", f"machine {refused[0]!r}: {refused[1]}")


class IngestKeyGuard:
    """Dependency for edges and integrators: a per-edge key from ``edge_api_keys`` (its edge
    and machines), or the bootstrap key from RIG_INGEST_API_KEY; an ``EdgePrincipal``."""

    async def __call__(
        self,
        services: Services,
        x_api_key: Annotated[str | None, Header(alias="X-API-KEY")] = None,
    ) -> EdgePrincipal:
        if not x_api_key:
            raise ApiError(401, "X-API-KEY", "missing X-API-KEY header")
        bootstrap = services.settings.ingest_api_key
        if bootstrap and hmac.compare_digest(x_api_key.encode(), bootstrap.encode()):
            return BOOTSTRAP
        db = Database(services.pool)
        key: EdgeKey | None = await _remembered(
            services.credentials.keys, x_api_key, lambda: db.run(verify_edge_key, x_api_key)
        )
        if key is None:
            raise ApiError(401, "X-API-KEY", "unknown or revoked API key")
        # Typed: an issued key named "default" is just that edge's key, never the bootstrap.
        return EdgePrincipal(
            edge_id=key.edge_id,
            key_id=key.key_id,
            machines=frozenset(key.machines) if key.machines is not None else None,
        )


INGEST_KEY = IngestKeyGuard()
IngestEdge = Annotated[EdgePrincipal, Depends(INGEST_KEY)]
