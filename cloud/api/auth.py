"""Who may call what: the session and ingest-key dependencies every router declares.

Each endpoint names its callers with one of the guards below (``Allow(...)`` for users by
role, ``IngestKeyGuard`` for edges); ``cloud/api/test_access.py`` walks every route and checks
that each declares one and refuses everybody else.
"""

from __future__ import annotations

import hmac
import time
from typing import Annotated

from fastapi import Depends, Header, Request, WebSocket
from psycopg import Error as PsycopgError
from starlette.concurrency import run_in_threadpool

from cloud.api.deps import CACHE_SECONDS, AppServices, Services, get_services
from cloud.api.errors import ApiError
from cloud.auth import EdgeKey, Role, User, session_user, verify_edge_key

SESSION_COOKIE = "rig_session"
_CACHE_LIMIT = 10_000


def token_from(headers: object, cookies: dict[str, str]) -> str | None:
    authorization = getattr(headers, "get", lambda _k: None)("authorization")
    if authorization and authorization.lower().startswith("bearer "):
        return str(authorization[7:].strip()) or None
    return cookies.get(SESSION_COOKIE) or None


async def _lookup_session(services: AppServices, token: str) -> User | None:
    cache = services.credentials
    now = time.monotonic()
    hit = cache.sessions.get(token)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]

    def query() -> User | None:
        with services.pool.connection() as conn:
            return session_user(conn, token)

    try:
        user = await run_in_threadpool(query)
    except PsycopgError as exc:
        raise ApiError(
            503, "$", f"database unavailable: {type(exc).__name__}", retry_after=5
        ) from None
    if len(cache.sessions) >= _CACHE_LIMIT:
        cache.sessions.clear()
    cache.sessions[token] = (now, user)
    return user


async def optional_user(request: Request, services: Services) -> User | None:
    """The logged-in user, or None (pages use it to redirect to the login page)."""
    token = token_from(request.headers, request.cookies)
    return await _lookup_session(services, token) if token else None


async def websocket_user(websocket: WebSocket) -> User | None:
    services = get_services(websocket)  # type: ignore[arg-type]
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


class IngestKeyGuard:
    """Dependency for edges and integrators: a per-edge key from ``edge_api_keys`` (the edge
    id is the key's), or the bootstrap key from RIG_INGEST_API_KEY (edge id ``default``)."""

    async def __call__(
        self,
        services: Services,
        x_api_key: Annotated[str | None, Header(alias="X-API-KEY")] = None,
    ) -> str:
        if not x_api_key:
            raise ApiError(401, "X-API-KEY", "missing X-API-KEY header")
        bootstrap = services.settings.ingest_api_key
        if bootstrap and hmac.compare_digest(x_api_key.encode(), bootstrap.encode()):
            return "default"
        cache = services.credentials
        now = time.monotonic()
        hit = cache.keys.get(x_api_key)
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            key = hit[1]
        else:

            def query() -> EdgeKey | None:
                with services.pool.connection() as conn:
                    return verify_edge_key(conn, x_api_key)

            try:
                key = await run_in_threadpool(query)
            except PsycopgError as exc:
                raise ApiError(
                    503, "$", f"database unavailable: {type(exc).__name__}", retry_after=5
                ) from None
            if len(cache.keys) >= _CACHE_LIMIT:
                cache.keys.clear()
            cache.keys[x_api_key] = (now, key)
        if key is None:
            raise ApiError(401, "X-API-KEY", "unknown or revoked API key")
        return key.edge_id


INGEST_KEY = IngestKeyGuard()
IngestEdge = Annotated[str, Depends(INGEST_KEY)]
