"""Every endpoint declares who may call it, and refuses everybody else.

The route table is walked, not listed by hand: a new endpoint without a guard fails the first
test, and each guarded one is called as nobody, as every role it does not allow (and with an
ingest key where a user is wanted, and the other way round).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from cloud.accounts import Role
from cloud.api.app import API_ROUTERS, create_app
from cloud.api.guards import Allow, IngestKeyGuard
from cloud.settings import CloudSettings
from tests.support.accounts import add_user, bearer, login

pytestmark = pytest.mark.integration

KEY = "k" * 32
# Reachable without credentials, on purpose: probes, the login itself, the API's own docs.
PUBLIC = {
    "/healthz",
    "/readyz",
    "/api/v1/auth/login",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
}
SAMPLE_PATH_VALUES = {
    "machine_id": "A",
    "sensor": "rpm",
    "username": "nobody-here",
    "edge_id": "rig-1",
    "key_id": "0123456789ab",
    "anomaly_id": "1",
    "name": "arm_torque",
    "job_id": "1",
    "model_id": "1",
    "rule_id": "1",
    "channel_id": "1",
    "silence_id": "1",
}
WEBSOCKET_PATH = "/api/v1/stream"


def _guards(dependant: Any) -> list[object]:
    found = []
    for dep in dependant.dependencies:
        if isinstance(dep.call, Allow | IngestKeyGuard):
            found.append(dep.call)
        found.extend(_guards(dep))
    return found


def _http_routes(_app: object = None) -> list[APIRoute]:
    return [r for router in API_ROUTERS for r in router.routes if isinstance(r, APIRoute)]


def _url(route: APIRoute) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PATH_VALUES[m.group(1)], route.path)


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app(CloudSettings(database_url="postgresql://unused/x", ingest_api_key=KEY))


def test_every_endpoint_declares_its_callers(app: FastAPI) -> None:
    undeclared = []
    for route in _http_routes(app):
        guards = _guards(route.dependant)
        if route.path in PUBLIC:
            assert not guards, f"{route.path} is public but has a guard"
        elif len(guards) != 1:
            undeclared.append((route.path, sorted(route.methods), len(guards)))
    assert not undeclared, f"endpoints without exactly one guard: {undeclared}"
    websocket_routes = [
        r.path for router in API_ROUTERS for r in router.routes if isinstance(r, APIWebSocketRoute)
    ]
    assert websocket_routes == [WEBSOCKET_PATH]


@pytest.fixture
def client(database_url: str) -> Iterator[tuple[TestClient, dict[Role, str]]]:
    settings = CloudSettings(database_url=database_url, ingest_api_key=KEY)
    with TestClient(create_app(settings)) as test_client:
        tokens = {}
        for role in Role:
            password = add_user(database_url, f"u-{role.value}", role.value)
            tokens[role] = login(test_client, f"u-{role.value}", password)
        test_client.cookies.clear()
        yield test_client, tokens


def _call(client: TestClient, route: APIRoute, headers: dict[str, str]) -> int:
    method = sorted(route.methods - {"HEAD"})[0]
    body = {} if method in {"POST", "PUT", "PATCH"} else None
    return client.request(method, _url(route), json=body, headers=headers).status_code


def test_each_endpoint_refuses_everybody_it_does_not_allow(
    client: tuple[TestClient, dict[Role, str]],
) -> None:
    test_client, tokens = client
    checked = 0
    for route in _http_routes(test_client.app):
        if route.path in PUBLIC:
            continue
        (guard,) = _guards(route.dependant)
        where = f"{sorted(route.methods)} {route.path}"
        assert _call(test_client, route, {}) == 401, f"{where} answered without credentials"
        if isinstance(guard, IngestKeyGuard):
            for role, token in tokens.items():
                status = _call(test_client, route, bearer(token))
                assert status == 401, f"{where} accepted a {role} session instead of a key"
            assert _call(test_client, route, {"X-API-KEY": "wrong"}) == 401
        else:
            assert isinstance(guard, Allow)
            assert _call(test_client, route, {"X-API-KEY": KEY}) == 401, (
                f"{where} accepted an ingest key instead of a user"
            )
            for role, token in tokens.items():
                status = _call(test_client, route, bearer(token))
                if role in guard.roles:
                    assert status not in (401, 403), f"{where} refused allowed role {role}"
                else:
                    assert status == 403, f"{where} let {role} in ({status})"
            if route.path == "/api/v1/auth/logout":
                # The allowed call above ended those sessions: log in again for the rest.
                for role in tokens:
                    test_client.cookies.clear()
                    tokens[role] = _relogin(test_client, role)
        checked += 1
    assert checked >= 25


def _relogin(client: TestClient, role: Role) -> str:
    # add_user made random passwords; a fresh session comes from setting a known one.
    import psycopg

    from cloud.accounts import set_password

    # TestClient types its app as any ASGI app; this one is ours, with its services.
    url = client.app.state.services.settings.database_url  # type: ignore[attr-defined]
    with psycopg.connect(url) as conn, conn.transaction():
        set_password(conn, f"u-{role.value}", "relogin-password")
    token = login(client, f"u-{role.value}", "relogin-password")
    client.cookies.clear()
    return token


def test_stream_refuses_callers_without_a_session(
    client: tuple[TestClient, dict[Role, str]],
) -> None:
    test_client, tokens = client
    for headers in ({}, {"X-API-KEY": KEY}, bearer("not-a-session")):
        with test_client.websocket_connect(WEBSOCKET_PATH, headers=headers) as ws:
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
            assert closed.value.code == 4401
    for role, token in tokens.items():
        with test_client.websocket_connect(WEBSOCKET_PATH, headers=bearer(token)) as ws:
            assert '"type":"hello"' in ws.receive_text(), role
