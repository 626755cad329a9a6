"""Alerting's Alertmanager channel against Prometheus Alertmanager itself (Debian package
``prometheus-alertmanager``, installed by ``make system-deps``): the alert Rig Alpha posts to
``/api/v2/alerts`` is accepted and listed with its labels, Alertmanager routes it to its own
webhook receiver, and the resolve (``endsAt``) reaches that receiver as ``resolved``."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from cloud.alerting.config import ChannelIn, RuleIn
from cloud.alerting.dispatcher import Backoff, Dispatcher
from cloud.alerting.evaluator import Evaluator
from cloud.alerting.store import create_channel, create_rule
from cloud.storage import store_readings
from cloud.store.anomaly_workflow import transition
from shared.message import Reading
from tests.support.processes import Service, free_port, http_ok, wait_until
from tests.support.receivers import WebhookSink

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _alertmanager() -> str:
    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if found is None:
        pytest.fail(
            "Alertmanager is not installed: run `make system-deps` (Debian package "
            "prometheus-alertmanager)"
        )
    return found


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[tuple[str, WebhookSink]]:
    binary = _alertmanager()
    hook = WebhookSink().start()
    port = free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        "route:\n"
        "  receiver: hook\n"
        "  group_by: [group_key]\n"
        "  group_wait: 1s\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 1h\n"
        "receivers:\n"
        "  - name: hook\n"
        "    webhook_configs:\n"
        f"      - url: {hook.url}/from-alertmanager\n"
        "        send_resolved: true\n"
    )
    # Run through a tiny Python shim: Service starts `python -m`, so exec the binary from it.
    service = Service(
        "alertmanager",
        [
            "tests.peers.exec_binary",
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        tmp_path,
    ).start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(f"{base}/-/ready"), 60, "alertmanager up", services=[service])
        yield base, hook
    finally:
        service.stop()
        hook.stop()


def _cycle(url: str, evaluator: Evaluator) -> None:
    with psycopg.connect(url) as conn, conn.transaction():
        evaluator.run_pass(conn)
    with ConnectionPool(url, min_size=1, max_size=2) as pool:

        async def send() -> None:
            async with httpx.AsyncClient() as client:
                await Dispatcher(pool, Backoff(base_s=0.01)).run_once(client)

        asyncio.run(send())


def _listed(base: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{base}/api/v2/alerts", timeout=5)
    response.raise_for_status()
    return list(response.json())


def test_alertmanager_accepts_routes_and_resolves_our_alert(
    database_url: str, alertmanager: tuple[str, WebhookSink]
) -> None:
    base, hook = alertmanager
    with psycopg.connect(database_url) as conn, conn.transaction():
        create_channel(conn, ChannelIn(name="am", kind="alertmanager", config={"url": base}), "t")
        create_rule(conn, RuleIn(name="vibration faults", kind="anomaly"), "t")
        store_readings(
            conn,
            [
                Reading(
                    "A",
                    "rig-1",
                    1,
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
            ],
        )
    evaluator = Evaluator()
    _cycle(database_url, evaluator)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT status FROM alert_notifications").fetchall() == [("sent",)]
    wait_until(lambda: bool(_listed(base)), 30, "the alert listed by Alertmanager")
    (listed,) = _listed(base)
    assert listed["labels"]["alertname"] == "vibration faults"
    assert listed["labels"]["machine_id"] == "A"
    assert listed["labels"]["severity"] == "critical"
    assert listed["status"]["state"] == "active"

    def routed(status: str) -> bool:
        return any(b.get("status") == status for b in hook.bodies("/from-alertmanager"))

    wait_until(lambda: routed("firing"), 30, "Alertmanager's webhook notification")

    with psycopg.connect(database_url) as conn, conn.transaction():
        (anomaly_id,) = conn.execute("SELECT id FROM anomaly_detections").fetchone() or (0,)
        transition(conn, anomaly_id, "resolve", "olga", "fixed", None)
    _cycle(database_url, evaluator)
    wait_until(lambda: routed("resolved"), 30, "Alertmanager's resolved notification")
