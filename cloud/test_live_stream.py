"""The WebSocket stream across API processes: a reading ingested through one API process, and
a threshold changed through it, reach a dashboard connected to another (PostgreSQL
LISTEN/NOTIFY), filtered to the machines the user may see."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.support.accounts import add_user, bearer, login
from tests.support.processes import Service, free_port, http_ok, wait_until

pytestmark = pytest.mark.integration
KEY = "k" * 32


def _events(ws: ClientConnection, wanted: int, timeout: float = 15) -> list[dict[str, Any]]:
    """The next ``wanted`` events other than heartbeats."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(found) < wanted:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {found} arrived"
        event = json.loads(ws.recv(timeout=remaining))
        if event["type"] != "heartbeat":
            found.append(event)
    return found


def test_events_cross_api_processes_and_respect_machine_scope(
    database_url: str, log_dir: Path
) -> None:
    env = {"DATABASE_URL": database_url, "RIG_INGEST_API_KEY": KEY}
    ports = [free_port(), free_port()]
    apis = [
        Service(f"api{i}", ["cloud.cli", "serve", "--port", str(port)], log_dir, env).start()
        for i, port in enumerate(ports)
    ]
    try:
        for port in ports:
            wait_until(
                lambda p=port: http_ok(f"http://127.0.0.1:{p}/readyz"), 60, "api up", services=apis
            )
        writer = httpx.Client(base_url=f"http://127.0.0.1:{ports[0]}", timeout=10)
        reader = httpx.Client(base_url=f"http://127.0.0.1:{ports[1]}", timeout=10)
        admin = login(writer, "admin", add_user(database_url, "admin", "admin"))
        operator = login(reader, "op", add_user(database_url, "op", "operator", ["A"]))
        stream = f"ws://127.0.0.1:{ports[1]}/api/v1/stream"
        with connect(stream, additional_headers=bearer(operator)) as ws:
            hello = _events(ws, 1)[0]
            assert hello["type"] == "hello" and hello["machines"] == ["A"]
            assert hello["user"]["username"] == "op"
            wait_until(lambda: _events_live(ws), 10, "listener connected")

            ingest = writer.post(
                "/api/v1/ingest",
                headers={"X-API-KEY": KEY},
                json={
                    "readings": [
                        {"machine_id": "B", "temperature": 71.0},
                        {
                            # An edge's own verdict (edge_id and seq): see cloud/scoring.py.
                            "machine_id": "A",
                            "edge_id": "rig-a",
                            "seq": 1,
                            "temperature": 72.0,
                            "custom_sensors": {"arm_torque": 3.5},
                            "detection": {
                                "method": "thresholds",
                                "is_anomaly": True,
                                "score": 0.4,
                                "sensors": ["temperature"],
                            },
                        },
                    ]
                },
            )
            assert ingest.status_code == 200, ingest.text
            reading, anomaly = _events(ws, 2)
            assert reading["type"] == "reading" and reading["machine_id"] == "A"
            assert reading["values"] == {"temperature": 72.0}
            assert reading["custom_sensors"] == {"arm_torque": 3.5}
            assert (anomaly["type"], anomaly["sensors"]) == ("anomaly", ["temperature"])
            # The live row links to its detail page: the event names the stored anomaly.
            detail = reader.get(f"/api/v1/anomalies/{anomaly['id']}", headers=bearer(operator))
            assert detail.status_code == 200, detail.text
            assert (detail.json()["machine_id"], detail.json()["seq"]) == ("A", 1)

            changed = writer.put(
                "/api/v1/machines/A/thresholds/temperature",
                headers=bearer(admin),
                json={"critical_low": 50, "critical_high": 71.5},
            )
            assert changed.status_code == 200, changed.text
            event = _events(ws, 1)[0]
            assert event["type"] == "thresholds" and event["sensor"] == "temperature"
            assert event["entry"]["critical_high"] == 71.5
            # Machine B's reading never reached the operator of A.
            ws.close()

        with (
            connect(f"{stream}?machines=B", additional_headers=bearer(operator)) as ws,
            pytest.raises(Exception, match="4403"),
        ):
            ws.recv(timeout=5)
    finally:
        for api in apis:
            api.stop()


def _events_live(ws: ClientConnection) -> bool:
    """Heartbeats say whether the API's listener is connected to PostgreSQL."""
    event = json.loads(ws.recv(timeout=5))
    return event["type"] == "heartbeat" and bool(event["live"])
