"""The alerting process (``rig-cloud alerts``): evaluator and dispatcher in one asyncio loop.

It runs beside the API and the aggregator, not inside them: ingest never waits for a rule or a
mail server, the API scales to any number of processes without evaluating rules twice, and a
stuck receiver cannot take threads from request handling. One process in the fleet works at a
time (a PostgreSQL advisory lock); a second one waits as a standby and takes over when the
first one's session ends.

It wakes on the live channel (``cloud/live.py``: anomalies are announced in the transaction
that stores them), so a stored anomaly is evaluated within milliseconds, and every ``tick_s``
for the time-based rules (edge offline, backlog, remaining life, predictions) and resolves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx
import orjson
import psycopg
from psycopg_pool import ConnectionPool

from cloud.alerting.dispatcher import Backoff, Dispatcher
from cloud.alerting.evaluator import REPEAT_S, Evaluator, PassResult
from cloud.live import CHANNEL
from shared.logs import log_event

log = logging.getLogger(__name__)

LOCK_KEY = 0x7269_6761_6C72  # "rigalr": one alerting process at a time
# Events on the live channel that can change what rules find, and the rules they concern:
# a burst of anomalies re-evaluates these at once, everything else waits for the tick.
WAKE_TYPES = frozenset({"anomaly", "anomaly_state"})
ANOMALY_KINDS = frozenset({"anomaly", "persistence"})


class AlertService:
    def __init__(
        self,
        database_url: str,
        tick_s: float = 5.0,
        repeat_s: int = REPEAT_S,
        backoff: Backoff | None = None,
    ) -> None:
        self.database_url = database_url
        self.tick_s = tick_s
        self.evaluator = Evaluator(repeat_s=repeat_s)
        self.backoff = backoff or Backoff()
        self._evaluate = asyncio.Event()
        self._dispatch = asyncio.Event()
        self.leader = asyncio.Event()
        self.passes = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._lead(stop)
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
                self.leader.clear()
                log_event(
                    log, logging.WARNING, "alerting lost the database; retrying", error=str(exc)
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.tick_s)

    async def _lead(self, stop: asyncio.Event) -> None:
        async with await psycopg.AsyncConnection.connect(
            self.database_url, autocommit=True, connect_timeout=5
        ) as lock_conn:
            while not stop.is_set():
                row = await (
                    await lock_conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
                ).fetchone()
                if row and row[0]:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.tick_s)
            if stop.is_set():
                return
            self.leader.set()
            log_event(log, logging.INFO, "alerting active", tick_s=self.tick_s)
            pool = ConnectionPool(
                self.database_url,
                min_size=1,
                max_size=4,
                open=False,
                timeout=10,
                kwargs={"connect_timeout": 5},
            )
            pool.open(wait=True, timeout=30)
            try:
                async with httpx.AsyncClient() as client:
                    tasks = [
                        asyncio.create_task(self._listen(lock_conn), name="alerts-listen"),
                        asyncio.create_task(self._evaluate_loop(pool), name="alerts-evaluate"),
                        asyncio.create_task(
                            self._dispatch_loop(Dispatcher(pool, self.backoff), client),
                            name="alerts-dispatch",
                        ),
                    ]
                    stopper = asyncio.create_task(stop.wait())
                    done, _ = await asyncio.wait(
                        [*tasks, stopper], return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in [*tasks, stopper]:
                        task.cancel()
                    for task in tasks:
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                    for task in done:
                        if task is not stopper and task.exception() is not None:
                            raise task.exception()  # type: ignore[misc]
            finally:
                self.leader.clear()
                await asyncio.to_thread(pool.close)

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        # The lock's own session listens: losing it means losing the lock, and everything
        # restarts from _lead.
        await conn.execute(f"LISTEN {CHANNEL}")
        self._evaluate.set()  # a first pass at once: what happened while nobody listened
        async for note in conn.notifies():
            if '"anomaly' not in note.payload:
                continue  # readings: the bulk of the channel, never a reason to evaluate
            try:
                kind = orjson.loads(note.payload).get("type")
            except orjson.JSONDecodeError:
                continue
            if kind in WAKE_TYPES:
                self._evaluate.set()

    def _pass(self, pool: ConnectionPool, kinds: frozenset[str] | None) -> PassResult:
        with pool.connection() as conn, conn.transaction():
            return self.evaluator.run_pass(conn, kinds)

    async def _evaluate_loop(self, pool: ConnectionPool) -> None:
        loop = asyncio.get_running_loop()
        next_full = 0.0  # the first pass is a full one
        while True:
            wait = max(0.0, next_full - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._evaluate.wait(), wait)
            self._evaluate.clear()
            full = loop.time() >= next_full
            if full:
                next_full = loop.time() + self.tick_s
            kinds = None if full else ANOMALY_KINDS
            result = await asyncio.to_thread(self._pass, pool, kinds)
            self.passes += 1
            if result.opened or result.resolved or result.queued:
                log_event(
                    log,
                    logging.INFO,
                    "alerts evaluated",
                    opened=result.opened,
                    updated=result.updated,
                    resolved=result.resolved,
                    queued=result.queued,
                )
            if result.queued:
                self._dispatch.set()

    async def _dispatch_loop(self, dispatcher: Dispatcher, client: httpx.AsyncClient) -> None:
        while True:
            await dispatcher.run_once(client)
            due = await dispatcher.due_in()
            wait = self.tick_s if due is None else min(self.tick_s, max(0.05, due))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dispatch.wait(), wait)
            self._dispatch.clear()
