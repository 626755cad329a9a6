"""FastAPI dependencies: the database pool, the Kafka producer, the live-stream hub and the
credential cache are injected, never global, so tests and several app instances can coexist
in one process. Authentication guards are in ``cloud.api.auth``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from psycopg_pool import ConnectionPool

from cloud.auth import EdgeKey, User
from cloud.ingest_producer import IngestProducer
from cloud.live import LiveHub
from cloud.settings import CloudSettings


@dataclass
class StatsCache:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    body: bytes | None = None
    doc: dict[str, Any] | None = None
    at: float = 0.0


# A session or key looked up in the database is trusted for this long by one API process:
# stats polled at 200 req/s must not cost 200 database writes, and a logout or revocation
# elsewhere still takes effect within seconds.
CACHE_SECONDS = 2.0


@dataclass
class CredentialCache:
    sessions: dict[str, tuple[float, User | None]] = field(default_factory=dict)
    keys: dict[str, tuple[float, EdgeKey | None]] = field(default_factory=dict)

    def forget(self, token: str) -> None:
        self.sessions.pop(token, None)


@dataclass
class AppServices:
    settings: CloudSettings
    pool: ConnectionPool
    producer: IngestProducer | None
    stats_cache: StatsCache = field(default_factory=StatsCache)
    credentials: CredentialCache = field(default_factory=CredentialCache)
    live: LiveHub | None = None


def get_services(request: Request) -> AppServices:
    return request.app.state.services  # type: ignore[no-any-return]


Services = Annotated[AppServices, Depends(get_services)]
