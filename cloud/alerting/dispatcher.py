"""The notification queue worked through: due notifications are claimed (leased, so another
dispatcher would skip them), sent concurrently, each bounded by its channel's timeout, and
their results recorded: ``sent`` with the attempt count, or the error and the next attempt
after an exponential back-off, ``failed`` after ``max_attempts``. An unreachable receiver
costs its own notifications retries and never delays the others'."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from cloud.alerting.senders import DeliveryError, deliver
from cloud.live import notify_event
from shared.logs import log_event

log = logging.getLogger(__name__)

T = TypeVar("T")

BATCH = 100
LEASE_S = 120


@dataclass(frozen=True)
class Backoff:
    base_s: float = 1.0
    max_s: float = 300.0
    max_attempts: int = 8

    def delay(self, attempts: int) -> float:
        return float(min(self.max_s, self.base_s * 2 ** max(0, attempts - 1)))


def claim(conn: psycopg.Connection, limit: int = BATCH) -> list[dict[str, Any]]:
    """Due notifications with what is needed to render and send them, leased for LEASE_S."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "UPDATE alert_notifications SET next_attempt_at = now() + %s::interval "
            "WHERE id IN (SELECT id FROM alert_notifications WHERE status = 'pending' "
            "AND next_attempt_at <= now() ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) "
            "RETURNING id",
            (f"{LEASE_S} seconds", limit),
        )
        ids = [r["id"] for r in cur.fetchall()]
        if not ids:
            return []
        cur.execute(
            "SELECT n.id, n.event, n.attempts, n.channel_id, n.channel_name, "
            "c.kind AS channel_kind, "
            "c.config AS channel_config, a.id AS alert_id, a.group_key, a.rule_name, a.kind, "
            "a.machine_id, a.sensor, a.edge_id, a.severity, a.status, a.summary, a.occurrences, "
            "a.first_anomaly_id, a.last_anomaly_id, a.started_at, a.updated_at, a.resolved_at "
            "FROM alert_notifications n JOIN alerts a ON a.id = n.alert_id "
            "LEFT JOIN alert_channels c ON c.id = n.channel_id WHERE n.id = ANY(%s) ORDER BY n.id",
            (ids,),
        )
        return cur.fetchall()


def record(
    conn: psycopg.Connection, notification_id: int, error: str | None, backoff: Backoff
) -> str:
    """The result of one attempt; returns the notification's new status."""
    row = conn.execute(
        "SELECT n.attempts, a.id, a.machine_id FROM alert_notifications n "
        "JOIN alerts a ON a.id = n.alert_id WHERE n.id = %s FOR UPDATE OF n",
        (notification_id,),
    ).fetchone()
    attempts = (int(row[0]) if row else 0) + 1
    if row is not None and row[2] is not None:
        # Open feeds show each alert's deliveries: they reload its row on this event (edge
        # alerts name no machine and are not shown to scoped users, so not announced).
        with conn.cursor() as cur:
            notify_event(cur, {"type": "alert", "id": row[1], "machine_id": row[2]})
    if error is None:
        status = "sent"
        conn.execute(
            "UPDATE alert_notifications SET status = 'sent', attempts = %s, sent_at = now(), "
            "last_error = NULL WHERE id = %s",
            (attempts, notification_id),
        )
    else:
        status = "failed" if attempts >= backoff.max_attempts else "pending"
        conn.execute(
            "UPDATE alert_notifications SET status = %s, attempts = %s, last_error = %s, "
            "next_attempt_at = now() + %s::interval WHERE id = %s",
            (status, attempts, error[:1000], f"{backoff.delay(attempts)} seconds", notification_id),
        )
    return status


def next_due_in(conn: psycopg.Connection) -> float | None:
    """Seconds until the next pending notification is due (None: none pending)."""
    row = conn.execute(
        "SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM alert_notifications "
        "WHERE status = 'pending'"
    ).fetchone()
    return None if row is None or row[0] is None else max(0.0, float(row[0]))


class Dispatcher:
    def __init__(self, pool: ConnectionPool, backoff: Backoff | None = None) -> None:
        self.pool = pool
        self.backoff = backoff or Backoff()
        self.sent = 0
        self.failed_attempts = 0

    async def _db(self, work: Callable[..., T], *args: Any) -> T:
        def run() -> T:
            with self.pool.connection() as conn, conn.transaction():
                return work(conn, *args)

        return await asyncio.to_thread(run)

    async def run_once(self, client: httpx.AsyncClient) -> int:
        """Send every due notification (in batches); returns how many were attempted."""
        attempted = 0
        while True:
            batch = await self._db(claim, BATCH)
            if not batch:
                return attempted
            await asyncio.gather(*(self._one(client, n) for n in batch))
            attempted += len(batch)
            if len(batch) < BATCH:
                return attempted

    async def _one(self, client: httpx.AsyncClient, n: dict[str, Any]) -> None:
        error: str | None = None
        if n["channel_kind"] is None:
            error = "channel deleted"
        else:
            try:
                await deliver(client, n["channel_kind"], n["channel_config"], n)
            except DeliveryError as exc:
                error = str(exc)
            except TimeoutError:
                error = "timed out"
            except Exception as exc:  # recorded; the other deliveries go on
                error = f"{type(exc).__name__}: {exc}"
        status = await self._db(record, n["id"], error, self.backoff)
        if error is None:
            self.sent += 1
            log_event(
                log,
                logging.INFO,
                "notification sent",
                notification=n["id"],
                alert=n["alert_id"],
                channel=n["channel_name"],
                notify_event=n["event"],
            )
        else:
            self.failed_attempts += 1
            log_event(
                log,
                logging.WARNING,
                "notification not delivered",
                notification=n["id"],
                alert=n["alert_id"],
                channel=n["channel_name"],
                error=error,
                status=status,
                attempts=n["attempts"] + 1,
            )

    async def due_in(self) -> float | None:
        return await self._db(next_due_in)
