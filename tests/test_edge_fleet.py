"""The edge's status report end to end on real services: simulator (Modbus TCP) -> rig-edge ->
Kafka (header ``edge_status`` on a batch) -> aggregator -> PostgreSQL -> GET /api/v1/edges,
with its guard: a viewer is refused, a machine-scoped operator sees only the edges serving one
of their machines, and of those only their machines. When the simulator stops, the edge has
no readings to send: its report travels alone and says which source is down. The HTTP path
for a report sent alone (POST /api/v1/edges/status) names its edge."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.settings import CloudSettings
from tests.support.accounts import add_user, bearer, login
from tests.support.pipeline import (
    edge_config,
    kafka_output,
    start_aggregator,
    start_edge,
    start_simulator,
)
from tests.support.processes import wait_until
from tools.kafka_broker import KafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
MACHINES = ["F1", "F2"]
EDGE = "edge-fleet"


def _reported(database_url: str) -> dict[str, Any] | None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT status, version, machines, inputs, thresholds, backlog, dropped_total "
            "FROM edges WHERE edge_id = %s AND status_reported_at IS NOT NULL",
            (EDGE,),
        ).fetchone()
    if row is None:
        return None
    keys = ("status", "version", "machines", "inputs", "thresholds", "backlog", "dropped")
    return dict(zip(keys, row, strict=True))


def test_edge_status_reaches_the_fleet_api_through_kafka(
    tmp_path: Path, log_dir: Path, database_url: str, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    sim, sim_port = start_simulator(log_dir, None, MACHINES, 2.0)
    cfg = edge_config(
        tmp_path,
        sim_port=sim_port,
        machines=MACHINES,
        poll_interval_s=0.25,
        edge_id=EDGE,
        output=kafka_output(kafka_broker.bootstrap, kafka_topic),
    )
    doc = yaml.safe_load(cfg.read_text())
    doc["forwarding"]["status_interval_s"] = 1.0
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    edge = start_edge(cfg, log_dir)
    agg = start_aggregator(log_dir, database_url, kafka_broker.bootstrap, kafka_topic)
    try:
        # A report whose input has read both machines (the first report may predate that).
        wait_until(
            lambda: (
                (r := _reported(database_url)) is not None
                and r["machines"] == MACHINES
                and all(i["healthy"] for i in r["inputs"].values())
                and r["inputs"]
            ),
            90,
            "the edge's status report stored",
            services=[sim, edge, agg],
        )
        stored = _reported(database_url)
        assert stored is not None
        assert stored["status"] in ("ok", "degraded") and stored["version"]
        assert stored["dropped"] == 0 and stored["backlog"] >= 0
        (source,) = stored["inputs"].values()
        assert source["down"] == [] and source["last_reading_age_s"] is not None
        # The rig's only source goes away: no more readings, the report comes alone.
        sim.stop()
        wait_until(
            lambda: (
                (r := _reported(database_url)) is not None
                and any(i["down"] for i in r["inputs"].values())
            ),
            90,
            "a report alone saying the source is down",
            services=[edge, agg],
        )
        assert _reported(database_url)["status"] == "degraded"  # type: ignore[index]
    finally:
        edge.stop()
        agg.stop()
        sim.stop()

    passwords = {
        "boss": add_user(database_url, "fleet-admin", "admin"),
        "op-f1": add_user(database_url, "op-f1", "operator", ["F1"]),
        "op-z": add_user(database_url, "op-z", "operator", ["Z9"]),
        "viewer": add_user(database_url, "viewer", "viewer"),
    }
    settings = CloudSettings(database_url=database_url, ingest_api_key="k" * 32)
    with TestClient(create_app(settings)) as client:

        def edges(user: str, name: str | None = None) -> Any:
            token = login(client, name or user, passwords[user])
            return client.get("/api/v1/edges", headers=bearer(token))

        answer = edges("boss", "fleet-admin")
        assert answer.status_code == 200, answer.text
        (row,) = [e for e in answer.json()["edges"] if e["edge_id"] == EDGE]
        assert row["machines"] == MACHINES and row["silent_s"] >= 0
        assert row["status_reported_at"] and row["version"] == stored["version"]
        scoped = edges("op-f1").json()["edges"]
        assert [e["machines"] for e in scoped] == [["F1"]]  # F2 is not theirs to know about
        assert edges("op-z").json()["edges"] == []
        assert edges("viewer").status_code == 403
        client.cookies.clear()  # the logins above left a session cookie
        assert client.get("/api/v1/edges").status_code == 401

        # A report sent alone over HTTP, with the shared ingest key: it must name its edge.
        report = {
            "v": 1,
            "at": datetime.now(UTC).isoformat(),
            "version": "9.9.9",
            "status": "ok",
            "uptime_s": 1.0,
            "backlog": 0,
            "dropped": 3,
        }
        key = {"X-API-KEY": "k" * 32}
        post = lambda doc: client.post("/api/v1/edges/status", json=doc, headers=key)  # noqa: E731
        assert post(report).status_code == 422
        assert post({**report, "edge_id": "ingest:x"}).status_code == 422
        assert post({**report, "edge_id": "edge-alone"}).status_code == 204
        assert client.post("/api/v1/edges/status", json=report).status_code == 401
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT version, dropped_total FROM edges WHERE edge_id = 'edge-alone'"
            ).fetchone()
        assert row == ("9.9.9", 3)
