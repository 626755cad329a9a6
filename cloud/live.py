"""Live events for dashboards, across any number of API processes: PostgreSQL LISTEN/NOTIFY.

Writers call ``notify_*`` inside the transaction that stores the data, so an event is
delivered only once its data is committed (NOTIFY is transactional) and every API process
listening on the channel receives it. Each API process runs one ``LiveHub``: one listening
connection, fanned out to its WebSocket subscribers through bounded queues, so a slow
browser loses its own oldest events and never stalls the others or the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg

from cloud.readings import load_reading
from shared.logs import log_event
from shared.message import Reading, format_ts

log = logging.getLogger(__name__)

CHANNEL = "rig_live"
# PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; a larger reading travels as a
# reference that the hub loads before pushing it.
MAX_PAYLOAD = 7900
# Anomalies announced per batch and machine: a fault storm must not flood the channel.
MAX_ANOMALIES_PER_MACHINE = 20
QUEUE_SIZE = 1000


def reading_event(reading: Reading) -> dict[str, Any]:
    return {
        "type": "reading",
        "machine_id": reading.machine_id,
        "edge_id": reading.edge_id,
        "seq": reading.seq,
        "timestamp": format_ts(reading.ts),
        "values": reading.values,
        "custom_sensors": reading.custom,
        "detection": reading.detection,
    }


def _send(cur: psycopg.Cursor, payloads: list[bytes]) -> None:
    if payloads:
        cur.executemany("SELECT pg_notify(%s, %s)", [(CHANNEL, p.decode()) for p in payloads])


def notify_readings(
    cur: psycopg.Cursor,
    readings: Iterable[Reading],
    anomaly_ids: Mapping[tuple[str, int], int] | None = None,
) -> None:
    """Announce the newest reading of each machine in a committed batch, and its anomalies
    (with their ``anomaly_detections`` row id from ``anomaly_ids``, keyed by edge and seq, so
    a feed links a live row to its detail page)."""
    latest: dict[str, Reading] = {}
    anomalies: dict[str, list[Reading]] = {}
    for r in readings:
        current = latest.get(r.machine_id)
        if current is None or r.ts >= current.ts:
            latest[r.machine_id] = r
        if r.detection and r.detection.get("is_anomaly"):
            anomalies.setdefault(r.machine_id, []).append(r)
    payloads: list[bytes] = []
    for machine_id in sorted(latest):
        r = latest[machine_id]
        payload = orjson.dumps(reading_event(r))
        if len(payload) > MAX_PAYLOAD:
            payload = orjson.dumps(
                {
                    "type": "reading_ref",
                    "machine_id": r.machine_id,
                    "edge_id": r.edge_id,
                    "seq": r.seq,
                    "timestamp": format_ts(r.ts),
                }
            )
        payloads.append(payload)
    for machine_id in sorted(anomalies):
        for r in anomalies[machine_id][-MAX_ANOMALIES_PER_MACHINE:]:
            d = r.detection or {}
            event = {
                "type": "anomaly",
                "id": (anomaly_ids or {}).get((r.edge_id, r.seq)),
                "machine_id": r.machine_id,
                "edge_id": r.edge_id,
                "seq": r.seq,
                "timestamp": format_ts(r.ts),
                "method": d.get("method"),
                "score": d.get("score"),
                "sensors": d.get("sensors", []),
            }
            payload = orjson.dumps(event)
            if len(payload) <= MAX_PAYLOAD:
                payloads.append(payload)
    _send(cur, payloads)


def notify_event(cur: psycopg.Cursor, event: Mapping[str, Any]) -> None:
    payload = orjson.dumps(event)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"live event of {len(payload)} bytes is too large to announce")
    _send(cur, [payload])


@dataclass(eq=False)
class Subscription:
    machines: frozenset[str] | None
    queue: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUE_SIZE)
    )
    dropped: int = 0

    def wants(self, event: Mapping[str, Any]) -> bool:
        machine = event.get("machine_id")
        return self.machines is None or machine is None or machine in self.machines

    def offer(self, event: dict[str, Any]) -> None:
        if not self.wants(event):
            return
        if self.queue.full():
            # The subscriber is behind: its oldest event is the least useful one.
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)


class LiveHub:
    """One LISTEN connection per API process, fanned out to in-process subscribers."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._subscribers: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="live-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def subscribe(self, machines: frozenset[str] | None) -> Subscription:
        sub = Subscription(machines)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish_local(self, event: dict[str, Any]) -> None:
        for sub in list(self._subscribers):
            sub.offer(event)

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, connect_timeout=5
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    delay = 0.5
                    log_event(log, logging.INFO, "live hub listening", channel=CHANNEL)
                    async for note in conn.notifies():
                        await self._dispatch(note.payload)
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                self.connected.clear()
                # Subscribers learn that events may have been missed and should reload.
                self.publish_local({"type": "gap", "reason": type(exc).__name__})
                log_event(
                    log,
                    logging.WARNING,
                    "live hub lost the database; reconnecting",
                    error=str(exc),
                    retry_s=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _dispatch(self, payload: str) -> None:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log_event(log, logging.WARNING, "ignored undecodable live event", size=len(payload))
            return
        if not self._subscribers:
            return
        if event.get("type") == "reading_ref":
            loaded = await self._load_reading(event)
            if loaded is None:
                return
            event = loaded
        self.publish_local(event)

    async def _load_reading(self, ref: Mapping[str, Any]) -> dict[str, Any] | None:
        # Its own connection: the listening one is busy delivering notifications. Rare path
        # (readings with very many custom sensors), so no pool is kept for it.
        try:
            async with await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=5
            ) as conn:
                return await load_reading(conn, str(ref["edge_id"]), int(ref["seq"]))
        except psycopg.Error as exc:
            log_event(log, logging.WARNING, "could not load announced reading", error=str(exc))
            return None
