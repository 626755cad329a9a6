"""Login, logout and the current user; user administration and per-edge ingest keys (admin)."""

from __future__ import annotations

import math
import secrets
from types import EllipsisType
from typing import Any, Literal

import psycopg
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from cloud import accounts
from cloud.api.deps import AppServices, Db, Services
from cloud.api.errors import ApiError
from cloud.api.guards import SESSION_COOKIE, Admin, AnyUser, token_from
from cloud.api.params import EdgeId, KeyId, MachineId, Username
from cloud.api.schemas import (
    EdgeKeysOut,
    LoginOut,
    NewEdgeKeyOut,
    Out,
    UserOut,
    UsersOut,
)
from cloud.audit import context as audit_ctx
from cloud.audit import store as audit_store
from cloud.audit.context import AuditCtx
from cloud.fielderror import FieldError, NotFoundError

router = APIRouter(prefix="/api/v1", tags=["auth"])


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: Username
    password: str = Field(min_length=accounts.MIN_PASSWORD_LENGTH, max_length=1024)
    role: Literal["admin", "operator", "viewer"]
    machines: list[MachineId] | None = Field(
        default=None, max_length=10_000, description="null: every machine"
    )


class UserChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["admin", "operator", "viewer"] | None = None
    machines: list[MachineId] | None = Field(default=None, max_length=10_000)
    all_machines: bool = Field(default=False, description="true: give access to every machine")
    disabled: bool | None = None
    password: str | None = Field(
        default=None, min_length=accounts.MIN_PASSWORD_LENGTH, max_length=1024
    )


def client_address(request: Request) -> str:
    """The client's address as the throttle counts it: from X-Forwarded-For only when the
    peer is a trusted proxy (RIG_FORWARDED_ALLOW_IPS, applied by the app's proxy middleware)."""
    return request.client.host if request.client else "unknown"


async def _check_password(
    services: AppServices, stored: str | None, password: str
) -> tuple[bool, str | None]:
    # argon2 in a worker thread, at most hash_gate.limit at once, and with no database
    # connection held: a burst of guesses queues here, not in the pool everyone else needs.
    async with services.hash_gate.slot():
        return await run_in_threadpool(accounts.check_password, stored, password)


def _throttled(wait: float, scope: str | None) -> ApiError:
    seconds = max(1, math.ceil(wait))
    field = "username" if scope == "account" else "$"
    return ApiError(
        429,
        field,
        f"too many failed logins ({'this account' if scope == 'account' else 'this address'}); "
        f"retry after {seconds} s",
        retry_after=seconds,
    )


def _set_session_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(accounts.SESSION_LIFETIME.total_seconds()),
        httponly=True,
        samesite="strict",
        path="/",
        # https: directly or through a trusted proxy (X-Forwarded-Proto, RIG_FORWARDED_ALLOW_IPS).
        secure=request.url.scheme == "https",
    )


@router.post(
    "/auth/login",
    response_model=LoginOut,
    summary="Log in; sets the session cookie and returns a token",
    responses={
        401: {"description": "Wrong user name or password"},
        429: {"description": "Too many failed logins from this address or for this account"},
    },
)
async def login(
    body: LoginBody, request: Request, response: Response, services: Services, db: Db
) -> dict[str, Any]:
    address = client_address(request)
    wait, scope = services.throttle.retry_after(address, body.username)
    if wait > 0:
        # Refused before hashing anything: a throttled guess costs no argon2 and no query.
        raise _throttled(wait, scope)
    record = await db.run(accounts.login_record, body.username)
    ok, rehash = await _check_password(services, record[1] if record else None, body.password)
    if record is None or not ok:
        services.throttle.failed(address, body.username)
        info = audit_ctx.request_info(request)
        await db.run(audit_ctx.record_login, info, body.username, False)
        raise ApiError(401, "password", "wrong user name or password")
    services.throttle.succeeded(body.username)
    user, stored = record

    def work(conn: psycopg.Connection) -> str:
        if rehash is not None:
            accounts.store_rehash(conn, user.username, stored, rehash)
        audit_ctx.record_login(conn, audit_ctx.request_info(request), user.username, True)
        return accounts.create_session(conn, user.username)

    token = await db.run(work)
    _set_session_cookie(request, response, token)
    return {**user.as_json(), "token": token}


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=accounts.MIN_PASSWORD_LENGTH, max_length=1024)


@router.post(
    "/auth/password",
    response_model=UserOut,
    summary="Change your own password (the current one required); ends your other sessions",
    responses={
        401: {"description": "Wrong current password"},
        429: {"description": "Too many wrong passwords"},
    },
)
async def change_own_password(
    body: PasswordChange,
    request: Request,
    response: Response,
    services: Services,
    db: Db,
    user: AnyUser,
) -> dict[str, Any]:
    address = client_address(request)
    # The current password is a login in disguise (a stolen session must not guess it
    # freely): the same throttle and the same bounded hashing.
    wait, scope = services.throttle.retry_after(address, user.username)
    if wait > 0:
        raise _throttled(wait, scope)
    if body.new_password == body.current_password:
        raise FieldError("new_password", "must differ from the current password")
    accounts.validate_password(body.new_password)
    record = await db.run(accounts.login_record, user.username)
    ok, _ = await _check_password(services, record[1] if record else None, body.current_password)
    if record is None or not ok:
        services.throttle.failed(address, user.username)
        raise ApiError(401, "current_password", "the current password is wrong")
    services.throttle.succeeded(user.username)
    async with services.hash_gate.slot():
        new_hash = await run_in_threadpool(accounts.hash_password, body.new_password)
    token = token_from(request.headers, request.cookies)
    entry = audit_ctx.request_info(request).entry(
        user, "user.password_change", f"user:{user.username}"
    )
    await db.run(
        audit_store.wrap(entry, accounts.set_password_hash), user.username, new_hash, token
    )
    # Other sessions of this user end at once in this process (the database already ended
    # them; other processes within the credential cache's seconds).
    services.credentials.sessions.clear()
    return user.as_json()


@router.post("/auth/logout", status_code=204, summary="End this session")
async def logout(request: Request, services: Services, db: Db, user: AnyUser) -> Response:
    token = token_from(request.headers, request.cookies)
    if token:
        entry = audit_ctx.request_info(request).entry(
            user, "auth.logout", f"user:{user.username}", category="auth"
        )
        await db.run(audit_store.wrap(entry, accounts.end_session), token)
        services.credentials.forget(token)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/auth/me", response_model=UserOut, summary="The logged-in user")
async def me(user: AnyUser) -> dict[str, Any]:
    return user.as_json()


@router.get("/users", response_model=UsersOut, summary="All users (admin)")
async def users(db: Db, admin: Admin) -> dict[str, Any]:
    return {"users": await db.run(accounts.list_users)}


@router.post("/users", status_code=201, response_model=UserOut, summary="Create a user (admin)")
async def create_user(body: NewUser, db: Db, admin: Admin, ctx: AuditCtx) -> dict[str, Any]:
    entry = ctx.entry(admin, "user.create", f"user:{body.username}")
    user = await db.run(
        audit_store.wrap(entry, accounts.create_user),
        body.username,
        body.password,
        body.role,
        body.machines,
    )
    return user.as_json()


@router.patch(
    "/users/{username}",
    response_model=UserOut,
    summary="Change a user's role, machines, state or password (admin)",
)
async def change_user(
    username: Username,
    body: UserChange,
    services: Services,
    db: Db,
    admin: Admin,
    ctx: AuditCtx,
) -> dict[str, Any]:
    if body.machines is not None and body.all_machines:
        raise FieldError("all_machines", "give either machines or all_machines, not both")
    if username == admin.username and (body.disabled or (body.role and body.role != "admin")):
        raise FieldError("role", "an admin cannot demote or disable their own account")
    if username == admin.username and body.password is not None:
        # A stolen admin session must not be enough to take the account over: one's own
        # password changes only with the current one (POST /api/v1/auth/password).
        raise FieldError("password", "change your own password with POST /api/v1/auth/password")

    def work(conn: psycopg.Connection) -> accounts.User:
        machines: list[str] | EllipsisType | None = ...  # ...: keep the user's machines
        if body.all_machines:
            machines = None
        elif body.machines is not None:
            machines = body.machines
        user = accounts.update_user(
            conn, username, role=body.role, machines=machines, disabled=body.disabled
        )
        if body.password is not None:
            accounts.set_password(conn, username, body.password)
        return user

    entry = ctx.entry(
        admin,
        "user.change",
        f"user:{username}",
        detail={"password_changed": body.password is not None},
    )
    user = await db.run(audit_store.wrap(entry, work, before=audit_ctx.user_state(username)))
    services.credentials.sessions.clear()
    return user.as_json()


class PasswordResetOut(Out):
    username: str
    password: str = Field(description="shown once; only its hash is stored")


@router.post(
    "/users/{username}/password-reset",
    response_model=PasswordResetOut,
    summary="Give a user a new random password, shown once; ends their sessions (admin)",
)
async def reset_password(
    username: Username, services: Services, db: Db, admin: Admin, ctx: AuditCtx
) -> dict[str, Any]:
    if username == admin.username:
        # One's own password changes with the current one (POST /auth/password): a stolen
        # admin session must not be enough to take the account over.
        raise FieldError("username", "change your own password with POST /api/v1/auth/password")
    # Generated, not typed by the admin: nobody picks a weak or reused password for someone
    # else, and the admin sees it once only (like an edge key).
    password = secrets.token_urlsafe(15)
    entry = ctx.entry(admin, "user.password_reset", f"user:{username}")
    await db.run(audit_store.wrap(entry, accounts.set_password), username, password)
    services.credentials.sessions.clear()
    return {"username": username, "password": password}


@router.delete("/users/{username}", status_code=204, summary="Delete a user (admin)")
async def delete_user(
    username: Username, services: Services, db: Db, admin: Admin, ctx: AuditCtx
) -> Response:
    if username == admin.username:
        raise FieldError("username", "an admin cannot delete their own account")
    entry = ctx.entry(admin, "user.delete", f"user:{username}")
    delete = audit_store.wrap(entry, accounts.delete_user, before=audit_ctx.user_state(username))
    if not await db.run(delete, username):
        raise NotFoundError("username", f"no user {username!r}")
    services.credentials.sessions.clear()
    return Response(status_code=204)


@router.get(
    "/edge-keys",
    response_model=EdgeKeysOut,
    summary="Ingest API keys of all edges, without the secrets (admin)",
)
async def edge_keys(db: Db, admin: Admin) -> dict[str, Any]:
    return {"keys": await db.run(accounts.list_edge_keys)}


class NewEdgeKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    machines: list[MachineId] | None = Field(
        default=None,
        max_length=10_000,
        description="the machines this edge serves: the key may write readings and fetch "
        "models and thresholds for these only; omitted: only machines no other edge serves",
    )


@router.post(
    "/edges/{edge_id}/keys",
    status_code=201,
    response_model=NewEdgeKeyOut,
    summary="Issue an ingest API key for an edge, bound to its machines (admin); shown once",
)
async def create_edge_key(
    edge_id: EdgeId, db: Db, admin: Admin, ctx: AuditCtx, body: NewEdgeKey | None = None
) -> dict[str, Any]:
    machines = body.machines if body is not None else None
    entry = ctx.entry(admin, "edge_key.create", f"edge:{edge_id}", detail={"machines": machines})
    # The key itself never enters the trail: after= is only its id.
    create = audit_store.wrap(
        entry, accounts.create_edge_key, after=lambda k: {"key_id": k.split("_")[1]}
    )
    key = await db.run(create, edge_id, admin.username, machines)
    return {
        "edge_id": edge_id,
        "key_id": key.split("_")[1],
        "api_key": key,
        "machines": sorted(set(machines)) if machines is not None else None,
    }


@router.delete("/edge-keys/{key_id}", status_code=204, summary="Revoke an ingest key (admin)")
async def revoke_edge_key(
    key_id: KeyId, services: Services, db: Db, admin: Admin, ctx: AuditCtx
) -> Response:
    entry = ctx.entry(admin, "edge_key.revoke", f"edge_key:{key_id}")
    revoke = audit_store.wrap(
        entry, accounts.revoke_edge_key, before=audit_ctx.edge_key_state(key_id)
    )
    if not await db.run(revoke, key_id):
        raise NotFoundError("key_id", f"no active key {key_id!r}")
    services.credentials.keys.clear()
    return Response(status_code=204)
