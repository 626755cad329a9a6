"""Login, logout and the current user; user administration and per-edge ingest keys (admin)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from cloud import auth
from cloud.api.auth import SESSION_COOKIE, Admin, AnyUser, token_from
from cloud.api.dbcall import in_transaction
from cloud.api.deps import Services
from cloud.api.errors import ApiError
from shared.message import MACHINE_ID_RE

router = APIRouter(prefix="/api/v1", tags=["auth"])

Username = Annotated[str, Path(pattern=auth.USERNAME_RE.pattern, description="user name")]
EdgeId = Annotated[str, Path(pattern=auth.EDGE_ID_RE.pattern, description="edge id")]


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(pattern=auth.USERNAME_RE.pattern)
    password: str = Field(min_length=auth.MIN_PASSWORD_LENGTH, max_length=1024)
    role: Literal["admin", "operator", "viewer"]
    machines: list[Annotated[str, Field(pattern=MACHINE_ID_RE.pattern)]] | None = Field(
        default=None, max_length=10_000, description="null: every machine"
    )


class UserChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["admin", "operator", "viewer"] | None = None
    machines: list[Annotated[str, Field(pattern=MACHINE_ID_RE.pattern)]] | None = Field(
        default=None, max_length=10_000
    )
    all_machines: bool = Field(default=False, description="true: give access to every machine")
    disabled: bool | None = None
    password: str | None = Field(default=None, min_length=auth.MIN_PASSWORD_LENGTH, max_length=1024)


@router.post(
    "/auth/login",
    summary="Log in; sets the session cookie and returns a token",
    responses={401: {"description": "Wrong user name or password"}},
)
async def login(body: LoginBody, request: Request, services: Services) -> JSONResponse:
    def work(conn: psycopg.Connection) -> tuple[auth.User, str] | None:
        user = auth.authenticate(conn, body.username, body.password)
        return None if user is None else (user, auth.create_session(conn, user.username))

    result = await in_transaction(services, work)
    if result is None:
        raise ApiError(401, "password", "wrong user name or password")
    user, token = result
    response = JSONResponse({**user.as_json(), "token": token})
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(auth.SESSION_LIFETIME.total_seconds()),
        httponly=True,
        samesite="strict",
        path="/",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/auth/logout", status_code=204, summary="End this session")
async def logout(request: Request, services: Services, user: AnyUser) -> Response:
    token = token_from(request.headers, request.cookies)
    if token:
        await in_transaction(services, lambda conn: auth.end_session(conn, token))
        services.credentials.forget(token)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/auth/me", summary="The logged-in user")
async def me(user: AnyUser) -> dict[str, Any]:
    return user.as_json()


@router.get("/users", summary="All users (admin)")
async def users(services: Services, admin: Admin) -> dict[str, Any]:
    return {"users": await in_transaction(services, auth.list_users)}


@router.post("/users", status_code=201, summary="Create a user (admin)")
async def create_user(body: NewUser, services: Services, admin: Admin) -> dict[str, Any]:
    user = await in_transaction(
        services,
        lambda conn: auth.create_user(conn, body.username, body.password, body.role, body.machines),
    )
    return user.as_json()  # type: ignore[no-any-return]


@router.patch(
    "/users/{username}", summary="Change a user's role, machines, state or password (admin)"
)
async def change_user(
    username: Username, body: UserChange, services: Services, admin: Admin
) -> dict[str, Any]:
    if body.machines is not None and body.all_machines:
        raise ApiError(422, "all_machines", "give either machines or all_machines, not both")
    if username == admin.username and (body.disabled or (body.role and body.role != "admin")):
        raise ApiError(422, "role", "an admin cannot demote or disable their own account")

    def work(conn: psycopg.Connection) -> auth.User:
        machines: object = ...
        if body.all_machines:
            machines = None
        elif body.machines is not None:
            machines = body.machines
        user = auth.update_user(
            conn, username, role=body.role, machines=machines, disabled=body.disabled
        )
        if body.password is not None:
            auth.set_password(conn, username, body.password)
        return user

    user = await in_transaction(services, work)
    services.credentials.sessions.clear()
    return user.as_json()  # type: ignore[no-any-return]


@router.delete("/users/{username}", status_code=204, summary="Delete a user (admin)")
async def delete_user(username: Username, services: Services, admin: Admin) -> Response:
    if username == admin.username:
        raise ApiError(422, "username", "an admin cannot delete their own account")
    if not await in_transaction(services, lambda conn: auth.delete_user(conn, username)):
        raise ApiError(404, "username", f"no user {username!r}")
    services.credentials.sessions.clear()
    return Response(status_code=204)


@router.get("/edge-keys", summary="Ingest API keys of all edges, without the secrets (admin)")
async def edge_keys(services: Services, admin: Admin) -> dict[str, Any]:
    return {"keys": await in_transaction(services, auth.list_edge_keys)}


@router.post(
    "/edges/{edge_id}/keys",
    status_code=201,
    summary="Issue an ingest API key for an edge (admin); shown once",
)
async def create_edge_key(edge_id: EdgeId, services: Services, admin: Admin) -> dict[str, Any]:
    key = await in_transaction(
        services, lambda conn: auth.create_edge_key(conn, edge_id, admin.username)
    )
    return {"edge_id": edge_id, "key_id": key.split("_")[1], "api_key": key}


@router.delete("/edge-keys/{key_id}", status_code=204, summary="Revoke an ingest key (admin)")
async def revoke_edge_key(
    key_id: Annotated[str, Path(pattern=r"^[0-9a-f]{12}$")], services: Services, admin: Admin
) -> Response:
    if not await in_transaction(services, lambda conn: auth.revoke_edge_key(conn, key_id)):
        raise ApiError(404, "key_id", f"no active key {key_id!r}")
    services.credentials.keys.clear()
    return Response(status_code=204)
