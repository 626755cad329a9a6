"""The OpenAPI document declares how to authenticate: security schemes for the session
(Bearer token or the ``rig_session`` cookie, from POST /api/v1/auth/login) and the edges'
``X-API-KEY``, and on each operation the scheme its guard accepts (none for the public ones),
so Swagger UI offers "Authorize" and generated clients send the right credentials."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute

from cloud.api.guards import SESSION_COOKIE, Allow, IngestKeyGuard

SCHEMES: dict[str, dict[str, str]] = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "The token POST /api/v1/auth/login returns",
    },
    "sessionCookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": SESSION_COOKIE,
        "description": "The session cookie POST /api/v1/auth/login sets (the dashboard's)",
    },
    "ingestKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-KEY",
        "description": "An edge's key (rig-cloud edge-key create EDGE_ID)",
    },
}
Requirement = list[dict[str, list[str]]]
USER: Requirement = [{"bearerAuth": []}, {"sessionCookie": []}]
EDGE: Requirement = [{"ingestKey": []}]


def _requirement(route: APIRoute) -> Requirement | None:
    def calls(dependant: Any) -> Iterable[object]:
        for dep in dependant.dependencies:
            yield dep.call
            yield from calls(dep)

    found = list(calls(route.dependant))
    if any(isinstance(call, IngestKeyGuard) for call in found):
        return EDGE
    if any(isinstance(call, Allow) for call in found):
        return USER
    return None


def document_security(schema: dict[str, Any], routers: Iterable[APIRouter]) -> dict[str, Any]:
    schema.setdefault("components", {}).setdefault("securitySchemes", {}).update(SCHEMES)
    paths = schema.get("paths", {})
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute) or route.path not in paths:
                continue
            requirement = _requirement(route)
            if requirement is None:
                continue
            for method in route.methods or ():
                operation = paths[route.path].get(method.lower())
                if operation is not None:
                    operation["security"] = requirement
    return schema
