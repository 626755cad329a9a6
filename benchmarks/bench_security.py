"""Security battery: attacks against a live ``rig-cloud serve`` (embedded PostgreSQL, no
Kafka). Prints progress to stderr and, last on stdout, one JSON object: per attack the
number of attempts ``tried`` and how many ``got_through``, and the totals (``got_through``
must be 0).

Attacks (issue #15 items 2-4):

- ``login_spray_one_address``: wrong passwords for ever new user names from one client
  address (X-Forwarded-For through the trusted local proxy); every attempt past the
  address's budget must get 429 with Retry-After;
- ``login_one_account_many_addresses``: wrong passwords for one account from ever new
  addresses; past the account's budget, 429;
- ``oversize_declared``: a 100 MB Content-Length on every POST/PUT/PATCH route, no body
  sent: a 413 must come back without the body being read;
- ``oversize_streamed``: a chunked body larger than the route's limit: 413;
- ``cross_origin_post`` / ``cross_site_fetch``: every state-changing route with an admin's
  session and ``Origin: http://evil.example`` / ``Sec-Fetch-Site: same-site``: 403;
- ``cross_origin_websocket``: the live stream opened from another origin: refused;
- ``wrong_principal``: every guarded route (walked from the route table, like
  cloud/api/test_access.py) called with no credentials, a wrong key, a key where a user is
  wanted, a session where a key is wanted, and each role it does not allow: 401/403;
- ``machine_scope``: every route with ``{machine_id}`` called for a machine the user is not
  assigned (viewer, operator, admin scoped to one machine): 403/404;
- ``edge_key_scope``: an edge key bound to machine M1 writing M2 (JSON and line protocol),
  another edge writing M1, and model/threshold/RUL downloads for M2: 403/404;
- ``stale_stream``: a stream that stays open after logout or after its machine was taken
  away (counted when the server does not close it);
- ``audit_tampering``: an audit row edited, deleted or inserted, or the newest one dropped,
  straight in the database: ``GET /api/v1/audit/verify`` must report each.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
from fastapi.routing import APIRoute
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from cloud.accounts import Role
from cloud.api.app import API_ROUTERS
from cloud.api.guards import Allow, IngestKeyGuard
from cloud.db.embedded import EmbeddedPostgres
from cloud.db.migrate import apply_migrations
from tests.support.accounts import add_user, bearer, login
from tests.support.processes import Service, free_port, http_ok, wait_until

KEY = "bench-security-" + "9f3a" * 8
EVIL = "http://evil.example"
PUBLIC = {"/healthz", "/readyz", "/api/v1/auth/login", "/openapi.json", "/docs", "/redoc"}
SAMPLE = {
    "machine_id": "M1",
    "sensor": "temperature",
    "username": "nobody-here",
    "edge_id": "rig-x",
    "key_id": "0123456789ab",
    "anomaly_id": "1",
    "name": "arm_torque",
    "job_id": "1",
    "model_id": "1",
    "rule_id": "1",
    "channel_id": "1",
    "silence_id": "1",
}
CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
# A valid body where an empty one would be refused before the scope is even looked at.
BODIES: dict[str, dict[str, Any]] = {
    "/api/v1/machines/{machine_id}/thresholds/{sensor}": {"critical_high": 150.0},
    "/api/v1/thresholds/{sensor}": {"critical_high": 150.0},
}


# Required query parameters, so a call reaches the handler's own checks.
QUERIES: dict[str, dict[str, str]] = {
    "/api/v1/machines/{machine_id}/history": {"sensor": "temperature"},
}


def _body(route: APIRoute, method: str) -> dict[str, Any] | None:
    return BODIES.get(route.path, {}) if method in {"POST", "PUT", "PATCH"} else None


def _login(client: httpx.Client, username: str, password: str) -> str:
    """A bearer token; the cookie the login set is dropped, so every later call carries only
    the credentials it names (an "anonymous" call must not ride on a stored cookie)."""
    token = login(client, username, password)
    client.cookies.clear()
    return token


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Tally:
    def __init__(self) -> None:
        self.attacks: dict[str, dict[str, Any]] = {}

    def count(self, attack: str, through: bool, what: str) -> None:
        entry = self.attacks.setdefault(attack, {"tried": 0, "got_through": 0, "examples": []})
        entry["tried"] += 1
        if through:
            entry["got_through"] += 1
            if len(entry["examples"]) < 5:
                entry["examples"].append(what)


def _guard(route: APIRoute) -> object | None:
    def walk(dependant: Any) -> list[object]:
        found: list[object] = []
        for dep in dependant.dependencies:
            if isinstance(dep.call, Allow | IngestKeyGuard):
                found.append(dep.call)
            found.extend(walk(dep))
        return found

    guards = walk(route.dependant)
    return guards[0] if guards else None


def _routes() -> list[APIRoute]:
    return [r for router in API_ROUTERS for r in router.routes if isinstance(r, APIRoute)]


def _url(route: APIRoute, **values: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), SAMPLE[m.group(1)]), route.path)


def _method(route: APIRoute) -> str:
    return sorted((route.methods or {"GET"}) - {"HEAD"})[0]


def _raw(base: str, head: bytes, chunks: list[bytes] | None = None) -> int:
    """Send a request by hand; the status line's code (0: no answer)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks or []:
                sock.sendall(chunk)
        except OSError:
            pass  # the server stopped reading and answered: the defence worked
        answer = b""
        while b"\r\n" not in answer:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
    match = re.match(rb"HTTP/1\.1 (\d{3})", answer)
    return int(match.group(1)) if match else 0


def attack_logins(client: httpx.Client, tally: Tally, ip_budget: int, account_budget: int) -> None:
    for i in range(ip_budget + 30):
        answer = client.post(
            "/api/v1/auth/login",
            json={"username": f"spray-{i}", "password": "Winter2026!"},
            headers={"X-Forwarded-For": "203.0.113.50"},
        )
        if i >= ip_budget:
            through = answer.status_code != 429 or "retry-after" not in answer.headers
            tally.count("login_spray_one_address", through, f"#{i}: {answer.status_code}")
    for i in range(account_budget + 30):
        answer = client.post(
            "/api/v1/auth/login",
            json={"username": "bench", "password": f"guess-{i}"},
            headers={"X-Forwarded-For": f"198.18.{i // 250}.{i % 250 + 1}"},
        )
        if i >= account_budget:
            through = answer.status_code != 429
            tally.count("login_one_account_many_addresses", through, f"#{i}: {answer.status_code}")


def attack_bodies(base: str, tally: Tally) -> None:
    for route in _routes():
        method = _method(route)
        if method not in {"POST", "PUT", "PATCH"}:
            continue
        path = _url(route).encode()
        head = (
            b"%s %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: 104857600\r\n\r\n" % (method.encode(), path)
        )
        status = _raw(base, head)
        tally.count("oversize_declared", status != 413, f"{method} {route.path}: {status}")
        head = (
            b"%s %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" % (method.encode(), path)
        )
        # 16 MiB offered in 64 KiB chunks: above every route's limit (ingest 1 MiB, uploads
        # 10 MiB + envelope), refused long before the end.
        chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
        status = _raw(base, head, [chunk] * 256)
        # Refused either way before the body is held: 413 past the limit, or 401 from a
        # guard that runs before a bodyless route would read anything.
        tally.count(
            "oversize_streamed", status not in (401, 413), f"{method} {route.path}: {status}"
        )


def attack_cross_origin(base: str, client: httpx.Client, admin: str, tally: Tally) -> None:
    for route in _routes():
        method = _method(route)
        if method not in CHANGING:
            continue
        for attack, headers in (
            ("cross_origin_post", {"Origin": EVIL}),
            ("cross_site_fetch", {"Sec-Fetch-Site": "same-site"}),
        ):
            answer = client.request(
                method,
                _url(route),
                headers={**headers, **bearer(admin), "X-API-KEY": KEY},
                json={} if method != "DELETE" else None,
            )
            through = answer.status_code != 403 or answer.json().get("field") != "Origin"
            tally.count(attack, through, f"{method} {route.path}: {answer.status_code}")
    ws_url = base.replace("http://", "ws://") + "/api/v1/stream"
    for origin in (EVIL, "null", base.replace("127.0.0.1", "localhost")):
        try:
            with connect(ws_url, origin=Origin(origin), additional_headers=bearer(admin)) as ws:
                ws.recv(timeout=5)
            tally.count("cross_origin_websocket", True, origin)
        except InvalidStatus:
            tally.count("cross_origin_websocket", False, origin)


def attack_principals(
    client: httpx.Client, tokens: dict[Role, str], edge_key: str, tally: Tally
) -> None:
    for route in _routes():
        if route.path in PUBLIC:
            continue
        guard = _guard(route)
        method = _method(route)
        body = _body(route, method)

        def call(
            headers: dict[str, str],
            route: APIRoute = route,
            method: str = method,
            body: dict[str, Any] | None = body,
        ) -> int:
            return client.request(method, _url(route), headers=headers, json=body).status_code

        where = f"{method} {route.path}"
        if guard is None:
            tally.count("wrong_principal", True, f"{where}: no guard")
            continue
        status = call({})
        tally.count("wrong_principal", status != 401, f"{where} anonymous: {status}")
        status = call({"X-API-KEY": "rig_000000000000_forged"})
        tally.count("wrong_principal", status not in (401, 403), f"{where} forged key: {status}")
        if isinstance(guard, IngestKeyGuard):
            for role, token in tokens.items():
                status = call(bearer(token))
                tally.count("wrong_principal", status != 401, f"{where} as {role}: {status}")
        else:
            assert isinstance(guard, Allow)
            status = call({"X-API-KEY": edge_key})
            tally.count("wrong_principal", status != 401, f"{where} edge key: {status}")
            for role, token in tokens.items():
                if role in guard.roles or route.path == "/api/v1/auth/logout":
                    continue
                status = call(bearer(token))
                tally.count("wrong_principal", status != 403, f"{where} as {role}: {status}")


def attack_machine_scope(client: httpx.Client, scoped: dict[str, str], tally: Tally) -> None:
    """Users assigned only M1 ask for M2 on every route that names a machine."""
    for route in _routes():
        if "{machine_id}" not in route.path:
            continue
        guard = _guard(route)
        if not isinstance(guard, Allow):
            continue
        method = _method(route)
        body = _body(route, method)
        for role, token in scoped.items():
            if Role(role) not in guard.roles:
                continue
            answer = client.request(
                method,
                _url(route, machine_id="M2"),
                params=QUERIES.get(route.path),
                headers=bearer(token),
                json=body,
            )
            through = answer.status_code not in (403, 404)
            tally.count(
                "machine_scope", through, f"{method} {route.path} as {role}: {answer.status_code}"
            )


def attack_fleet_writes(client: httpx.Client, scoped_admin: str, tally: Tally) -> None:
    """An admin assigned only M1 changes what applies to M2: fleet-wide or through the
    manifest path naming M2."""
    for method, path, body in (
        ("PUT", "/api/v1/thresholds/temperature", {"critical_high": 150.0}),
        ("DELETE", "/api/v1/thresholds/temperature", None),
        ("POST", "/api/thresholds", {"sensor": "temperature", "critical_high": 150.0}),
        (
            "POST",
            "/api/thresholds",
            {"sensor": "temperature", "machine_id": "M2", "critical_high": 150.0},
        ),
    ):
        answer = client.request(method, path, headers=bearer(scoped_admin), json=body)
        tally.count(
            "machine_scope", answer.status_code != 403, f"{method} {path}: {answer.status_code}"
        )


def attack_edge_keys(client: httpx.Client, rig1: str, rig2: str, tally: Tally) -> None:
    def count(what: str, answer: httpx.Response, allowed: tuple[int, ...] = (403,)) -> None:
        tally.count(
            "edge_key_scope", answer.status_code not in allowed, f"{what}: {answer.status_code}"
        )

    one = {"X-API-KEY": rig1}
    reading = {"machine_id": "M2", "edge_id": "rig-1", "seq": 90, "temperature": 70.0}
    count("rig-1 writes M2", client.post("/api/v1/ingest", json=reading, headers=one))
    batch = {"readings": [{**reading, "machine_id": "M1", "seq": 91}, {**reading, "seq": 92}]}
    count("rig-1 batch with M2", client.post("/api/v1/ingest", json=batch, headers=one))
    line = "m,machine_id=M2,edge_id=rig-1 temperature=70\n"
    count(
        "rig-1 line protocol M2",
        client.post("/api/v1/ingest/influx", content=line, headers=one),
    )
    other = {"machine_id": "M1", "edge_id": "rig-2", "seq": 1, "temperature": 70.0}
    count(
        "rig-2 (unbound) writes M1",
        client.post("/api/v1/ingest", json=other, headers={"X-API-KEY": rig2}),
    )
    named = {**reading, "edge_id": "rig-2", "machine_id": "M1"}
    count("rig-1 writes as rig-2", client.post("/api/v1/ingest", json=named, headers=one))
    for path in (
        "/api/v1/edge/models/M2",
        "/api/v1/edge/models/M2/bundle/1",
        "/api/v1/edge/thresholds/M2",
        "/api/v1/edge/models/M2/rul",
    ):
        count(f"rig-1 GET {path}", client.get(path, headers=one), (403, 404))


def attack_stale_streams(
    base: str, client: httpx.Client, url: str, admin: str, tally: Tally
) -> None:
    ws_url = base.replace("http://", "ws://") + "/api/v1/stream"

    def closes(token: str, act: Callable[[], object]) -> bool:
        with connect(ws_url, additional_headers=bearer(token)) as ws:
            ws.recv(timeout=10)  # hello
            act()
            deadline = time.monotonic() + 20
            try:
                while time.monotonic() < deadline:
                    ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            except (ConnectionClosed, TimeoutError):
                return ws.close_code in (4401, 4403)
        return False

    password = add_user(url, "streamer", "operator", ["M1", "M2"])
    token = _login(client, "streamer", password)
    ok = closes(token, lambda: client.post("/api/v1/auth/logout", headers=bearer(token)))
    tally.count("stale_stream", not ok, "after logout")
    token = _login(client, "streamer", password)
    ok = closes(
        token,
        lambda: (
            client.patch("/api/v1/users/streamer", json={"machines": ["M1"]}, headers=bearer(admin))
            and None
        ),
    )
    tally.count("stale_stream", not ok, "after losing machine M2")


# Tampering with the audit trail straight in the database (a superuser, triggers off), each
# undone before the next: GET /api/v1/audit/verify must report every one.
AUDIT_TAMPERS: dict[str, str] = {
    "edit": "UPDATE audit_log SET body = body || ' ' WHERE category = 'change' AND seq = 2",
    "delete": "DELETE FROM audit_log WHERE category = 'change' AND seq = 2",
    "insert": (
        "INSERT INTO audit_log SELECT category, seq, at + interval '1 second', actor, action, "
        "resource, outcome, ip, body, prev_hash, hash FROM audit_log "
        "WHERE category = 'change' AND seq = 3"
    ),
    "drop_newest": (
        "DELETE FROM audit_log WHERE category = 'change' AND seq = "
        "(SELECT max(seq) FROM audit_log WHERE category = 'change')"
    ),
}


def attack_audit(client: httpx.Client, url: str, admin: str, tally: Tally) -> None:
    for n in range(4):  # a few more changes, so the chain has rows to tamper with
        client.post(f"/api/v1/edges/rig-audit-{n}/keys", headers=bearer(admin))

    def verified() -> bool:
        answer = client.get("/api/v1/audit/verify", headers=bearer(admin))
        assert answer.status_code == 200, answer.text
        return bool(answer.json()["ok"])

    if not verified():
        tally.count("audit_tampering", True, "the untouched chain does not verify")
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "CREATE TEMP TABLE bench_change AS SELECT * FROM audit_log WHERE category = 'change'"
        )
        for name, sql in AUDIT_TAMPERS.items():
            conn.execute(sql)
            tally.count("audit_tampering", verified(), name)
            conn.execute("DELETE FROM audit_log WHERE category = 'change'")
            conn.execute("INSERT INTO audit_log SELECT * FROM bench_change")
            if not verified():
                tally.count("audit_tampering", True, f"chain not restored after {name}")
                return


def run(work: Path) -> dict[str, Any]:
    pg = EmbeddedPostgres(work / "pg")
    url = pg.start()
    api: Service | None = None
    tally = Tally()
    try:
        apply_migrations(url)
        port = free_port()
        env = {"DATABASE_URL": url, "RIG_INGEST_API_KEY": KEY}
        api = Service("api", ["cloud.cli", "serve", "--port", str(port)], work, env).start()
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ok(f"{base}/readyz"), 90, "api up", services=[api])
        with httpx.Client(base_url=base, timeout=30) as client:
            add_user(url, "bench", "admin")
            # Each login from its own address: the battery's own logins are not the attack.
            tokens: dict[Role, str] = {}
            for n, role in enumerate(Role):
                password = add_user(url, f"u-{role.value}", role.value)
                client.headers["X-Forwarded-For"] = f"192.0.2.{n + 10}"
                tokens[role] = _login(client, f"u-{role.value}", password)
            scoped: dict[str, str] = {}
            for n, role in enumerate(Role):
                password = add_user(url, f"s-{role.value}", role.value, ["M1"])
                client.headers["X-Forwarded-For"] = f"192.0.2.{n + 20}"
                scoped[role.value] = _login(client, f"s-{role.value}", password)
            client.headers["X-Forwarded-For"] = "192.0.2.30"
            admin = _login(client, "root", add_user(url, "root", "admin"))
            del client.headers["X-Forwarded-For"]
            rig1 = client.post(
                "/api/v1/edges/rig-1/keys", json={"machines": ["M1"]}, headers=bearer(admin)
            ).json()["api_key"]
            rig2 = client.post("/api/v1/edges/rig-2/keys", headers=bearer(admin)).json()["api_key"]
            first = {"machine_id": "M1", "edge_id": "rig-1", "seq": 1, "temperature": 70.0}
            assert client.post("/api/v1/ingest", json=first, headers={"X-API-KEY": rig1}).is_success

            _note("login brute force ...")
            attack_logins(client, tally, ip_budget=10, account_budget=5)
            client.headers["X-Forwarded-For"] = "192.0.2.99"
            legit = client.post(
                "/api/v1/auth/login",
                json={"username": "u-viewer", "password": "wrong-on-purpose"},
            )
            # Another user from another address is still answered (401, not 429).
            tally.count("login_others_throttled", legit.status_code != 401, str(legit.status_code))
            del client.headers["X-Forwarded-For"]
            _note("oversize bodies ...")
            attack_bodies(base, tally)
            _note("cross-origin requests ...")
            attack_cross_origin(base, client, tokens[Role.ADMIN], tally)
            _note("wrong principals on every route ...")
            attack_principals(client, tokens, rig1, tally)
            _note("machine scope on every route ...")
            attack_machine_scope(client, scoped, tally)
            attack_fleet_writes(client, scoped["admin"], tally)
            _note("edge key scope ...")
            attack_edge_keys(client, rig1, rig2, tally)
            _note("stale streams ...")
            attack_stale_streams(base, client, url, admin, tally)
            _note("audit tampering ...")
            attack_audit(client, url, admin, tally)
    finally:
        if api is not None:
            api.stop()
        pg.stop()
    tried = sum(a["tried"] for a in tally.attacks.values())
    through = sum(a["got_through"] for a in tally.attacks.values())
    for name, entry in tally.attacks.items():
        if not entry["examples"]:
            del entry["examples"]
        _note(f"{name}: {entry}")
    return {"tried": tried, "got_through": through, "attacks": tally.attacks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-security-") as tmp:
        result = run(Path(tmp))
    print(json.dumps(result))
    sys.exit(0 if result["got_through"] == 0 else 1)


if __name__ == "__main__":
    main()
