"""Property-based run of the served OpenAPI schema (schemathesis) against a real API process
on a real PostgreSQL: no generated request, valid or not, may get a 5xx answer, and every
answer's body matches the schema the API documents for its status (success bodies and the
error shape alike).

Calls carry an admin session and the ingest key, so generated requests reach the handlers
rather than stopping at the guard. Logout is left out: it would end the session under test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import response_schema_conformance

from cloud.api.app import create_app
from cloud.db.embedded import EmbeddedPostgres
from cloud.db.migrate import apply_migrations
from cloud.settings import CloudSettings
from tests.support.accounts import admin_token
from tests.support.processes import Service, free_port, http_ok, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
KEY = "k" * 32

schema = schemathesis.openapi.from_dict(
    create_app(CloudSettings(database_url="postgresql://unused/x")).openapi()
).exclude(path="/api/v1/auth/logout")


@pytest.fixture(scope="module")
def live_api(
    pg_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    name = f"fuzz_{uuid.uuid4().hex[:8]}"
    admin = f"postgresql://postgres@127.0.0.1:{pg_server.port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://postgres@127.0.0.1:{pg_server.port}/{name}"
    apply_migrations(url)
    port = free_port()
    logs: Path = tmp_path_factory.mktemp("fuzz-logs")
    api = Service(
        "api",
        ["cloud.cli", "serve", "--port", str(port)],
        logs,
        {"DATABASE_URL": url, "RIG_INGEST_API_KEY": KEY},
    ).start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(f"{base}/readyz"), 60, "api up", services=[api])
        token = admin_token(base, url)
        yield base, {"Authorization": f"Bearer {token}", "X-API-KEY": KEY}
    finally:
        api.stop()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_no_request_gets_a_server_error(
    case: schemathesis.Case, live_api: tuple[str, dict[str, str]]
) -> None:
    base, headers = live_api
    response = case.call(base_url=base, headers=headers, timeout=30)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
    case.validate_response(response, checks=[response_schema_conformance])
