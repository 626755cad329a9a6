"""GET /api/v1/edge/thresholds/{machine_id}: the resolved table and its version, for the
edge that serves the machine only (real PostgreSQL, the app in process)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from fastapi.testclient import TestClient

from cloud.accounts import create_edge_key
from cloud.api.app import create_app
from cloud.settings import CloudSettings
from shared.message import format_ts
from tests.support.accounts import add_user, bearer, login

pytestmark = pytest.mark.integration

BOOTSTRAP = "b" * 32


@pytest.fixture
def api(database_url: str) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str]]]:
    """The client, an admin's headers, and the ingest keys of edges rig-1 and rig-2."""
    settings = CloudSettings(database_url=database_url, ingest_api_key=BOOTSTRAP)
    with psycopg.connect(database_url) as conn, conn.transaction():
        keys = {edge: create_edge_key(conn, edge, None) for edge in ("rig-1", "rig-2")}
    password = add_user(database_url, "admin", "admin")
    with TestClient(create_app(settings)) as client:
        admin = bearer(login(client, "admin", password))
        client.cookies.clear()
        yield client, admin, keys


def _get(client: TestClient, machine: str, key: str) -> tuple[int, dict[str, object]]:
    response = client.get(f"/api/v1/edge/thresholds/{machine}", headers={"X-API-KEY": key})
    return response.status_code, response.json()


def test_the_table_and_its_version_follow_an_admins_change(
    api: tuple[TestClient, dict[str, str], dict[str, str]],
) -> None:
    client, admin, keys = api
    status, before = _get(client, "A", keys["rig-1"])
    assert status == 200
    assert re.fullmatch(r"[0-9a-f]{16}", str(before["version"]))
    assert _get(client, "A", keys["rig-1"])[1]["version"] == before["version"]  # stable
    table = before["thresholds"]
    assert isinstance(table, dict) and table["temperature"]["source"] == "default"
    changed = client.put(
        "/api/v1/machines/A/thresholds/temperature",
        headers=admin,
        json={"critical_low": 10.0, "critical_high": 90.0},
    )
    assert changed.status_code == 200, changed.text
    _, after = _get(client, "A", keys["rig-1"])
    assert after["version"] != before["version"]
    entry = after["thresholds"]["temperature"]  # type: ignore[index]
    assert entry == {
        "critical_low": 10.0,
        "critical_high": 90.0,
        "warn_low": 11.0,
        "warn_high": 81.0,
        "source": "machine",
    }
    # Another machine's table is not touched by A's override.
    assert _get(client, "B", keys["rig-1"])[1]["version"] == before["version"]


def test_an_edge_key_reads_only_the_machines_it_serves(
    api: tuple[TestClient, dict[str, str], dict[str, str]],
) -> None:
    client, _, keys = api
    reading = {
        "machine_id": "A",
        "edge_id": "rig-1",
        "seq": 1,
        "ts": format_ts(datetime.now(UTC)),
        "values": {"rpm": 1500.0},
    }
    posted = client.post("/api/v1/ingest", json=reading, headers={"X-API-KEY": keys["rig-1"]})
    assert posted.status_code in (200, 201), posted.text
    assert _get(client, "A", keys["rig-1"])[0] == 200
    status, refused = _get(client, "A", keys["rig-2"])
    assert status == 403 and refused["field"] == "machine_id"
    assert "rig-2" in str(refused["error"])
    # A machine nobody has sent yet is open (a new rig gets its limits before its first
    # reading); the bootstrap key reads every machine.
    assert _get(client, "B", keys["rig-2"])[0] == 200
    assert _get(client, "A", BOOTSTRAP)[0] == 200
    assert _get(client, "A", "wrong-key")[0] == 401
    assert _get(client, "not a machine", keys["rig-1"])[0] == 422
