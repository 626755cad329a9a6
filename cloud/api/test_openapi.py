"""``/openapi.json`` describes what every endpoint answers, and errors look alike everywhere.

The served schema is walked, not listed by hand (like ``test_access.py`` walks the route
table): a new endpoint without a response model fails here. The exceptions are listed below,
each with its reason. No database is needed: the schema is built from the route table, and
the error handlers are exercised on a small app of their own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.testclient import TestClient
from psycopg_pool import PoolTimeout
from pydantic import BaseModel

from cloud.api.app import API_ROUTERS, create_app
from cloud.api.errors import RETRY_AFTER_S, ApiError, install_error_handlers
from cloud.api.schemas import ErrorOut
from cloud.fielderror import FieldError, NotFoundError
from cloud.settings import CloudSettings
from shared.catalog import SENSOR_INDEX
from shared.message import CUSTOM_NAME_RE

# Not OpenAPI operations, on purpose.
NOT_IN_SCHEMA = {
    "/api/v1/stream": "WebSocket: OpenAPI has no operations for it; README 'Live stream'",
    "/api/v1/stats": "alias of /api/stats (same handler, same response model)",
}
# Operations whose success body is not described yet, with the reason. The test also fails
# when one of them gets described, so this list only shrinks.
NOT_DESCRIBED_YET: dict[tuple[str, str], str] = {}
# Keys a response leaves out in some answers (every other key is always there, maybe null).
OPTIONAL_KEYS = {
    "IngestProducedOut": {"deliveries"},
    # accepted: partition, offset; failed: error, permanent; unconfirmed: error.
    "IngestResultOut": {"partition", "offset", "error", "permanent"},
}
# Statuses that have no body by definition.
NO_BODY = {"204", "304"}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    app = create_app(CloudSettings(database_url="postgresql://unused/x"))
    return app.openapi()


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
        if method in {"get", "put", "post", "patch", "delete"}
    ]


def _success_schemas(op: dict[str, Any]) -> dict[str, Any] | None:
    """The 2xx answer's schema per media type; {} for a body-less 2xx; None: undescribed."""
    found: dict[str, Any] = {}
    for status, answer in op["responses"].items():
        if not status.startswith("2"):
            continue
        if status in NO_BODY:
            assert not answer.get("content"), f"{status} with a body"
            return {}
        for media, content in answer.get("content", {}).items():
            if content.get("schema"):
                found[media] = content["schema"]
    return found or None


def test_every_operation_describes_its_success_body(schema: dict[str, Any]) -> None:
    undescribed = []
    for method, path, op in _operations(schema):
        if _success_schemas(op) is None and (method, path) not in NOT_DESCRIBED_YET:
            undescribed.append(f"{method.upper()} {path}")
    assert not undescribed, f"no 2xx response schema: {undescribed}"


def test_the_not_yet_described_list_is_current(schema: dict[str, Any]) -> None:
    for method, path in NOT_DESCRIBED_YET:
        op = schema["paths"][path][method]
        assert _success_schemas(op) is None, (
            f"{method.upper()} {path} is described now: remove it from NOT_DESCRIBED_YET"
        )


def test_json_bodies_are_closed_models(schema: dict[str, Any]) -> None:
    """A JSON success body is a named model (or a choice of named models: ingest answers
    one shape without Kafka, another with it) that lists its keys: a reader (or a generated
    client) learns every field, and a key an endpoint adds without the model fails."""
    components = schema["components"]["schemas"]
    for method, path, op in _operations(schema):
        for media, body in (_success_schemas(op) or {}).items():
            if media == "application/json":
                choices = body.get("anyOf", [body])
                assert all(set(c) == {"$ref"} for c in choices), (
                    f"{method.upper()} {path}: inline schema {body}"
                )
    for name, model in components.items():
        if not name.endswith("Out") or name == "ErrorOut":
            continue
        assert model.get("additionalProperties") is False, f"{name}: open model"
        optional = set(model["properties"]) - set(model.get("required", ()))
        assert optional <= OPTIONAL_KEYS.get(name, set()), f"{name}: optional keys {optional}"


def test_every_operation_documents_the_error_shape(schema: dict[str, Any]) -> None:
    error_ref = "#/components/schemas/ErrorOut"
    for method, path, op in _operations(schema):
        default = op["responses"].get("default", {})
        assert default.get("content", {}).get("application/json", {}).get("schema") == {
            "$ref": error_ref
        }, f"{method.upper()} {path}"


def test_every_route_is_in_the_schema_or_listed(schema: dict[str, Any]) -> None:
    documented = set(schema["paths"])
    paths = set()
    for router in API_ROUTERS:
        for route in router.routes:
            assert isinstance(route, APIRoute | APIWebSocketRoute), route
            paths.add(route.path)
            if route.path not in NOT_IN_SCHEMA:
                assert route.path in documented, f"{route.path} is missing from /openapi.json"
    assert set(NOT_IN_SCHEMA) <= paths


def test_machine_and_edge_ids_follow_the_wire_format(schema: dict[str, Any]) -> None:
    patterns: dict[str, set[str]] = {}
    for _method, _path, op in _operations(schema):
        for param in op.get("parameters", []):
            if param["name"] in {"machine_id", "edge_id"}:
                s = param["schema"]
                pattern = s.get("pattern") or next(
                    (a["pattern"] for a in s.get("anyOf", []) if "pattern" in a), None
                )
                patterns.setdefault(param["name"], set()).add(str(pattern))
    from shared.message import EDGE_ID_RE, MACHINE_ID_RE

    assert patterns == {"machine_id": {MACHINE_ID_RE.pattern}, "edge_id": {EDGE_ID_RE.pattern}}


def test_one_pattern_admits_every_core_sensor_name() -> None:
    # cloud/api/params.py SensorName relies on it.
    assert all(CUSTOM_NAME_RE.fullmatch(name) for name in SENSOR_INDEX)


class _Row(BaseModel):
    n: int


def _raiser(exc: Exception) -> Callable[[], Awaitable[None]]:
    async def fail() -> None:
        raise exc

    return fail


def _error_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    raises: dict[str, Exception] = {
        "field": FieldError("limit", "too big"),
        "missing": NotFoundError("name", "no such thing"),
        "down": psycopg.OperationalError("connection refused"),
        "pool": PoolTimeout("couldn't get a connection after 5.00 sec"),
        "closed": psycopg.InterfaceError("the connection is closed"),
        "bug": psycopg.errors.UndefinedColumn("column x does not exist"),
        "dup": psycopg.errors.UniqueViolation("duplicate key"),
        "teapot": ApiError(418, "X-Tea", "short and stout"),
    }
    for name, exc in raises.items():
        app.add_api_route(f"/{name}", _raiser(exc))

    async def needs(n: int) -> _Row:
        return _Row(n=n)

    app.add_api_route("/needs", needs)
    return app


@pytest.mark.parametrize(
    ("path", "status", "field", "retry"),
    [
        ("/field", 422, "limit", False),
        ("/missing", 404, "name", False),
        ("/down", 503, "$", True),
        ("/pool", 503, "$", True),
        ("/closed", 503, "$", True),
        ("/bug", 500, "$", False),
        ("/dup", 409, "$", False),
        ("/teapot", 418, "X-Tea", False),
        ("/needs?n=x", 422, "n", False),
        ("/no-such-path", 404, "$", False),
    ],
)
def test_errors_are_mapped_once_in_one_shape(
    path: str, status: int, field: str, retry: bool
) -> None:
    with TestClient(_error_app(), raise_server_exceptions=False) as client:
        response = client.get(path)
    assert response.status_code == status, response.text
    body = ErrorOut.model_validate(response.json())
    assert (body.status, body.field) == (status, field)
    assert (response.headers.get("Retry-After") == str(RETRY_AFTER_S)) is retry
    if path.startswith("/needs"):
        assert body.problems and body.problems[0].field == "n"
