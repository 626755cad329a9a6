"""The API's metrics and access log: one ASGI middleware sees every HTTP request once.

Exported on ``GET /metrics`` of the API itself (no login: Prometheus scrapes it; it carries
counts and timings, never a request's content). A request that came through a reverse proxy
(X-Forwarded-For, Forwarded or X-Real-IP set) gets 404, so the public Ingress does not
publish it:

- ``rig_api_requests_total{method,route,status}`` and
  ``rig_api_request_duration_seconds{method,route}``: by route *template*
  (``/api/v1/machines/{machine_id}/latest``), so the series do not grow with machine ids;
  a path no route matched is ``route="<unmatched>"``;
- ``rig_api_requests_in_flight``;
- ``rig_api_ingest_requests_total{route,outcome}`` (accepted 2xx, refused 4xx, unavailable
  5xx) and ``rig_api_ingest_bytes_total{route}`` for the ingest routes (not the key check
  ``/api/v1/ingest/check``, which stores nothing);
- ``rig_api_ingest_readings_total{route,outcome}``: readings accepted (stored or confirmed
  by Kafka, duplicates included), refused (invalid for good, key conflicts) or unavailable
  (not taken: storage or Kafka down) by ingest route; ``rig_api_ingest_lines_total{outcome}``
  the same for the lines of the line-protocol route (a line refused before it named a
  reading counts as a line only);
- ``rig_api_websocket_clients`` (live-stream subscribers of this process) and
  ``rig_api_db_pool_connections{state}`` (PostgreSQL pool), read at scrape time.

The access log (logger ``rig-cloud.access``, one line per request) has the method, the path
without its query string, the route template, the status, the duration and the client
address: never headers, cookies, query strings or bodies, where API keys, session tokens and
passwords travel. Probes and scrapes (/healthz, /readyz, /metrics) log at DEBUG.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.logs import log_event

access_log = logging.getLogger("rig-cloud.access")

UNMATCHED = "<unmatched>"
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
INGEST_PREFIX = "/api/v1/ingest"
# Validates a key, stores nothing: a probe, not ingest traffic.
INGEST_CHECK = "/api/v1/ingest/check"

REQUESTS = Counter(
    "rig_api_requests",
    "HTTP requests answered, by route template and status",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "rig_api_request_duration_seconds",
    "Time from request to the end of the response, by route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
IN_FLIGHT = Gauge("rig_api_requests_in_flight", "HTTP requests being answered now")
INGEST_REQUESTS = Counter(
    "rig_api_ingest_requests",
    "Ingest requests by outcome: accepted (2xx), refused (4xx), unavailable (5xx)",
    ["route", "outcome"],
)
INGEST_BYTES = Counter(
    "rig_api_ingest_bytes", "Request body bytes received on the ingest routes", ["route"]
)
INGEST_READINGS = Counter(
    "rig_api_ingest_readings",
    "Readings by ingest route and fate: accepted, refused (for good), unavailable (retry)",
    ["route", "outcome"],
)
INGEST_LINES = Counter(
    "rig_api_ingest_lines",
    "Line-protocol lines by fate: accepted, refused (for good), unavailable (retry)",
    ["outcome"],
)
WEBSOCKET_CLIENTS = Gauge(
    "rig_api_websocket_clients", "Live-stream WebSocket subscribers of this API process"
)
DB_POOL = Gauge(
    "rig_api_db_pool_connections",
    "PostgreSQL pool of this API process: size, available, waiting requests",
    ["state"],
)


def count_ingested(route: str, outcome: str, readings: int, *, lines: int | None = None) -> None:
    """Called by the ingest routes, which alone know how many readings a body held and what
    became of each (the middleware sees one status per request)."""
    if readings:
        INGEST_READINGS.labels(route, outcome).inc(readings)
    if lines:
        INGEST_LINES.labels(outcome).inc(lines)


def _outcome(status: int) -> str:
    if status < 400:
        return "accepted"
    return "refused" if status < 500 else "unavailable"


class MetricsMiddleware:
    """Counts, times and logs every HTTP request (WebSockets pass through: their clients
    are a gauge read at scrape time)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering
        body_bytes = 0

        async def counting_receive() -> Message:
            nonlocal body_bytes
            message = await receive()
            if message["type"] == "http.request":
                body_bytes += len(message.get("body", b""))
            return message

        async def status_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        IN_FLIGHT.inc()
        try:
            await self.app(scope, counting_receive, status_send)
        finally:
            IN_FLIGHT.dec()
            elapsed = time.perf_counter() - started
            self._record(scope, status, elapsed, body_bytes)

    @staticmethod
    def _record(scope: Scope, status: int, elapsed: float, body_bytes: int) -> None:
        # The router writes the matched route into the request's scope (the same dict).
        route = getattr(scope.get("route"), "path", None) or UNMATCHED
        method = str(scope.get("method", ""))
        REQUESTS.labels(method, route, str(status)).inc()
        LATENCY.labels(method, route).observe(elapsed)
        if route.startswith(INGEST_PREFIX) and route != INGEST_CHECK:
            INGEST_REQUESTS.labels(route, _outcome(status)).inc()
            INGEST_BYTES.labels(route).inc(body_bytes)
        path = str(scope.get("path", ""))
        client = scope.get("client")
        log_event(
            access_log,
            logging.DEBUG if path in QUIET_PATHS else logging.INFO,
            "request",
            method=method,
            path=path,  # scope["path"] never holds the query string
            route=route,
            status=status,
            duration_ms=round(elapsed * 1000, 1),
            client=client[0] if client else None,
        )


def _scrape_time_gauges(services: Any) -> None:
    if services is None:
        return
    live = getattr(services, "live", None)
    if live is not None:
        WEBSOCKET_CLIENTS.set(live.subscribers)  # a property of LiveHub
    pool = getattr(services, "pool", None)
    if pool is not None:
        stats = pool.get_stats()
        DB_POOL.labels("size").set(stats.get("pool_size", 0))
        DB_POOL.labels("available").set(stats.get("pool_available", 0))
        DB_POOL.labels("waiting").set(stats.get("requests_waiting", 0))


# Set by reverse proxies (ingress-nginx, Traefik, ...) on what they forward.
PROXY_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


async def metrics_endpoint(request: Request) -> Response:
    # Prometheus scrapes the pod or container directly; a request that came through the
    # public Ingress or proxy is not shown the metrics (it answers as an unknown path).
    if any(header in request.headers for header in PROXY_HEADERS):
        return JSONResponse({"error": "Not Found", "field": "$", "status": 404}, status_code=404)
    _scrape_time_gauges(getattr(request.app.state, "services", None))
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
