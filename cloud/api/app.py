"""The cloud API application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from psycopg_pool import ConnectionPool
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from cloud.api.deps import AppServices
from cloud.api.docs import install_docs
from cloud.api.errors import install_error_handlers
from cloud.api.openapi_security import document_security
from cloud.api.problems import ProblemDetailsMiddleware, document_problem_json
from cloud.api.routers import (
    alerting,
    anomalies,
    assistant,
    audit,
    auth,
    edge_thresholds,
    edges,
    health,
    ingest,
    machines,
    models,
    predicted,
    sensors,
    stats,
    stream,
    thresholds,
)
from cloud.api.schemas import ErrorOut
from cloud.api.security import SecurityMiddleware, body_limits
from cloud.api.throttle import HashGate, LoginThrottle
from cloud.dashboard import router as dashboard_router
from cloud.ingest_producer import IngestProducer
from cloud.live import LiveHub
from cloud.metrics import mark_build
from cloud.metrics.api import MetricsMiddleware, metrics_endpoint
from cloud.settings import CloudSettings

# Every router of the API; cloud/api/test_access.py walks these to check each endpoint's guard.
API_ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    ingest.router,
    stats.router,
    machines.router,
    auth.router,
    thresholds.router,
    sensors.router,
    anomalies.router,
    stream.router,
    models.router,
    models.legacy_router,
    edge_thresholds.router,
    assistant.router,
    alerting.router,
    audit.router,
    edges.router,
    predicted.router,
)

# Every API operation can answer with the one error shape (cloud/api/errors.py); a route
# documents its particular statuses itself.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    "default": {
        "model": ErrorOut,
        "description": "An error: 401 log in, 403 not allowed, 404 not found, 422 invalid "
        "input (`field` names it), 503 database unavailable (with Retry-After)",
    }
}


def create_app(settings: CloudSettings) -> FastAPI:
    database_url = settings.require_database_url()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = ConnectionPool(
            database_url,
            min_size=settings.pool_min,
            max_size=settings.pool_max,
            open=False,
            timeout=5.0,
            kwargs={"connect_timeout": 5},
        )
        # Do not block start-up on the database: the API answers 503 until it is back.
        pool.open(wait=False)
        producer = (
            IngestProducer(settings.kafka_bootstrap, settings.topic, settings.kafka_client_config)
            if settings.kafka_bootstrap
            else None
        )
        live = LiveHub(database_url)
        live.start()
        app.state.services = AppServices(
            settings=settings,
            pool=pool,
            producer=producer,
            live=live,
            throttle=LoginThrottle(
                settings.login_max_failures_ip, settings.login_max_failures_account
            ),
            hash_gate=HashGate(settings.password_hash_concurrency),
        )
        try:
            yield
        finally:
            await live.stop()
            if producer is not None:
                producer.close()
            pool.close()

    app = FastAPI(
        title="Rig Alpha cloud API",
        version="0.1.0",
        lifespan=lifespan,
        description="Ingest, statistics and operations API of the Rig Alpha cloud aggregator.",
        # Served from the package below, not from a CDN (cloud/api/docs.py).
        docs_url=None,
        redoc_url=None,
    )
    install_docs(app, "Rig Alpha cloud API")
    install_error_handlers(app)
    # Every request counted, timed by route template and access-logged; GET /metrics for
    # Prometheus (cloud/metrics/api.py).
    # Body limits on every route, cross-origin refusal, HSTS (cloud/api/security.py).
    app.add_middleware(SecurityMiddleware, body_limit=body_limits(settings))
    # RFC 9457 members for the JSON error bodies a router builds itself (cloud/api/problems.py).
    app.add_middleware(ProblemDetailsMiddleware)
    app.add_middleware(MetricsMiddleware)
    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)
    # Outermost: the client address and scheme from X-Forwarded-* of trusted proxies only
    # (RIG_FORWARDED_ALLOW_IPS), for the login throttle, the Secure cookie and HSTS.
    app.add_middleware(
        ProxyHeadersMiddleware,
        trusted_hosts=[h.strip() for h in settings.forwarded_allow_ips.split(",") if h.strip()],
    )
    mark_build("api")
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        return document_security(document_problem_json(build_openapi()), API_ROUTERS)

    app.openapi = openapi  # type: ignore[method-assign]
    for router in API_ROUTERS:
        app.include_router(router, responses=ERROR_RESPONSES)
    # The operator dashboard's pages (login redirects, role checks of their own) and assets.
    app.include_router(dashboard_router)
    return app
