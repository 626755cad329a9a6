"""One error shape for the whole API: RFC 9457 problem details (``application/problem+json``:
``type``, ``title``, ``status``, ``detail``) with the API's members ``error`` (= ``detail``)
and ``field`` (cloud/api/problems.py).

Errors are mapped here, once, from what the code below the routers raises:

- ``FieldError`` (cloud/fielderror.py): 422, naming the field; ``NotFoundError``: 404;
- the database unreachable, restarting, out of connections or resources (psycopg's
  ``OperationalError`` and ``InterfaceError``, the pool's timeout among them): 503 with
  ``Retry-After``, so clients and load balancers back off and come back by themselves;
- a unique-key clash: 409;
- any other database error is a bug or a value PostgreSQL refuses: 500, logged, no retry
  advice (retrying would not help);
- request validation (FastAPI): 422 with the first problem as ``field``/``error`` and all of
  them in ``problems``;
- ``ApiError``: whatever status a router or guard chose (401, 403, 413, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloud.api.problems import PROBLEM_JSON, problem_members
from cloud.fielderror import FieldError, NotFoundError
from shared.configfile import field_path
from shared.logs import log_event

log = logging.getLogger(__name__)

# How long a client should wait before retrying after a 503 (seconds): a PostgreSQL restart
# or fail-over takes about this long.
RETRY_AFTER_S = 5


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


def error_response(
    status: int,
    field: str,
    message: str,
    *,
    retry_after: int | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    all_headers = dict(headers or {})
    if retry_after:
        all_headers["Retry-After"] = str(retry_after)
    return JSONResponse(
        {**problem_members(status, message), "error": message, "field": field, **extra},
        status_code=status,
        headers=all_headers or None,
        media_type=PROBLEM_JSON,
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.field, exc.message, retry_after=exc.retry_after)

    @app.exception_handler(NotFoundError)
    async def _not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return error_response(404, exc.field, exc.message)

    @app.exception_handler(FieldError)
    async def _field_error(_: Request, exc: FieldError) -> JSONResponse:
        return error_response(422, exc.field, exc.message)

    async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
        return error_response(
            503,
            "$",
            f"database unavailable: {type(exc).__name__}",
            retry_after=RETRY_AFTER_S,
        )

    app.add_exception_handler(psycopg.OperationalError, _unavailable)
    app.add_exception_handler(psycopg.InterfaceError, _unavailable)

    @app.exception_handler(psycopg.errors.UniqueViolation)
    async def _conflict(_: Request, exc: psycopg.errors.UniqueViolation) -> JSONResponse:
        return error_response(409, "$", f"already exists: {exc.diag.message_detail}")

    @app.exception_handler(psycopg.Error)
    async def _database_error(request: Request, exc: psycopg.Error) -> JSONResponse:
        log_event(
            log,
            logging.ERROR,
            "database error",
            path=request.url.path,
            error=type(exc).__name__,
            detail=str(exc)[:500],
        )
        return error_response(500, "$", f"database error: {type(exc).__name__}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown paths (404) and methods (405): the request as a whole is the problem.
        return error_response(exc.status_code, "$", str(exc.detail), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        return error_response(
            422,
            _client_field(first["loc"]),
            str(first["msg"]),
            problems=[{"field": _client_field(e["loc"]), "error": e["msg"]} for e in errors],
        )
