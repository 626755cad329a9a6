"""FastAPI dependencies: the database pool, the Kafka producer, the live-stream hub and the
credential cache are injected, never global, so tests and several app instances can coexist
in one process. Routers reach the store (``cloud/store``, ``cloud/accounts.py``, ...) through
``Db``. Authentication guards are in ``cloud.api.guards``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Concatenate, ParamSpec, TypeVar

import psycopg
from fastapi import Depends
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from cloud.accounts import EdgeKey, User
from cloud.api.throttle import HashGate, LoginThrottle
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
    # machine id -> the edge that serves it (the newest reading's), for unbound edge keys.
    owners: dict[str, tuple[float, str | None]] = field(default_factory=dict)

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
    # Login defences (cloud/api/throttle.py); create_app sizes them from the settings.
    throttle: LoginThrottle = field(default_factory=lambda: LoginThrottle(10, 5))
    hash_gate: HashGate = field(default_factory=lambda: HashGate(2))


def get_services(connection: HTTPConnection) -> AppServices:
    # HTTPConnection: a request or a WebSocket (the live stream authenticates with it too).
    return connection.app.state.services


Services = Annotated[AppServices, Depends(get_services)]

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Database:
    """The store as the routers see it: ``await db.run(store_function, *args)`` calls
    ``store_function(conn, *args)`` in one transaction on a pooled connection, off the event
    loop (psycopg here is synchronous).

    Errors are not mapped here but by the app's exception handlers (``cloud/api/errors.py``),
    so a guard, a router and anything else answer alike: the database unavailable -> 503 with
    Retry-After, ``NotFoundError`` -> 404, ``FieldError`` -> 422, a unique-key clash -> 409.
    """

    pool: ConnectionPool

    async def run(
        self,
        work: Callable[Concatenate[psycopg.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        def transaction() -> T:
            with self.pool.connection() as conn, conn.transaction():
                return work(conn, *args, **kwargs)

        return await run_in_threadpool(transaction)


def get_database(services: Services) -> Database:
    return Database(services.pool)


Db = Annotated[Database, Depends(get_database)]
