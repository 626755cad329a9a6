"""One error shape for the whole API: ``{"error": ..., "field": ..., "status": ...}``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.configfile import field_path


class ApiError(Exception):
    def __init__(self, status: int, field: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.field = field
        self.message = message
        self.retry_after = retry_after


_LOCATIONS = {"body", "query", "path", "header", "cookie"}


def _client_field(loc: object) -> str:
    """The name the client used: ``password``, ``limit``, ``readings[3].rpm``; FastAPI's
    leading location (body/query/path) is dropped, and a whole missing body is ``$``."""
    parts = tuple(loc) if isinstance(loc, list | tuple) else ()
    if parts and parts[0] in _LOCATIONS:
        parts = parts[1:]
    return field_path(parts) if parts else "$"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return JSONResponse(
            {"error": exc.message, "field": exc.field, "status": exc.status},
            status_code=exc.status,
            headers=headers,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc.detail), "status": exc.status_code},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        return JSONResponse(
            {
                "error": first["msg"],
                "field": _client_field(first["loc"]),
                "status": 422,
                "problems": [
                    {"field": _client_field(e["loc"]), "error": e["msg"]} for e in exc.errors()
                ],
            },
            status_code=422,
        )
