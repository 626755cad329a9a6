"""Every input kind end to end through a running ``rig-edge``, and the edge's promises that
only a running daemon can keep.

- MQTT (simulator -> Mosquitto -> edge -> Kafka -> aggregator -> PostgreSQL): a kill right
  after the commit, before the broker got its acknowledgement, must not store a message
  twice; messages received but not committed when the edge is killed must come back.
- OPC-UA (simulator's server -> edge subscription -> Kafka -> ... ), through a kill -9.
- HTTP output: a reading the cloud refuses for good ends in the edge's ``rejected`` table
  and does not hold up the readings behind it.
- SIGHUP with a new output section: readings flow to the new destination, none lost or
  repeated across the two.

Each is judged against the simulator's record by the exactly-once checker.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import psycopg
import pytest
import yaml

from cloud.db.embedded import EmbeddedPostgres
from tests.support.pipeline import (
    EdgeRun,
    Verification,
    edge_config,
    kafka_output,
    read_buffer_facts,
    start_aggregator,
    start_edge,
    start_simulator,
    verify_exactly_once,
    wait_all_stored,
    wait_health,
    wait_log,
    wait_stored_beyond,
)
from tests.support.processes import Service, free_port, http_ok, wait_until
from tools.kafka_broker import KafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MACHINES = ["A", "B"]


def _base_config(tmp: Path, edge_id: str, output: dict[str, Any]) -> dict[str, Any]:
    return {
        "edge_id": edge_id,
        "log_level": "INFO",
        "buffer": {"path": str(tmp / f"{edge_id}-buffer.db")},
        "metrics": {"host": "127.0.0.1", "port": free_port()},
        "inputs": {},
        "output": output,
        "forwarding": {"retry_initial_s": 0.2, "retry_max_s": 2.0, "shutdown_flush_s": 5},
    }


def _write(tmp: Path, doc: dict[str, Any]) -> Path:
    path = tmp / f"{doc['edge_id']}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _metric(cfg: Path, name: str) -> float:
    """Sum of a counter's samples on the edge's /metrics (0 if absent, -1 if the edge does
    not answer)."""
    port = yaml.safe_load(cfg.read_text())["metrics"]["port"]
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    except httpx.HTTPError:
        return -1.0  # not answering (yet): never satisfies a wait for a count
    pattern = re.compile(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", re.MULTILINE)
    return sum(float(v) for v in pattern.findall(text))


def _finish(
    database_url: str | list[str],
    cfg: Path,
    log_dir: Path,
    record: Path,
    sim: Service,
    others: list[Service],
    **checks: Any,
) -> Verification:
    edge = EdgeRun.of(cfg, log_dir)
    assert sim.stop() == 0
    wait_all_stored(database_url, cfg, others, edge_id=edge.edge_id, edge=edge)
    for service in others:
        service.stop()
    return verify_exactly_once(database_url, record, edge.edge_id, edge=edge, **checks)


# -- MQTT ----------------------------------------------------------------------------------


def _mqtt_pipeline(
    tmp_path: Path,
    log_dir: Path,
    mqtt_broker: tuple[str, int],
    bootstrap: str,
    topic: str,
) -> tuple[Path, Path, str]:
    """Edge config reading the simulator's machine documents from Mosquitto under a topic
    prefix of this test's own; returns (config, simulator scenario, prefix)."""
    host, port = mqtt_broker
    prefix = f"t{uuid.uuid4().hex[:8]}"
    doc = _base_config(tmp_path, "edge-mqtt", kafka_output(bootstrap, topic))
    doc["inputs"]["mqtt"] = [
        {
            "name": "plant",
            "host": host,
            "port": port,
            # A persistent session: the broker keeps what the edge has not acknowledged.
            "client_id": f"edge-{prefix}",
            "clean_session": False,
            "qos": 1,
            "subscriptions": [
                {
                    "topic": f"{prefix}/+/telemetry",
                    "machine_from_topic": 1,
                    "values_path": "values",
                    "timestamp_path": "ts_ms",
                    "timestamp_format": "unix_ms",
                }
            ],
        }
    ]
    scenario = tmp_path / "mqtt-scenario.yaml"
    scenario.write_text(yaml.safe_dump({"mqtt": {"topic_prefix": prefix}}))
    return _write(tmp_path, doc), scenario, prefix


def _subscribed(log_dir: Path, mqtt_broker: tuple[str, int], prefix: str, edge: Service) -> None:
    """Wait until the edge's subscription is in place at the broker: a message published now
    reaches it (a payload it cannot map, which it logs and acknowledges)."""
    wait_log(log_dir / "rig-edge.log", '"mqtt connected"', "edge connected", services=[edge])
    probe = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{prefix}")
    probe.connect(*mqtt_broker)
    probe.loop_start()
    try:
        topic = f"{prefix}/probe/telemetry"
        probe.publish(topic, b'{"probe": true}', qos=1).wait_for_publish(10)
        wait_log(log_dir / "rig-edge.log", topic, "the edge to receive a probe", services=[edge])
    finally:
        probe.loop_stop()
        probe.disconnect()


def _mqtt_simulator(log_dir: Path, record: Path, scenario: Path, port: int) -> Service:
    flags = ["--scenario", str(scenario), "--mqtt-host", "127.0.0.1", "--mqtt-port", str(port)]
    sim, _ = start_simulator(log_dir, record, MACHINES, 5.0, extra_args=flags)
    return sim


def test_mqtt_killed_after_commit_before_the_ack_stores_each_message_once(
    tmp_path: Path,
    log_dir: Path,
    database_url: str,
    kafka_broker: KafkaBroker,
    kafka_topic: str,
    mqtt_broker: tuple[str, int],
) -> None:
    """The edge dies right after committing a batch of messages, before acknowledging them
    to the broker: the broker delivers them again (flagged DUP) and the restarted edge must
    recognise them instead of committing them under new sequence numbers."""
    bootstrap = kafka_broker.bootstrap
    cfg, scenario, prefix = _mqtt_pipeline(tmp_path, log_dir, mqtt_broker, bootstrap, kafka_topic)
    edge = start_edge(cfg, log_dir, failpoints="edge.buffer.after_commit=40")
    agg = start_aggregator(log_dir, database_url, bootstrap, kafka_topic)
    sim: Service | None = None
    try:
        _subscribed(log_dir, mqtt_broker, prefix, edge)
        record = tmp_path / "served.db"
        sim = _mqtt_simulator(log_dir, record, scenario, mqtt_broker[1])
        edge.wait_failpoint("edge.buffer.after_commit", timeout=90)
        edge = start_edge(cfg, log_dir)
        # The batch committed just before the kill was never acknowledged: the broker
        # delivers it again, and the restarted edge recognises it as already committed.
        wait_until(
            lambda: _metric(cfg, "rig_edge_mqtt_redelivered_total") >= 1,
            60,
            "the redelivered messages to be recognised",
            services=[sim, edge],
        )
        wait_stored_beyond(database_url, [sim, edge, agg], 30, "readings after the restart")
        result = _finish(database_url, cfg, log_dir, record, sim, [edge, agg], delivery="queued")
    finally:
        for service in (edge, agg, sim):
            if service is not None:
                service.stop()
    assert [r.end for r in result.incarnations] == ["failpoint edge.buffer.after_commit", "stopped"]


def test_mqtt_messages_received_but_not_committed_come_back_after_a_kill(
    tmp_path: Path,
    log_dir: Path,
    database_url: str,
    kafka_broker: KafkaBroker,
    kafka_topic: str,
    mqtt_broker: tuple[str, int],
) -> None:
    """QoS 1 is acknowledged only after the commit. The buffer is locked (a stuck disk) so the
    edge receives messages it cannot commit; it is then killed. A connector that
    acknowledged on receipt would have lost those messages; the broker must deliver them to
    the restarted edge."""
    bootstrap = kafka_broker.bootstrap
    cfg, scenario, prefix = _mqtt_pipeline(tmp_path, log_dir, mqtt_broker, bootstrap, kafka_topic)
    edge = start_edge(cfg, log_dir)
    agg = start_aggregator(log_dir, database_url, bootstrap, kafka_topic)
    sim: Service | None = None
    lock: sqlite3.Connection | None = None
    try:
        _subscribed(log_dir, mqtt_broker, prefix, edge)
        record = tmp_path / "served.db"
        sim = _mqtt_simulator(log_dir, record, scenario, mqtt_broker[1])
        wait_stored_beyond(database_url, [sim, edge, agg], 20, "first readings")

        buffer = EdgeRun.of(cfg, log_dir).buffer
        lock = sqlite3.connect(buffer, timeout=30, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # no commit can happen at the edge from now on
        received = _metric(cfg, "rig_edge_readings_in_total")
        committed = _metric(cfg, "rig_edge_readings_buffered_total")
        wait_until(
            lambda: _metric(cfg, "rig_edge_readings_in_total") >= received + 15,
            60,
            "messages received while the buffer is locked",
            services=[sim, edge],
        )
        assert _metric(cfg, "rig_edge_readings_buffered_total") == committed
        edge.kill()
        lock.rollback()
        lock.close()
        lock = None

        edge = start_edge(cfg, log_dir)
        wait_stored_beyond(database_url, [sim, edge, agg], 30, "readings after the restart")
        result = _finish(database_url, cfg, log_dir, record, sim, [edge, agg], delivery="queued")
    finally:
        if lock is not None:
            lock.close()
        for service in (edge, agg, sim):
            if service is not None:
                service.stop()
    assert [r.end for r in result.incarnations] == ["SIGKILL", "stopped"]


# -- OPC-UA --------------------------------------------------------------------------------


def test_opcua_readings_through_the_daemon_survive_a_kill(
    tmp_path: Path, log_dir: Path, database_url: str, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    bootstrap = kafka_broker.bootstrap
    opcua_port = free_port()
    scenario = tmp_path / "opcua-scenario.yaml"
    scenario.write_text(
        yaml.safe_dump(
            {"opcua": {"security": ["none"], "cert_dir": str(tmp_path / "pki")}},
        )
    )
    record = tmp_path / "served.db"
    sim, _ = start_simulator(
        log_dir,
        record,
        MACHINES,
        2.0,
        extra_args=["--scenario", str(scenario), "--opcua-port", str(opcua_port)],
    )
    doc = _base_config(tmp_path, "edge-opcua", kafka_output(bootstrap, kafka_topic))
    doc["inputs"]["opcua"] = [
        {
            "name": "plc",
            "endpoint": f"opc.tcp://127.0.0.1:{opcua_port}/rig-alpha/",
            "publishing_interval_ms": 50,
            "sampling_interval_ms": 0,
            "reconnect_max_s": 1,
            "machines": [
                {"machine_id": m, "browse_root": f"nsu=urn:rig-alpha:simulator;s=Rig/{m}"}
                for m in MACHINES
            ],
        }
    ]
    cfg = _write(tmp_path, doc)
    # The server shows its first sample before the edge subscribes (a counter of 0 is no
    # sample).
    wait_until(
        lambda: record.exists() and _recorded(record) > 0, 30, "first sample", services=[sim]
    )
    edge = start_edge(cfg, log_dir)
    agg = start_aggregator(log_dir, database_url, bootstrap, kafka_topic)
    try:
        wait_stored_beyond(database_url, [sim, edge, agg], 20, "first OPC-UA readings")
        edge.kill()
        edge = start_edge(cfg, log_dir)
        wait_stored_beyond(database_url, [sim, edge, agg], 20, "readings after the restart")
        # The subscription delivers its first values a publishing interval (50 ms) after it
        # is created: allow five.
        result = _finish(
            database_url, cfg, log_dir, record, sim, [edge, agg], first_delivery_s=0.25
        )
    finally:
        for service in (edge, agg, sim):
            service.stop()
    assert [r.end for r in result.incarnations] == ["SIGKILL", "stopped"]
    assert set(result.per_machine) == set(MACHINES)


def _recorded(record: Path) -> int:
    conn = sqlite3.connect(f"file:{record}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM samples").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


# -- HTTP output: a reading refused for good -------------------------------------------------


def _start_api(
    log_dir: Path, database_url: str, key_file: Path, name: str = "cloud"
) -> tuple[Service, str]:
    port = free_port()
    env = {"DATABASE_URL": database_url, "RIG_INGEST_API_KEY_FILE": str(key_file)}
    api = Service(name, ["cloud.cli", "serve", "--port", str(port)], log_dir, env).start()
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{base}/readyz"), 60, "cloud API", services=[api])
    return api, base


def _seed_refused_reading(buffer_path: Path, edge_id: str) -> int:
    """Commit one reading with the edge's own buffer code, then make its stored payload one
    the cloud refuses for good (a sensor value that is not a number), as if an older edge
    had committed it before the cloud tightened its rules. Returns its seq."""
    from datetime import UTC, datetime

    from edge.buffer import StoreAndForwardBuffer
    from shared.message import Reading

    buffer = StoreAndForwardBuffer(buffer_path)
    try:
        reading = Reading("A", edge_id, 0, datetime.now(UTC), {"rpm": 1500.0})
        (seq,) = buffer.append_many([reading])
    finally:
        buffer.close()
    doc = reading.to_wire()
    doc["values"] = {"rpm": "fast"}
    payload = json.dumps(doc).encode()
    conn = sqlite3.connect(buffer_path, isolation_level=None)
    try:
        conn.execute("UPDATE readings SET payload = ? WHERE seq = ?", (payload, seq))
    finally:
        conn.close()
    return int(seq)


def test_http_reading_refused_for_good_is_set_aside_and_blocks_nothing(
    tmp_path: Path, log_dir: Path, database_url: str
) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text(os.urandom(16).hex())
    api, base = _start_api(log_dir, database_url, key_file)
    record = tmp_path / "served.db"
    sim, sim_port = start_simulator(log_dir, record, ["A", "B", "C"], 2.5)
    cfg = edge_config(
        tmp_path,
        sim_port=sim_port,
        machines=["A", "B", "C"],
        poll_interval_s=0.05,
        output={
            "kind": "http",
            "url": f"{base}/api/v1/ingest",
            "api_key_file": str(key_file),
            "batch_readings": 50,
            "timeout_s": 5,
        },
    )
    edge_run = EdgeRun.of(cfg, log_dir)
    refused = _seed_refused_reading(edge_run.buffer, "edge-e2e")
    edge = start_edge(cfg, log_dir)
    try:
        # The refused reading is the oldest in the buffer: everything after it must still go.
        wait_stored_beyond(database_url, [sim, edge, api], 30, "readings behind the refused one")
        result = _finish(database_url, cfg, log_dir, record, sim, [edge, api])
    finally:
        for service in (edge, api, sim):
            service.stop()
    assert edge_run.incarnations()[0].first_seq == refused + 1
    assert set(result.rejected) == {refused}
    reason = result.rejected[refused]
    assert "422" in reason and "rpm" in reason, reason  # the cloud's answer, naming the field
    with psycopg.connect(database_url) as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM sensor_readings WHERE seq = %s", (refused,)
            ).fetchone()[0]
            == 0
        )
    assert read_buffer_facts(edge_run.buffer).rejected == {refused: reason}


# -- SIGHUP: a new output ----------------------------------------------------------------------


def test_sighup_switches_the_output_without_losing_or_repeating_a_reading(
    tmp_path: Path,
    log_dir: Path,
    database_url: str,
    pg_server: EmbeddedPostgres,
    kafka_broker: KafkaBroker,
    kafka_topic: str,
) -> None:
    """HTTP ingest into one database, then (SIGHUP with a Kafka output section) Kafka and an
    aggregator into another: the two hold every reading once between them, the old
    destination nothing committed after the switch."""
    from cloud.db.migrate import apply_migrations

    second = f"t_{uuid.uuid4().hex[:12]}"
    admin = f"postgresql://postgres@127.0.0.1:{pg_server.port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{second}"')
    second_url = f"postgresql://postgres@127.0.0.1:{pg_server.port}/{second}"
    apply_migrations(second_url)

    key_file = tmp_path / "api-key"
    key_file.write_text(os.urandom(16).hex())
    api, base = _start_api(log_dir, database_url, key_file)
    record = tmp_path / "served.db"
    sim, sim_port = start_simulator(log_dir, record, ["A", "B", "C"], 2.5)
    http_out = {
        "kind": "http",
        "url": f"{base}/api/v1/ingest",
        "api_key_file": str(key_file),
        "batch_readings": 50,
        "timeout_s": 5,
    }
    cfg = edge_config(
        tmp_path, sim_port=sim_port, machines=["A", "B", "C"], poll_interval_s=0.05, output=http_out
    )
    bootstrap = kafka_broker.bootstrap
    edge = start_edge(cfg, log_dir)
    agg = start_aggregator(log_dir, second_url, bootstrap, kafka_topic)
    try:
        wait_stored_beyond(database_url, [sim, edge, api], 20, "readings over HTTP")
        doc = yaml.safe_load(cfg.read_text())
        doc["output"] = kafka_output(bootstrap, kafka_topic)
        cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
        edge.signal(signal.SIGHUP)
        wait_log(
            edge_run_log := log_dir / "rig-edge.log", '"config reloaded"', "reload", services=[edge]
        )
        wait_health(cfg, lambda h: h["output"]["kind"] == "kafka", "the Kafka output in use")
        wait_stored_beyond(second_url, [sim, edge, agg], 30, "readings through Kafka")
        result = _finish([database_url, second_url], cfg, log_dir, record, sim, [edge, api, agg])
    finally:
        for service in (edge, api, agg, sim):
            service.stop()
    assert "config reloaded" in edge_run_log.read_text()
    before = _seqs(database_url)
    after = _seqs(second_url)
    assert before and after
    # A clean cut: what went over HTTP was committed before anything that went to Kafka.
    assert max(before) < min(after)
    assert len(before) + len(after) == result.stored
    assert len(result.incarnations) == 1  # one run of the edge: the reload kept it up
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{second}" WITH (FORCE)')


def _seqs(database_url: str) -> list[int]:
    with psycopg.connect(database_url) as conn:
        return [int(s) for (s,) in conn.execute("SELECT seq FROM sensor_readings")]
