"""The cloud API application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from psycopg_pool import ConnectionPool

from cloud.api.deps import AppServices
from cloud.api.errors import install_error_handlers
from cloud.api.routers import health, ingest, machines, stats
from cloud.ingest_producer import IngestProducer
from cloud.settings import CloudSettings, SettingsError


def create_app(settings: CloudSettings) -> FastAPI:
    if not settings.database_url:
        raise SettingsError("DATABASE_URL is not set")
    if not settings.ingest_api_key:
        raise SettingsError(
            "RIG_INGEST_API_KEY (or RIG_INGEST_API_KEY_FILE) is not set; the ingest API "
            "never runs with a built-in key"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = ConnectionPool(
            settings.database_url or "",
            min_size=settings.pool_min,
            max_size=settings.pool_max,
            open=False,
            timeout=5.0,
            kwargs={"connect_timeout": 5},
        )
        # Do not block start-up on the database: the API answers 503 until it is back.
        pool.open(wait=False)
        producer = (
            IngestProducer(settings.kafka_bootstrap, settings.topic, settings.kafka_extra)
            if settings.kafka_bootstrap
            else None
        )
        app.state.services = AppServices(settings=settings, pool=pool, producer=producer)
        try:
            yield
        finally:
            if producer is not None:
                producer.close()
            pool.close()

    app = FastAPI(
        title="Rig Alpha cloud API",
        version="0.1.0",
        lifespan=lifespan,
        description="Ingest, statistics and operations API of the Rig Alpha cloud aggregator.",
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(ingest.router)
    app.include_router(stats.router)
    app.include_router(machines.router)
    return app
