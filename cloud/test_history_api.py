"""GET /api/v1/machines and the downsampled history endpoint on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.db.partitions import maintain_partitions
from cloud.settings import CloudSettings
from cloud.storage import store_readings
from shared.message import Reading
from tests.support.accounts import add_user, login

pytestmark = pytest.mark.integration
START = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def client(module_database_url: str) -> Iterator[TestClient]:
    """One hour of readings and a logged-in viewer, shared: every test here only reads."""
    database_url = module_database_url
    maintain_partitions(database_url, now=START)
    readings = [
        Reading(
            "A",
            "e1",
            i,
            START + timedelta(seconds=i),
            {"rpm": float(i)},
            {"arm_torque": float(i % 10)},
        )
        for i in range(3600)
    ]
    with psycopg.connect(database_url) as conn, conn.transaction():
        store_readings(conn, readings)
    settings = CloudSettings(database_url=database_url, ingest_api_key="k" * 32)
    password = add_user(database_url, "viewer", "viewer")
    with TestClient(create_app(settings)) as test_client:
        login(test_client, "viewer", password)
        yield test_client


def test_history_is_bucketed_with_min_max_avg(client: TestClient) -> None:
    params = {
        "sensor": "rpm",
        "from": START.isoformat(),
        "to": (START + timedelta(hours=1)).isoformat(),
        "points": 60,
    }
    body = client.get("/api/v1/machines/A/history", params=params).json()
    assert body["bucket_s"] == 60.0 and len(body["points"]) == 60
    first, last = body["points"][0], body["points"][-1]
    assert (first["min"], first["max"], first["avg"], first["n"]) == (0.0, 59.0, 29.5, 60)
    assert last["max"] == 3599.0
    custom = client.get(
        "/api/v1/machines/A/history", params={**params, "sensor": "arm_torque", "points": 1}
    ).json()
    assert custom["points"][0]["max"] == 9.0 and custom["points"][0]["n"] == 3600
    assert client.get("/api/v1/machines").json()["machines"][0]["total_readings"] == 3600


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"sensor": "Not A Sensor"}, "sensor"),
        ({"sensor": "rpm", "points": 0}, "points"),
        ({"sensor": "rpm", "points": 100_000}, "points"),
        ({"sensor": "rpm", "from": "yesterday"}, "from"),
        ({"sensor": "rpm", "from": "2026-11-22T11:00:00Z", "to": "2026-11-22T10:00:00Z"}, "from"),
        ({}, "sensor"),
    ],
)
def test_bad_history_queries_name_the_parameter(
    client: TestClient, params: dict[str, object], field: str
) -> None:
    response = client.get("/api/v1/machines/A/history", params=params)
    assert response.status_code == 422
    assert response.json()["field"] == field
