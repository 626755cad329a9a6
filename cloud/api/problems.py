"""Errors as RFC 9457 problem details (``application/problem+json``), keeping the API's own
members, so clients written for either read them.

Every error answer carries the standard members ``type`` (``about:blank``: the status says
it all), ``title`` (the status phrase), ``status`` and ``detail`` (what went wrong, the same
text as ``error``), plus the extension members the API always had: ``error``, ``field`` (what
the client sent that is wrong, ``$`` for the request as a whole) and, where they apply,
``problems``. ``cloud/api/errors.py`` builds them for everything the error handlers map;
``ProblemDetailsMiddleware`` gives the same members to a plain error body a router builds
itself. Ingest's richer answers (the 409 key conflict, the Kafka 422/503, the line-protocol
422/503) are problem details too, with ``conflicts`` or ``results`` as extension members of
their own closed models. The OpenAPI document lists ``application/problem+json``
next to ``application/json`` wherever an error is documented with ``ErrorOut``.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBLEM_JSON = "application/problem+json"
ERROR_SCHEMA_REF = "#/components/schemas/ErrorOut"
# The keys of a plain error body (ErrorOut without the RFC 9457 members).
_PLAIN_ERROR_KEYS = frozenset({"error", "field", "status", "problems"})


def problem_members(status: int, message: str) -> dict[str, Any]:
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    return {"type": "about:blank", "title": title, "status": status, "detail": message}


class ProblemDetailsMiddleware:
    """Adds the RFC 9457 members to a JSON error body that lacks them (status >= 400,
    ``application/json``, an object with ``error``), and labels it problem+json."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def send_wrapper(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = MutableHeaders(raw=list(message.get("headers", [])))
                is_json_error = message["status"] >= 400 and headers.get(
                    "content-type", ""
                ).startswith("application/json")
                if not is_json_error:
                    await send(message)
                    return
                start = message  # held until the whole body is read
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body, is_problem = self._rewrite(start["status"], b"".join(chunks))
            headers = MutableHeaders(raw=list(start.get("headers", [])))
            headers["content-length"] = str(len(body))
            if is_problem:
                headers["content-type"] = PROBLEM_JSON
            await send({**start, "headers": headers.raw})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, send_wrapper)

    @staticmethod
    def _rewrite(status: int, body: bytes) -> tuple[bytes, bool]:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body, False
        if not isinstance(doc, dict) or "error" not in doc:
            return body, False
        if "title" in doc:
            return body, True
        if not set(doc) <= _PLAIN_ERROR_KEYS:
            return body, False  # a documented model of its own (ingest's conflicts, results)
        message = doc["error"] if isinstance(doc["error"], str) else HTTPStatus(status).phrase
        problem = {**problem_members(status, message), **doc, "status": status}
        return orjson.dumps(problem), True


def document_problem_json(schema: dict[str, Any]) -> dict[str, Any]:
    """Lists application/problem+json beside application/json for every error response
    that may be an ErrorOut (idempotent: the schema is built once and cached)."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            for status, response in operation.get("responses", {}).items():
                if status != "default" and not str(status).startswith(("4", "5")):
                    continue
                content = response.get("content", {})
                json_schema = content.get("application/json", {}).get("schema")
                # ErrorOut alone or among choices (ingest: ErrorOut | IngestNotTakenOut).
                if (
                    json_schema is not None
                    and ERROR_SCHEMA_REF in orjson.dumps(json_schema).decode()
                ):
                    content.setdefault(PROBLEM_JSON, {"schema": json_schema})
    return schema
