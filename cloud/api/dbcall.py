"""Running a unit of database work from an async endpoint, with one error mapping for all."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import psycopg
from psycopg import Error as PsycopgError
from starlette.concurrency import run_in_threadpool

from cloud.api.deps import AppServices
from cloud.api.errors import ApiError
from cloud.fielderror import FieldError, NotFoundError

T = TypeVar("T")


async def in_transaction(services: AppServices, work: Callable[[psycopg.Connection], T]) -> T:
    """``work(conn)`` in one transaction on a pooled connection, off the event loop.

    A database outage becomes 503 with Retry-After (clients and load balancers back off and
    come back by themselves); a missing thing 404 and a domain error 422, naming the field;
    a unique-key clash 409.
    """

    def run() -> T:
        with services.pool.connection() as conn, conn.transaction():
            return work(conn)

    try:
        return await run_in_threadpool(run)
    except NotFoundError as exc:
        raise ApiError(404, exc.field, exc.message) from None
    except FieldError as exc:
        raise ApiError(422, exc.field, exc.message) from None
    except psycopg.errors.UniqueViolation as exc:
        raise ApiError(409, "$", f"already exists: {exc.diag.message_detail}") from None
    except PsycopgError as exc:
        raise ApiError(
            503, "$", f"database unavailable: {type(exc).__name__}", retry_after=5
        ) from None
