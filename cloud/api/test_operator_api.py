"""The operator API on a real PostgreSQL: login and users, machine scoping, latest values,
thresholds, custom sensors, anomalies with paging, history from rollups, and the bad-input
answers of each (status, and the field named)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.api.deps import CACHE_SECONDS
from cloud.db.partitions import maintain_partitions
from cloud.settings import CloudSettings
from cloud.storage import rebuild_minute_rollups, store_readings
from shared.message import Reading
from tests.support.accounts import add_user, bearer, login

pytestmark = pytest.mark.integration
KEY = "k" * 32
START = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)


class Api:
    def __init__(self, client: TestClient, tokens: dict[str, str]) -> None:
        self.client = client
        self.tokens = tokens

    def get(self, who: str, url: str, **kw: object):
        return self.client.get(url, headers=bearer(self.tokens[who]), **kw)

    def send(self, who: str, method: str, url: str, body: object = None):
        return self.client.request(method, url, json=body, headers=bearer(self.tokens[who]))


def _logged_in_api(database_url: str) -> Iterator[Api]:
    with TestClient(
        create_app(CloudSettings(database_url=database_url, ingest_api_key=KEY))
    ) as client:
        tokens = {}
        for who, role, machines in (
            ("admin", "admin", None),
            ("op", "operator", ["A"]),
            ("viewer", "viewer", None),
        ):
            tokens[who] = login(client, who, add_user(database_url, who, role, machines))
        client.cookies.clear()
        yield Api(client, tokens)


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    """A fresh database and app for a test that changes things."""
    yield from _logged_in_api(database_url)


@pytest.fixture(scope="module")
def refusing_api(module_database_url: str) -> Iterator[Api]:
    """One database and app for the tests of what the API refuses: a refusal changes
    nothing (each such test checks that), so they need not pay for a fresh app each."""
    yield from _logged_in_api(module_database_url)


def _ingest(api: Api, body: object) -> None:
    response = api.client.post("/api/v1/ingest", json=body, headers={"X-API-KEY": KEY})
    assert response.status_code == 200, response.text


def test_login_cookie_me_logout(api: Api, database_url: str) -> None:
    client = api.client
    wrong = client.post("/api/v1/auth/login", json={"username": "op", "password": "nope"})
    assert (wrong.status_code, wrong.json()["field"]) == (401, "password")
    unknown = client.post("/api/v1/auth/login", json={"username": "ghost", "password": "x" * 12})
    assert unknown.status_code == 401 and unknown.json()["error"] == wrong.json()["error"]
    missing = client.post("/api/v1/auth/login", json={"username": "op"})
    assert (missing.status_code, missing.json()["field"]) == (422, "password")

    password = add_user(database_url, "op2", "operator", ["A", "B"])
    response = client.post("/api/v1/auth/login", json={"username": "op2", "password": password})
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/api/v1/auth/me").json() == {
        "username": "op2",
        "role": "operator",
        "machines": ["A", "B"],
    }
    assert client.post("/api/v1/auth/logout").status_code == 204
    client.cookies.clear()
    # The token of the ended session is dead too (after the per-process cache time).
    time.sleep(CACHE_SECONDS + 0.1)
    assert (
        client.get("/api/v1/auth/me", headers=bearer(response.json()["token"])).status_code == 401
    )


def test_user_administration(api: Api) -> None:
    created = api.send(
        "admin",
        "POST",
        "/api/v1/users",
        {"username": "night-shift", "password": "a-long-password", "role": "viewer"},
    )
    assert created.status_code == 201, created.text
    again = api.send(
        "admin",
        "POST",
        "/api/v1/users",
        {"username": "night-shift", "password": "a-long-password", "role": "viewer"},
    )
    assert (again.status_code, again.json()["field"]) == (422, "username")
    short = api.send(
        "admin", "POST", "/api/v1/users", {"username": "x", "password": "short", "role": "viewer"}
    )
    assert (short.status_code, short.json()["field"]) == (422, "password")
    bad_role = api.send(
        "admin",
        "POST",
        "/api/v1/users",
        {"username": "y", "password": "a-long-password", "role": "root"},
    )
    assert (bad_role.status_code, bad_role.json()["field"]) == (422, "role")
    self_demote = api.send("admin", "PATCH", "/api/v1/users/admin", {"role": "viewer"})
    assert (self_demote.status_code, self_demote.json()["field"]) == (422, "role")
    # One's own password changes only with the current one (POST /api/v1/auth/password).
    self_password = api.send(
        "admin", "PATCH", "/api/v1/users/admin", {"password": "a-new-long-password"}
    )
    assert (self_password.status_code, self_password.json()["field"]) == (422, "password")
    scoped = api.send(
        "admin", "PATCH", "/api/v1/users/night-shift", {"role": "operator", "machines": ["C"]}
    )
    assert scoped.json() == {"username": "night-shift", "role": "operator", "machines": ["C"]}
    names = [u["username"] for u in api.get("admin", "/api/v1/users").json()["users"]]
    assert names == ["admin", "night-shift", "op", "viewer"]
    assert api.send("admin", "DELETE", "/api/v1/users/night-shift").status_code == 204
    assert api.send("admin", "DELETE", "/api/v1/users/night-shift").status_code == 404


def test_operator_sees_only_assigned_machines(api: Api) -> None:
    _ingest(api, {"readings": [{"machine_id": m, "temperature": 70.0} for m in "AB"]})
    assert [m["machine_id"] for m in api.get("op", "/api/v1/machines").json()["machines"]] == ["A"]
    assert [m["machine_id"] for m in api.get("viewer", "/api/v1/machines").json()["machines"]] == [
        "A",
        "B",
    ]
    assert api.get("op", "/api/v1/machines/B/latest").status_code == 403
    refused = api.get("op", "/api/v1/machines/B/history", params={"sensor": "rpm"})
    assert (refused.status_code, refused.json()["field"]) == (403, "machine_id")
    stats = api.get("op", "/api/stats").json()
    assert set(stats["machines"]) == {"A"} and stats["total_readings"] == 1
    assert set(api.get("viewer", "/api/stats").json()["machines"]) == {"A", "B"}


def test_latest_readings_oldest_first(api: Api) -> None:
    _ingest(
        api,
        {
            "readings": [
                {
                    "machine_id": "A",
                    "edge_id": "e",
                    "seq": i,
                    "ts": (START + timedelta(seconds=i)).isoformat(),
                    "values": {"rpm": float(i)},
                    "custom": {"arm_torque": 1.5},
                }
                for i in range(40)
            ]
        },
    )
    body = api.get("viewer", "/api/v1/machines/A/latest", params={"limit": 30}).json()
    assert [r["values"]["rpm"] for r in body["readings"]] == [float(i) for i in range(10, 40)]
    assert body["readings"][-1]["custom_sensors"] == {"arm_torque": 1.5}
    for bad in ({"limit": 0}, {"limit": 1001}, {"limit": "x"}):
        response = api.get("viewer", "/api/v1/machines/A/latest", params=bad)
        assert (response.status_code, response.json()["field"]) == (422, "limit")
    assert api.get("viewer", "/api/v1/machines/bad id!/latest").status_code == 422


def test_thresholds_resolve_machine_then_fleet_then_catalog(api: Api) -> None:
    default = api.get("viewer", "/api/v1/machines/A/thresholds").json()["thresholds"]["rpm"]
    assert default["source"] == "default" and default["critical_high"] == 4200.0
    assert default["warn_high"] == pytest.approx(3780.0)  # default rule: high * 0.9

    fleet = api.send(
        "admin", "PUT", "/api/v1/thresholds/rpm", {"critical_low": 900, "critical_high": 4000}
    )
    assert fleet.status_code == 200, fleet.text
    machine = api.send(
        "admin",
        "PUT",
        "/api/v1/machines/A/thresholds/rpm",
        {"critical_low": 1000, "critical_high": 3500, "warn_high": 3400},
    )
    assert machine.json()["source"] == "machine"
    on_a = api.get("op", "/api/v1/machines/A/thresholds").json()["thresholds"]["rpm"]
    on_b = api.get("viewer", "/api/v1/machines/B/thresholds").json()["thresholds"]["rpm"]
    assert (on_a["critical_high"], on_a["warn_high"], on_a["source"]) == (3500, 3400, "machine")
    assert (on_b["critical_high"], on_b["source"]) == (4000, "fleet")

    cleared = api.send("admin", "DELETE", "/api/v1/machines/A/thresholds/rpm")
    assert cleared.json()["entry"]["source"] == "fleet"
    assert api.send("admin", "DELETE", "/api/v1/machines/A/thresholds/rpm").status_code == 404
    legacy = api.send(
        "admin",
        "POST",
        "/api/thresholds",
        {"sensor": "arm_torque", "machine_id": "A", "critical_high": 50},
    )
    assert legacy.status_code == 200 and legacy.json()["sensor"] == "arm_torque"
    assert (
        "arm_torque"
        in api.get("admin", "/api/thresholds", params={"machine_id": "A"}).json()["thresholds"]
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"critical_low": 10, "critical_high": 5}, "critical_high"),
        ({}, "critical_high"),
        ({"critical_low": 1, "critical_high": 9, "warn_high": 10}, "warn_high"),
        ({"critical_low": 1, "critical_high": 9, "warn_low": 0}, "warn_low"),
        ({"critical_low": 1, "critical_high": 9, "warn_low": 6, "warn_high": 5}, "warn_high"),
        ({"critical_high": 1e300}, "critical_high"),
        ({"critical_high": "hot"}, "critical_high"),
        ({"critical_high": 5, "colour": "red"}, "colour"),
    ],
)
def test_bad_thresholds_are_refused_and_change_nothing(
    refusing_api: Api, body: dict[str, object], field: str
) -> None:
    api = refusing_api
    response = api.send("admin", "PUT", "/api/v1/machines/A/thresholds/rpm", body)
    assert (response.status_code, response.json()["field"]) == (422, field), response.text
    rpm = api.get("admin", "/api/v1/machines/A/thresholds").json()["thresholds"]["rpm"]
    assert rpm["source"] == "default"


def test_threshold_sensor_name_is_checked(refusing_api: Api) -> None:
    response = refusing_api.send(
        "admin", "PUT", "/api/v1/thresholds/Not-A-Sensor", {"critical_high": 1}
    )
    assert (response.status_code, response.json()["field"]) == (422, "sensor")


def test_custom_sensor_registry(api: Api) -> None:
    _ingest(
        api,
        {
            "readings": [
                {"machine_id": "A", "temperature": 1.0, "custom_sensors": {"arm_torque": v}}
                for v in (1.0, 3.0)
            ]
            + [{"machine_id": "B", "custom_sensors": {"mud_flow": 7.0}}]
        },
    )
    listed = api.get("viewer", "/api/v1/custom-sensors").json()["custom_sensors"]
    torque = next(s for s in listed if s["name"] == "arm_torque")
    assert (torque["count"], torque["min"], torque["max"], torque["mean"]) == (2, 1.0, 3.0, 2.0)
    assert torque["machines"] == ["A"] and torque["first_seen"] is not None
    assert [
        s["name"] for s in api.get("op", "/api/v1/custom-sensors").json()["custom_sensors"]
    ] == ["arm_torque"]
    assert api.get("op", "/api/v1/custom-sensors/mud_flow").status_code == 404
    assert api.get("op", "/api/v1/custom-sensors", params={"machine_id": "B"}).status_code == 403

    annotated = api.send(
        "admin",
        "PUT",
        "/api/v1/custom-sensors/arm_torque",
        {"unit": "N·m", "category": "mechanical"},
    )
    assert (annotated.json()["unit"], annotated.json()["count"]) == ("N·m", 2)
    bad = api.send("admin", "PUT", "/api/v1/custom-sensors/arm_torque", {"category": "magic"})
    assert (bad.status_code, bad.json()["field"]) == (422, "category")
    core = api.send("admin", "PUT", "/api/v1/custom-sensors/rpm", {"unit": "x"})
    assert (core.status_code, core.json()["field"]) == (422, "name")
    legacy = api.send(
        "admin",
        "POST",
        "/api/admin/custom-sensors",
        {"name": "bit_depth", "unit": "m", "category": "mechanical"},
    )
    assert legacy.status_code == 200 and legacy.json()["count"] == 0
    names = [
        s["name"] for s in api.get("admin", "/api/admin/custom-sensors").json()["custom_sensors"]
    ]
    assert names == ["arm_torque", "bit_depth", "mud_flow"]


def test_anomalies_paged_newest_first_with_detail(api: Api, database_url: str) -> None:
    readings = [
        Reading(
            "A" if i % 2 else "B",
            "e1",
            i,
            START + timedelta(seconds=i),
            {"rpm": 9000.0},
            detection={
                "method": "thresholds",
                "is_anomaly": True,
                "score": i / 100,
                "sensors": ["rpm"],
            },
        )
        for i in range(25)
    ]
    maintain_partitions(database_url, now=START)
    with psycopg.connect(database_url) as conn, conn.transaction():
        store_readings(conn, readings)
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 5}
        if cursor:
            params["before"] = cursor
        page = api.get("viewer", "/api/v1/anomalies", params=params).json()
        seen += [a["seq"] for a in page["anomalies"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == list(range(24, -1, -1))
    only_a = api.get("op", "/api/v1/anomalies", params={"limit": 100}).json()["anomalies"]
    assert {a["machine_id"] for a in only_a} == {"A"} and len(only_a) == 12
    first = only_a[0]
    detail = api.get("op", f"/api/v1/anomalies/{first['id']}").json()
    assert detail["details"]["method"] == "thresholds"
    assert detail["reading"]["values"] == {"rpm": 9000.0}
    b_id = api.get("viewer", "/api/v1/anomalies", params={"machine_id": "B", "limit": 1}).json()[
        "anomalies"
    ][0]["id"]
    assert api.get("op", f"/api/v1/anomalies/{b_id}").status_code == 404
    for params, field in (
        ({"before": "garbage"}, "before"),
        ({"limit": 501}, "limit"),
        ({"from": "yesterday"}, "from"),
    ):
        response = api.get("viewer", "/api/v1/anomalies", params=params)
        assert (response.status_code, response.json()["field"]) == (422, field)


def test_long_history_comes_from_minute_rollups(api: Api, database_url: str) -> None:
    maintain_partitions(database_url, now=START + timedelta(days=2), ahead_days=1)
    readings = [
        Reading(
            "A",
            "e1",
            i,
            START + timedelta(seconds=10 * i),
            {"rpm": float(i % 60), "temperature": 70.0},
        )
        for i in range(17_280)
    ]
    with psycopg.connect(database_url) as conn, conn.transaction():
        store_readings(conn, readings[:9000])
    with psycopg.connect(database_url) as conn, conn.transaction():
        store_readings(conn, readings[8000:])  # overlap: redelivered rows count once
    params = {
        "sensor": "rpm",
        "from": START.isoformat(),
        "to": (START + timedelta(days=2)).isoformat(),
        "points": 96,
    }
    body = api.get("viewer", "/api/v1/machines/A/history", params=params).json()
    assert body["resolution"] == "minute" and body["bucket_s"] == 1800
    assert len(body["points"]) == 96
    assert sum(p["n"] for p in body["points"]) == 17_280
    assert all((p["min"], p["max"]) == (0.0, 59.0) for p in body["points"])
    # Rollups rebuilt from the rows (after a bulk load or restore) give the same answer.
    with psycopg.connect(database_url) as conn, conn.transaction():
        conn.execute("DELETE FROM sensor_minute_rollup")
        minutes = rebuild_minute_rollups(conn, START, START + timedelta(days=2))
    assert minutes == 2 * 1440
    rebuilt = api.get("viewer", "/api/v1/machines/A/history", params=params).json()
    assert rebuilt["points"] == body["points"]
    raw = api.get(
        "viewer",
        "/api/v1/machines/A/history",
        params={**params, "to": (START + timedelta(hours=1)).isoformat(), "points": 360},
    ).json()
    assert raw["resolution"] == "raw" and sum(p["n"] for p in raw["points"]) == 360


@pytest.mark.parametrize(
    ("method", "url", "field"),
    [
        ("GET", "/api/v1/anomalies/0", "anomaly_id"),
        ("GET", "/api/v1/anomalies/abc", "anomaly_id"),
        ("GET", "/api/v1/custom-sensors/Bad-Name", "name"),
        ("GET", "/api/v1/custom-sensors?machine_id=bad%20id", "machine_id"),
        ("GET", "/api/v1/machines/bad%20id/thresholds", "machine_id"),
        ("POST", "/api/v1/edges/bad%20edge/keys", "edge_id"),
        ("DELETE", "/api/v1/edge-keys/not-hex", "key_id"),
        ("PATCH", "/api/v1/users/bad%20name", "username"),
        ("GET", "/api/thresholds?machine_id=bad%20id", "machine_id"),
    ],
)
def test_bad_path_and_query_parameters_name_the_parameter(
    refusing_api: Api, method: str, url: str, field: str
) -> None:
    response = refusing_api.send("admin", method, url, {} if method == "PATCH" else None)
    assert (response.status_code, response.json()["field"]) == (422, field), response.text


def test_unknown_things_are_404_naming_them(refusing_api: Api) -> None:
    api = refusing_api
    for method, url, field in (
        ("GET", "/api/v1/anomalies/99", "anomaly_id"),
        ("GET", "/api/v1/custom-sensors/never_seen", "name"),
        ("DELETE", "/api/v1/edge-keys/0123456789ab", "key_id"),
        ("PATCH", "/api/v1/users/ghost", "username"),
    ):
        response = api.send("admin", method, url, {} if method == "PATCH" else None)
        assert (response.status_code, response.json()["field"]) == (404, field), response.text


def test_lstm_predictions_manifest_path(api: Api) -> None:
    _ingest(
        api,
        {
            "readings": [
                {
                    # An edge's own verdict (edge_id and seq; cloud/scoring.py's trust rule).
                    "machine_id": m,
                    "edge_id": f"rig-{m}",
                    "seq": 1,
                    "temperature": 70.0,
                    "detection": {
                        "method": "hybrid_smart",
                        "is_anomaly": False,
                        "score": 0.4,
                        "probability_ahead": p,
                        "model_version": "v7",
                    },
                }
                for m, p in (("A", 0.12), ("B", 0.91))
            ]
        },
    )
    everything = api.get("viewer", "/api/lstm-predictions").json()["predictions"]
    assert {m: v["probability_ahead"] for m, v in everything.items()} == {"A": 0.12, "B": 0.91}
    assert everything["A"]["model_version"] == "v7"
    assert set(api.get("op", "/api/lstm-predictions").json()["predictions"]) == {"A"}
