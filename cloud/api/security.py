"""Request-level defences of the whole app (API and dashboard), as one ASGI middleware.

- **Body limit on every route.** A declared ``Content-Length`` above the route's limit is
  refused with 413 before a byte of the body is read; a body sent without one (chunked) is
  counted as it streams and cut off with 413 once it passes the limit, so neither a 100 MB
  login POST nor an endless chunked upload is ever held in memory. Limits: ingest routes
  ``RIG_MAX_BODY_BYTES`` (their own checks stay), spec-sheet uploads the assistant's upload
  limit, everything else ``RIG_MAX_REQUEST_BYTES`` (64 KiB).
- **Cross-origin refusal (CSRF).** Every state-changing request (any method but GET, HEAD,
  OPTIONS) and every WebSocket upgrade that a browser marks as coming from another origin —
  an ``Origin`` that is not this site's own, or ``Sec-Fetch-Site`` other than
  ``same-origin``/``none`` — is refused with 403 (a WebSocket: the handshake is refused).
  SameSite=Strict cookies do not stop a sibling subdomain or another port of the same host;
  this does. A request with neither header (an edge, curl, an integrator's script) is not a
  browser's and carries no ambient cookie worth forging, so it passes.
- **HSTS** on every answer to a request that came over TLS (directly or through a trusted
  proxy, ``RIG_FORWARDED_ALLOW_IPS``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud.api.problems import PROBLEM_JSON, problem_members

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SAME_SITE_FETCH = frozenset({"same-origin", "none"})
HSTS = "max-age=31536000; includeSubDomains"
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class BodyTooLarge(StarletteHTTPException):
    """A streamed body passed its limit (raised inside the app's receive): an HTTP exception,
    so FastAPI's body parsing passes it on and the app's handler answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the body exceeds the limit of {limit} bytes")
        self.limit = limit


def _origin(scheme: str, host: str) -> str | None:
    """``scheme://host:port`` with the default port made explicit, or None if unparsable."""
    try:
        parts = urlsplit(f"{scheme}://{host}")
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None
    if not parts.hostname:
        return None
    # WebSocket schemes are the same site as their HTTP counterparts.
    web = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    return f"{web}://{parts.hostname.lower()}:{port}"


def cross_origin_problem(scope: Scope) -> str | None:
    """Why this request is a cross-origin one to refuse, or None."""
    headers = Headers(scope=scope)
    origin = headers.get("origin")
    if origin is not None:
        if origin == "null":
            return "Origin 'null' (a sandboxed or file page) may not change anything here"
        host = headers.get("host")
        own = _origin(scope.get("scheme", "http"), host) if host else None
        theirs = None
        try:
            parts = urlsplit(origin)
            if parts.scheme and parts.netloc and not parts.path:
                theirs = _origin(parts.scheme, parts.netloc)
        except ValueError:
            theirs = None
        if own is None or theirs is None or own != theirs:
            return f"cross-origin request from {origin[:100]!r} refused"
        return None
    site = headers.get("sec-fetch-site")
    if site is not None and site not in SAME_SITE_FETCH:
        return f"cross-site request (Sec-Fetch-Site: {site[:20]}) refused"
    return None


def _error(status: int, field: str, message: str) -> tuple[Message, Message]:
    body = orjson.dumps({**problem_members(status, message), "error": message, "field": field})
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
            # The client may still be sending: tell it not to reuse the connection.
            (b"connection", b"close"),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, body_limit: Callable[[str], int]) -> None:
        self.app = app
        self.body_limit = body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            problem = cross_origin_problem(scope)
            if problem is not None:
                # Closing before accepting: the server answers the handshake with 403.
                await send({"type": "websocket.close", "code": 1008, "reason": problem[:120]})
                return
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        if scope["method"] not in SAFE_METHODS:
            problem = cross_origin_problem(scope)
            if problem is not None:
                for message in _error(403, "Origin", problem):
                    await send(message)
                return

        limit = self.body_limit(scope["path"])
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not declared.isdigit():
                for message in _error(400, "Content-Length", "not a number"):
                    await send(message)
                return
            if int(declared) > limit:
                for message in _error(413, *_too_large(scope["path"], limit, int(declared))):
                    await send(message)
                return

        received = 0
        started = False

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if https:
                    MutableHeaders(scope=message).setdefault("Strict-Transport-Security", HSTS)
            await send(message)

        try:
            await self.app(scope, capped_receive, send_with_headers)
        except BodyTooLarge:
            if started:
                raise
            for message in _error(413, *_too_large(scope["path"], limit, None)):
                await send_with_headers(message)


INGEST_PREFIX = "/api/v1/ingest"
UPLOAD_PATHS = frozenset({"/api/v1/assistant/spec-sheets", "/api/admin/parse-sensor-file"})
# A multipart upload's envelope around the file (cloud/api/routers/assistant.py).
_FORM_OVERHEAD = 64 * 1024


def _too_large(path: str, limit: int, declared: int | None) -> tuple[str, str]:
    """The field and message of a 413: an upload names its file and the file's own limit
    (as the upload route would), any other body the whole request."""
    if path in UPLOAD_PATHS:
        size = f"the upload is {declared} bytes" if declared is not None else "the upload is larger"
        return "file", f"{size}; at most {limit - _FORM_OVERHEAD} are accepted"
    if declared is not None:
        return "$", f"the body is {declared} bytes; the limit here is {limit} bytes"
    return "$", f"the body exceeds the limit of {limit} bytes"


def body_limits(settings: Any) -> Callable[[str], int]:
    """The body limit of a path: ingest and uploads have larger ones of their own."""

    def limit(path: str) -> int:
        if path.startswith(INGEST_PREFIX):
            return int(settings.max_body_bytes)
        if path in UPLOAD_PATHS:
            return int(settings.ai_max_upload_bytes) + _FORM_OVERHEAD
        return int(settings.max_request_bytes)

    return limit
