"""FastAPI dependencies: the database pool, the Kafka producer and ingest authentication are
injected, never global, so tests and several app instances can coexist in one process."""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from psycopg_pool import ConnectionPool

from cloud.ingest_producer import IngestProducer
from cloud.settings import CloudSettings


@dataclass
class StatsCache:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    body: bytes | None = None
    at: float = 0.0


@dataclass
class AppServices:
    settings: CloudSettings
    pool: ConnectionPool
    producer: IngestProducer | None
    stats_cache: StatsCache = field(default_factory=StatsCache)


def get_services(request: Request) -> AppServices:
    return request.app.state.services  # type: ignore[no-any-return]


Services = Annotated[AppServices, Depends(get_services)]


def require_ingest_key(
    services: Services,
    x_api_key: Annotated[str | None, Header(alias="X-API-KEY")] = None,
) -> str:
    """Returns the name of the key's owner (used as the default edge id)."""
    expected = services.settings.ingest_api_key
    if (
        not x_api_key
        or expected is None
        or not hmac.compare_digest(x_api_key.encode(), expected.encode())
    ):
        raise HTTPException(status_code=401, detail="missing or wrong X-API-KEY")
    return "default"


IngestKeyOwner = Annotated[str, Depends(require_ingest_key)]
