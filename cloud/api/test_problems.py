"""Errors are RFC 9457 problem details: application/problem+json with type, title, status and
detail, the API's own error and field kept; the OpenAPI document says so."""

from __future__ import annotations

from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.settings import CloudSettings


def _client() -> TestClient:
    return TestClient(create_app(CloudSettings(database_url="postgresql://unused/x")))


def test_an_error_is_problem_json() -> None:
    with _client() as client:
        response = client.get("/no/such/page")
        unauthorised = client.get("/api/v1/machines")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "about:blank" and body["title"] == "Not Found"
    assert body["status"] == 404 and body["detail"] == body["error"] and body["field"] == "$"
    assert unauthorised.status_code == 401
    assert unauthorised.headers["content-type"] == "application/problem+json"
    assert unauthorised.json()["title"] == "Unauthorized"


def test_a_router_built_plain_error_gets_the_members() -> None:
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from cloud.api.problems import ProblemDetailsMiddleware

    app = FastAPI()
    app.add_middleware(ProblemDetailsMiddleware)

    @app.get("/plain")
    async def plain() -> JSONResponse:
        return JSONResponse({"error": "kafka down", "field": "$", "status": 503}, 503)

    @app.get("/rich")
    async def rich() -> JSONResponse:
        return JSONResponse({"error": "x", "field": "$", "status": 409, "conflicts": []}, 409)

    with TestClient(app) as client:
        plain_answer = client.get("/plain")
        rich_answer = client.get("/rich")
    assert plain_answer.headers["content-type"] == "application/problem+json"
    assert plain_answer.json()["title"] == "Service Unavailable"
    assert plain_answer.json()["detail"] == "kafka down"
    # A body with a model of its own is left as its model says.
    assert rich_answer.headers["content-type"] == "application/json"
    assert "title" not in rich_answer.json()


def test_openapi_lists_problem_json_for_errors() -> None:
    with _client() as client:
        schema = client.get("/openapi.json").json()
    default = schema["paths"]["/api/v1/machines"]["get"]["responses"]["default"]["content"]
    ref = {"$ref": "#/components/schemas/ErrorOut"}
    assert default["application/json"]["schema"] == ref
    assert default["application/problem+json"]["schema"] == ref
    error = schema["components"]["schemas"]["ErrorOut"]
    assert {"type", "title", "status", "detail", "error", "field"} <= set(error["required"])
