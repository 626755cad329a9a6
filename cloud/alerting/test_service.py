"""The alerting service as ``rig-cloud alerts`` runs it: woken by the live channel when an
anomaly is stored (the tick here is an hour, so nothing else could have woken it), and one
active process per database, a second one waiting as a standby and taking over."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from cloud.alerting.config import ChannelIn, RuleIn
from cloud.alerting.service import AlertService
from cloud.alerting.store import create_channel, create_rule
from cloud.storage import store_readings
from shared.message import Reading
from tests.support.processes import wait_until
from tests.support.receivers import WebhookSink

pytestmark = pytest.mark.integration


class Running:
    """AlertServices on an event loop in a thread, each stoppable on its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.stops: dict[AlertService, asyncio.Event] = {}
        self.futures: dict[AlertService, object] = {}

    def start(self, service: AlertService) -> None:
        async def make() -> asyncio.Event:
            return asyncio.Event()

        stop = asyncio.run_coroutine_threadsafe(make(), self.loop).result()
        self.stops[service] = stop
        self.futures[service] = asyncio.run_coroutine_threadsafe(service.run(stop), self.loop)

    def stop(self, service: AlertService) -> None:
        self.loop.call_soon_threadsafe(self.stops[service].set)
        future = self.futures[service]
        assert hasattr(future, "result")
        future.result(timeout=30)

    def close(self) -> None:
        for service in list(self.stops):
            if not self.stops[service].is_set():
                self.stop(service)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture
def running() -> Iterator[Running]:
    r = Running()
    yield r
    r.close()


def _anomaly(machine: str, seq: int) -> Reading:
    return Reading(
        machine,
        "rig-1",
        seq,
        datetime.now(UTC),
        {"vibration": 40.0},
        detection={
            "method": "thresholds",
            "is_anomaly": True,
            "score": 2.0,
            "sensors": ["vibration"],
            "warnings": [],
        },
    )


def test_woken_by_a_stored_anomaly_and_one_leader_with_a_standby(
    database_url: str, running: Running
) -> None:
    hook = WebhookSink().start()
    try:
        with psycopg.connect(database_url) as conn, conn.transaction():
            create_channel(
                conn, ChannelIn(name="hook", kind="webhook", config={"url": hook.url}), "t"
            )
            create_rule(conn, RuleIn(name="r", kind="anomaly"), "t")
        first = AlertService(database_url, tick_s=3600)
        second = AlertService(database_url, tick_s=0.2)
        running.start(first)
        wait_until(first.leader.is_set, 30, "the first service leading")
        running.start(second)
        # The standby has tried the lock (and keeps trying) without taking it.
        wait_until(lambda: first.passes >= 1, 30, "the first pass")

        with psycopg.connect(database_url) as conn, conn.transaction():
            store_readings(conn, [_anomaly("A", 1)])
        wait_until(lambda: len(hook.bodies()) == 1, 30, "the alert for A")
        assert not second.leader.is_set()
        assert second.passes == 0

        running.stop(first)
        wait_until(second.leader.is_set, 30, "the standby taking over")
        with psycopg.connect(database_url) as conn, conn.transaction():
            store_readings(conn, [_anomaly("B", 2)])
        wait_until(lambda: len(hook.bodies()) == 2, 30, "the alert for B")
        assert sorted(b["alert"]["machine_id"] for b in hook.bodies()) == ["A", "B"]
    finally:
        hook.stop()
