"""The OpenAPI document says how each operation authenticates: the schemes are declared and
every guarded operation names the one its guard accepts; public ones name none."""

from __future__ import annotations

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from cloud.api.app import API_ROUTERS, create_app
from cloud.api.guards import Allow, IngestKeyGuard
from cloud.settings import CloudSettings


def _guard(route: APIRoute) -> str | None:
    def calls(dependant: object) -> list[object]:
        out: list[object] = []
        for dep in getattr(dependant, "dependencies", []):
            out += [dep.call, *calls(dep)]
        return out

    found = calls(route.dependant)
    if any(isinstance(c, IngestKeyGuard) for c in found):
        return "edge"
    if any(isinstance(c, Allow) for c in found):
        return "user"
    return None


def test_every_operation_names_how_it_authenticates() -> None:
    with TestClient(create_app(CloudSettings(database_url="postgresql://unused/x"))) as client:
        schema = client.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["ingestKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-KEY",
        "description": schemes["ingestKey"]["description"],
    }
    assert schemes["bearerAuth"]["scheme"] == "bearer"
    assert schemes["sessionCookie"]["in"] == "cookie"
    expected = {
        "edge": [{"ingestKey": []}],
        "user": [{"bearerAuth": []}, {"sessionCookie": []}],
        None: None,
    }
    checked = 0
    for router in API_ROUTERS:
        for route in router.routes:
            if not isinstance(route, APIRoute) or route.path not in schema["paths"]:
                continue
            for method in route.methods:
                operation = schema["paths"][route.path][method.lower()]
                assert operation.get("security") == expected[_guard(route)], (
                    f"{method} {route.path}"
                )
                checked += 1
    assert checked > 20
    assert "security" not in schema["paths"]["/healthz"]["get"]
    assert schema["paths"]["/api/v1/ingest"]["post"]["security"] == [{"ingestKey": []}]
