"""Login defences, sessions and edge-key scope (issue #15 items 2-4).

Unit tests drive the throttle, the origin rule and the ASGI middleware directly (a receive
that fails if the body is read proves a refusal without reading). The integration tests share
one real ``rig-cloud serve`` and database per module: brute force gets 429s while others log
in, a 100 MB POST is refused unread, cross-origin POSTs and WebSockets are refused, a logged-out
or re-scoped user's stream closes, and an edge key stays on its own machines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import uuid
from collections.abc import Iterator, MutableMapping
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from cloud.accounts import Role, User, create_session, session_user
from cloud.api.errors import ApiError
from cloud.api.routers.stream import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED, _still_allowed
from cloud.api.security import SecurityMiddleware, cross_origin_problem
from cloud.api.throttle import HashGate, LoginThrottle
from cloud.db.embedded import EmbeddedPostgres
from cloud.db.migrate import apply_migrations
from cloud.settings import CloudSettings, SettingsError, weak_bootstrap_key
from tests.support.accounts import add_user, bearer, login
from tests.support.processes import Service, free_port, http_ok, wait_until

KEY = "k-" + "z" * 30

# --- unit -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_backs_off_per_address_and_account(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    throttle = LoginThrottle(3, 100, window_s=60, base_delay_s=1, max_delay_s=8, clock=clock)
    with caplog.at_level(logging.WARNING, logger="rig-cloud.auth"):
        for _ in range(3):
            assert throttle.retry_after("1.1.1.1", f"u{_}")[0] == 0
            throttle.failed("1.1.1.1", f"u{_}")
    wait, scope = throttle.retry_after("1.1.1.1", "anyone")
    assert scope == "ip" and wait == pytest.approx(1)
    # Another address is untouched; one burst is one event.
    assert throttle.retry_after("2.2.2.2", "anyone") == (0.0, None)
    assert [r.getMessage() for r in caplog.records].count("login_throttled") == 1
    clock.now += 1.5
    throttle.failed("1.1.1.1", "x")  # doubling, capped at 8
    assert throttle.retry_after("1.1.1.1", "x")[0] == pytest.approx(2)
    for _ in range(5):
        throttle.failed("1.1.1.1", "x")
    assert throttle.retry_after("1.1.1.1", "x")[0] == pytest.approx(8)
    clock.now += 61 + 8  # a quiet window forgets
    throttle.failed("1.1.1.1", "x")
    assert throttle.retry_after("1.1.1.1", "x")[0] == 0


def test_throttle_per_account_and_success_clears_it() -> None:
    clock = Clock()
    throttle = LoginThrottle(100, 2, window_s=60, clock=clock)
    throttle.failed("1.1.1.1", "Admin")
    throttle.failed("2.2.2.2", "admin")  # case-folded: one budget
    assert throttle.retry_after("3.3.3.3", "ADMIN")[1] == "account"
    assert throttle.retry_after("3.3.3.3", "other")[0] == 0
    throttle.succeeded("admin")
    assert throttle.retry_after("3.3.3.3", "admin")[0] == 0


@pytest.mark.parametrize(
    ("headers", "scheme", "refused"),
    [
        ({"host": "rig.example:8080", "origin": "http://rig.example:8080"}, "http", False),
        ({"host": "rig.example", "origin": "https://rig.example:443"}, "https", False),
        ({"host": "rig.example:8080", "origin": "http://rig.example:8081"}, "http", True),
        ({"host": "rig.example", "origin": "https://evil.example"}, "https", True),
        ({"host": "rig.example", "origin": "http://rig.example"}, "https", True),
        ({"host": "rig.example", "origin": "null"}, "http", True),
        ({"host": "rig.example", "sec-fetch-site": "same-site"}, "http", True),
        ({"host": "rig.example", "sec-fetch-site": "cross-site"}, "http", True),
        ({"host": "rig.example", "sec-fetch-site": "same-origin"}, "http", False),
        ({"host": "rig.example"}, "http", False),  # not a browser: an edge, curl
        ({"host": "rig.example:8080", "origin": "http://rig.example:8080"}, "ws", False),
    ],
)
def test_cross_origin_rule(headers: dict[str, str], scheme: str, refused: bool) -> None:
    scope = {
        "type": "http",
        "scheme": scheme,
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }
    assert (cross_origin_problem(scope) is not None) is refused


def test_weak_bootstrap_keys_are_named() -> None:
    assert weak_bootstrap_key("CHANGE-ME")
    assert weak_bootstrap_key("please-change-me-" + "0" * 40)
    assert weak_bootstrap_key("short")
    assert weak_bootstrap_key("0f" * 32) is None


async def _run(
    middleware: SecurityMiddleware, scope: dict[str, Any], chunks: list[bytes] | None
) -> tuple[list[dict[str, Any]], int]:
    """Messages sent, and how many body chunks the app pulled (None: reading fails)."""
    sent: list[dict[str, Any]] = []
    pulled = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        assert chunks is not None, "the body was read"
        pulled += 1
        more = pulled < len(chunks)
        return {"type": "http.request", "body": chunks[pulled - 1], "more_body": more}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    await middleware(scope, receive, send)
    return sent, pulled


async def _reading_app(scope: Any, receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


def _http_scope(path: str, headers: dict[str, str], method: str = "POST") -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "scheme": "https",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }


def test_body_limit_refuses_declared_and_streamed_bodies() -> None:
    asyncio.run(_body_limit())


async def _body_limit() -> None:
    middleware = SecurityMiddleware(_reading_app, lambda path: 1000)
    sent, _ = await _run(
        middleware,
        _http_scope("/api/v1/auth/login", {"host": "h", "content-length": str(100 * 2**20)}),
        None,
    )
    assert sent[0]["status"] == 413
    # Chunked, no length: cut off after the limit, not read to the end.
    chunks = [b"x" * 400] * 1000
    sent, pulled = await _run(middleware, _http_scope("/x", {"host": "h"}), chunks)
    assert sent[0]["status"] == 413 and pulled == 3
    sent, _ = await _run(middleware, _http_scope("/x", {"host": "h"}), [b"ok"])
    assert sent[0]["status"] == 200
    # Over TLS: HSTS on the answer.
    assert (b"strict-transport-security", b"max-age=31536000; includeSubDomains") in sent[0][
        "headers"
    ]


def test_cross_origin_post_and_websocket_refused_before_the_app() -> None:
    asyncio.run(_cross_origin())


async def _cross_origin() -> None:
    middleware = SecurityMiddleware(_reading_app, lambda path: 1000)
    evil = {"host": "rig.example", "origin": "https://evil.example"}
    sent, _ = await _run(middleware, _http_scope("/api/v1/auth/logout", evil), None)
    assert sent[0]["status"] == 403
    sent, _ = await _run(middleware, {**_http_scope("/", evil, "GET")}, [b""])
    assert sent[0]["status"] == 200  # reading is not changing
    ws = {**_http_scope("/api/v1/stream", evil, "GET"), "type": "websocket"}
    sent, _ = await _run(middleware, ws, None)
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": sent[0]["reason"]}]


def test_stream_recheck_rule() -> None:
    scoped = User("op", Role.OPERATOR, ("A",))
    assert _still_allowed(None, frozenset({"A"}))[0] == CLOSE_UNAUTHENTICATED  # type: ignore[index]
    assert _still_allowed(scoped, frozenset({"A"})) is None
    assert _still_allowed(scoped, frozenset({"A", "B"}))[0] == CLOSE_FORBIDDEN  # type: ignore[index]
    assert _still_allowed(scoped, None)[0] == CLOSE_FORBIDDEN  # type: ignore[index]
    assert _still_allowed(User("a", Role.ADMIN, None), None) is None


# --- integration: one server per module -------------------------------------------------


@pytest.fixture(scope="module")
def server(
    pg_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin_url = f"postgresql://postgres@127.0.0.1:{pg_server.port}/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = f"postgresql://postgres@127.0.0.1:{pg_server.port}/{name}"
    apply_migrations(database_url)
    log_dir = tmp_path_factory.mktemp("security-logs")
    port = free_port()
    # The default RIG_FORWARDED_ALLOW_IPS trusts a proxy on localhost: the tests play several
    # client addresses through X-Forwarded-For.
    env = {"DATABASE_URL": database_url, "RIG_INGEST_API_KEY": KEY}
    api = Service("api", ["cloud.cli", "serve", "--port", str(port)], log_dir, env).start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(f"{base}/readyz"), 60, "api up", services=[api])
        yield base, database_url
    finally:
        api.stop()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _from(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


@pytest.mark.integration
def test_brute_force_gets_429_while_other_users_log_in(server: tuple[str, str]) -> None:
    base, database_url = server
    add_user(database_url, "victim", "admin")
    password = add_user(database_url, "bystander", "viewer")
    statuses = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for i in range(20):
            answer = client.post(
                "/api/v1/auth/login",
                json={"username": "victim", "password": f"guess-{i}"},
                headers=_from("203.0.113.7"),
            )
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                assert int(answer.headers["Retry-After"]) >= 1
        assert set(statuses) == {401, 429} and statuses.count(429) >= 15, statuses
        # Another user, from another address, is not affected.
        ok = client.post(
            "/api/v1/auth/login",
            json={"username": "bystander", "password": password},
            headers=_from("198.51.100.2"),
        )
        assert ok.status_code == 200, ok.text
        metrics = client.get("/metrics").text
        assert 'rig_login_throttled_total{scope="account"}' in metrics


def _raw_request(base: str, head: bytes, body_chunks: list[bytes] | None = None) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks or []:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: what the test wants
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    return answer


@pytest.mark.integration
def test_oversize_posts_refused_without_being_read(server: tuple[str, str]) -> None:
    base, _ = server
    # 100 MB announced, not one byte of it sent: the answer comes anyway.
    head = (
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 104857600\r\n\r\n"
    )
    assert _raw_request(base, head).startswith(b"HTTP/1.1 413")
    # Chunked without a length: cut off once past the limit (64 KiB), long before 100 MB.
    head = (
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (16384, b" " * 16384)
    assert _raw_request(base, head, [chunk] * 64).startswith(b"HTTP/1.1 413")


@pytest.mark.integration
def test_cross_origin_post_and_websocket_refused(server: tuple[str, str]) -> None:
    base, database_url = server
    with httpx.Client(base_url=base, timeout=10) as client:
        token = login(client, "csrf-target", add_user(database_url, "csrf-target", "admin"))
        evil = {"Origin": "http://evil.example", **bearer(token)}
        refused = client.post("/api/v1/machines/A/model/rollback", headers=evil)
        assert refused.status_code == 403 and refused.json()["field"] == "Origin"
        sibling = {"Sec-Fetch-Site": "same-site", **bearer(token)}
        assert client.post("/api/v1/edges/rig-x/keys", headers=sibling).status_code == 403
        own = {"Origin": base, "Sec-Fetch-Site": "same-origin", **bearer(token)}
        assert client.post("/api/v1/edges/rig-x/keys", headers=own).status_code == 201
    ws_url = base.replace("http://", "ws://") + "/api/v1/stream"
    with pytest.raises(InvalidStatus) as refusal:
        connect(ws_url, origin=Origin("http://evil.example"), additional_headers=bearer(token))
    assert refusal.value.response.status_code == 403
    with connect(ws_url, origin=Origin(base), additional_headers=bearer(token)) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "hello"


def _close_code(ws: Any, timeout: float = 30) -> int:
    """Read until the server closes; its close code."""
    try:
        while True:
            ws.recv(timeout=timeout)
    except ConnectionClosed as closed:
        assert closed.rcvd is not None
        return int(closed.rcvd.code)


@pytest.mark.integration
def test_stream_closes_on_logout_and_on_rescope(server: tuple[str, str]) -> None:
    base, database_url = server
    ws_url = base.replace("http://", "ws://") + "/api/v1/stream"
    with httpx.Client(base_url=base, timeout=10) as client:
        admin = login(client, "scoper", add_user(database_url, "scoper", "admin"))
        password = add_user(database_url, "watcher", "operator", ["A", "B"])
        first = login(client, "watcher", password)
        second = login(client, "watcher", password)
        with connect(ws_url, additional_headers=bearer(first)) as ws:
            assert json.loads(ws.recv(timeout=10))["machines"] == ["A", "B"]
            assert client.post("/api/v1/auth/logout", headers=bearer(first)).status_code == 204
            assert _close_code(ws) == CLOSE_UNAUTHENTICATED
        with connect(ws_url, additional_headers=bearer(second)) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "hello"
            changed = client.patch(
                "/api/v1/users/watcher", json={"machines": ["A"]}, headers=bearer(admin)
            )
            assert changed.status_code == 200, changed.text
            assert _close_code(ws) == CLOSE_FORBIDDEN


@pytest.mark.integration
def test_edge_keys_stay_on_their_machines(server: tuple[str, str]) -> None:
    base, database_url = server
    with httpx.Client(base_url=base, timeout=10) as client:
        admin = bearer(login(client, "keymaster", add_user(database_url, "keymaster", "admin")))
        issued = client.post("/api/v1/edges/rig-1/keys", json={"machines": ["M1"]}, headers=admin)
        assert issued.status_code == 201 and issued.json()["machines"] == ["M1"]
        rig1 = {"X-API-KEY": issued.json()["api_key"]}
        rig2 = {
            "X-API-KEY": client.post("/api/v1/edges/rig-2/keys", headers=admin).json()["api_key"]
        }
        assert client.post("/api/v1/edges/default/keys", headers=admin).status_code == 422

        def write(key: dict[str, str], machine: str, seq: int, edge: str) -> httpx.Response:
            reading = {"machine_id": machine, "edge_id": edge, "seq": seq, "temperature": 70.0}
            return client.post("/api/v1/ingest", json=reading, headers=key)

        assert write(rig1, "M1", 1, "rig-1").status_code == 200
        refused = write(rig1, "M2", 2, "rig-1")
        assert refused.status_code == 403 and refused.json()["field"] == "$.machine_id"
        # An unbound key may not write a machine another edge serves.
        assert write(rig2, "M1", 1, "rig-2").status_code == 403
        assert write(rig2, "M9", 1, "rig-2").status_code == 200
        # An integrator's readings (bootstrap key) make no edge the owner.
        integrator = {"machine_id": "M5", "temperature": 70.0}
        assert client.post("/api/v1/ingest", json=integrator, headers={"X-API-KEY": KEY}).is_success
        assert write(rig2, "M5", 2, "rig-2").status_code == 200

        with psycopg.connect(database_url) as conn:
            ids = [
                conn.execute(
                    "INSERT INTO model_registry (machine_id, version, status, strategy, manifest, "
                    "bundle, bundle_sha256) VALUES (%s, %s, %s, 'x', '{}', %s, 'sha') "
                    "RETURNING id",
                    (machine, version, status, b"bundle"),
                ).fetchone()[0]  # type: ignore[index]
                for machine, version, status in [
                    ("M1", 1, "active"),
                    ("M1", 2, "rejected"),
                    ("M9", 1, "active"),
                ]
            ]
        assert (
            client.get(f"/api/v1/edge/models/M1/bundle/{ids[0]}", headers=rig1).status_code == 200
        )
        # A refused candidate is never served, nor another edge's machine's model.
        assert (
            client.get(f"/api/v1/edge/models/M1/bundle/{ids[1]}", headers=rig1).status_code == 404
        )
        assert (
            client.get(f"/api/v1/edge/models/M9/bundle/{ids[2]}", headers=rig1).status_code == 403
        )
        assert client.get("/api/v1/edge/models/M9", headers=rig1).status_code == 403
        assert client.get("/api/v1/edge/models/M1", headers=rig2).status_code == 403


def test_a_weak_bootstrap_key_stops_the_start_naming_the_variable() -> None:
    for weak in ("CHANGE-ME", "short-key", "example-ingest-key-" + "0123456789" * 3):
        with pytest.raises(SettingsError, match="RIG_INGEST_API_KEY"):
            CloudSettings.from_env({"RIG_INGEST_API_KEY": weak})
    strong = CloudSettings.from_env({"RIG_INGEST_API_KEY": "3c" * 20})
    assert strong.ingest_api_key == "3c" * 20


@pytest.mark.integration
def test_own_password_change_ends_other_sessions(server: tuple[str, str]) -> None:
    base, database_url = server
    password = add_user(database_url, "changer", "viewer")
    with httpx.Client(base_url=base, timeout=10) as client:
        mine = bearer(login(client, "changer", password))
        other = bearer(login(client, "changer", password))
        client.cookies.clear()
        wrong = client.post(
            "/api/v1/auth/password",
            json={"current_password": "not-it-at-all", "new_password": "a-new-password-1"},
            headers=mine,
        )
        assert wrong.status_code == 401 and wrong.json()["field"] == "current_password"
        changed = client.post(
            "/api/v1/auth/password",
            json={"current_password": password, "new_password": "a-new-password-1"},
            headers=mine,
        )
        assert changed.status_code == 200, changed.text
        assert client.get("/api/v1/auth/me", headers=mine).status_code == 200
        wait_until(
            lambda: client.get("/api/v1/auth/me", headers=other).status_code == 401,
            10,
            "the other session ended",
        )
        login(client, "changer", "a-new-password-1")


@pytest.mark.integration
def test_an_idle_session_ends_before_its_lifetime(server: tuple[str, str]) -> None:
    _, database_url = server
    add_user(database_url, "idler", "viewer")
    with psycopg.connect(database_url) as conn, conn.transaction():
        token = create_session(conn, "idler")
        assert session_user(conn, token) is not None
        conn.execute(
            "UPDATE user_sessions SET last_seen = now() - interval '31 minutes' "
            "WHERE username = 'idler'"
        )
        assert session_user(conn, token) is None
        assert session_user(conn, token, idle=timedelta(hours=1)) is not None


def test_hash_gate_bounds_running_and_waiting_hashes() -> None:
    async def scenario() -> None:
        gate = HashGate(1, max_waiting=1)
        release = asyncio.Event()

        async def hold() -> None:
            async with gate.slot():
                await release.wait()

        first = asyncio.create_task(hold())
        await asyncio.sleep(0)
        second = asyncio.create_task(hold())  # waits for the slot
        await asyncio.sleep(0)
        assert gate.waiting == 1
        with pytest.raises(ApiError) as refused:
            async with gate.slot():
                pass
        assert refused.value.status == 503
        release.set()
        await asyncio.gather(first, second)
        assert gate.waiting == 0 and not gate.semaphore.locked()

    asyncio.run(scenario())
