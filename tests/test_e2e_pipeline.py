"""End to end on real services: simulator (Modbus TCP) -> edge -> Kafka -> aggregator ->
PostgreSQL, and simulator -> edge -> HTTP ingest -> PostgreSQL, with the processes killed
and restarted mid-stream. Every reading the simulator served and the edge committed must be
stored exactly once."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.support.pipeline import (
    edge_config,
    edge_health,
    start_simulator,
    stored_count,
    verify_exactly_once,
    wait_all_stored,
)
from tests.support.processes import Service, free_port, http_ok, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MACHINES = ["A", "B", "C"]
SIM_RATE_HZ = 2.5
# Polling eight times per sample period: a sample is missed only if a poll is >350 ms late,
# which keeps these checks stable on a loaded 2-core CI machine.
POLL_INTERVAL_S = 0.05


def _grow(database_url: str, services: list[Service], by: int, what: str) -> None:
    start = stored_count(database_url)
    wait_until(lambda: stored_count(database_url) >= start + by, 60, what, services=services)


def test_kafka_path_survives_edge_and_aggregator_kills(
    tmp_path: Path, log_dir: Path, database_url: str, kafka_broker: object, kafka_topic: str
) -> None:
    record = tmp_path / "served.db"
    sim, sim_port = start_simulator(log_dir, record, MACHINES, SIM_RATE_HZ)
    bootstrap = kafka_broker.bootstrap  # type: ignore[attr-defined]
    cfg = edge_config(
        tmp_path,
        sim_port=sim_port,
        machines=MACHINES,
        poll_interval_s=POLL_INTERVAL_S,
        output={
            "kind": "kafka",
            "bootstrap_servers": bootstrap,
            "topic": kafka_topic,
            "linger_ms": 5,
            "message_timeout_ms": 10_000,
        },
    )
    env = {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC": kafka_topic,
        "KAFKA_CONSUMER_GROUP": f"g-{kafka_topic}",
    }
    edge = Service("rig-edge", ["edge.cli", "run", "-c", str(cfg)], log_dir).start()
    agg = Service("aggregator", ["cloud.cli", "aggregate"], log_dir, env).start()
    everyone = [sim, edge, agg]
    try:
        _grow(database_url, everyone, 30, "first readings in PostgreSQL")

        edge.kill()  # SIGKILL mid-stream: no shutdown code runs
        time.sleep(1.0)
        edge = Service("rig-edge", ["edge.cli", "run", "-c", str(cfg)], log_dir).start()
        everyone[1] = edge
        _grow(database_url, everyone, 30, "readings after the edge restart")

        agg.kill()  # the consumer dies between database commit and offset commit, or not
        time.sleep(2.0)  # readings pile up in Kafka meanwhile
        agg = Service("aggregator", ["cloud.cli", "aggregate"], log_dir, env).start()
        everyone[2] = agg
        _grow(database_url, everyone, 30, "readings after the aggregator restart")

        agg.stop()  # and a clean stop/start
        time.sleep(1.0)
        agg = Service("aggregator", ["cloud.cli", "aggregate"], log_dir, env).start()
        everyone[2] = agg
        _grow(database_url, everyone, 15, "readings after the aggregator stop/start")

        assert sim.stop() == 0
        wait_all_stored(database_url, cfg, [edge, agg])
    finally:
        for service in (edge, agg, sim):
            service.stop()

    result = verify_exactly_once(database_url, record, "edge-e2e", max_runs=2)
    print(f"stored {result.stored}; runs per machine {result.runs}")
    assert result.stored >= 60
    assert set(result.per_machine) == set(MACHINES)


def test_http_path_survives_edge_kill_and_cloud_outage(
    tmp_path: Path, log_dir: Path, database_url: str
) -> None:
    record = tmp_path / "served.db"
    sim, sim_port = start_simulator(log_dir, record, MACHINES, SIM_RATE_HZ)
    api_port = free_port()
    key_file = tmp_path / "api-key"
    key_file.write_text(os.urandom(16).hex())
    env = {"DATABASE_URL": database_url, "RIG_INGEST_API_KEY_FILE": str(key_file)}
    cloud_args = ["cloud.cli", "serve", "--port", str(api_port)]
    cloud = Service("cloud", cloud_args, log_dir, env).start()
    wait_until(
        lambda: http_ok(f"http://127.0.0.1:{api_port}/readyz"), 60, "cloud API", services=[cloud]
    )
    cfg = edge_config(
        tmp_path,
        sim_port=sim_port,
        machines=MACHINES,
        poll_interval_s=POLL_INTERVAL_S,
        output={
            "kind": "http",
            "url": f"http://127.0.0.1:{api_port}/api/v1/ingest",
            "api_key_file": str(key_file),
            "batch_readings": 200,
            "timeout_s": 5,
        },
    )
    edge = Service("rig-edge", ["edge.cli", "run", "-c", str(cfg)], log_dir).start()
    try:
        _grow(database_url, [sim, edge, cloud], 30, "first readings over HTTP")

        edge.kill()
        time.sleep(1.0)
        edge = Service("rig-edge", ["edge.cli", "run", "-c", str(cfg)], log_dir).start()
        _grow(database_url, [sim, edge, cloud], 30, "readings after the edge restart")

        cloud.kill()  # the cloud disappears; the edge keeps collecting into its buffer
        time.sleep(3.0)
        health = edge_health(cfg)
        assert health is not None and health["buffer"]["depth"] > 0
        cloud = Service("cloud", cloud_args, log_dir, env).start()
        _grow(database_url, [sim, edge, cloud], 30, "readings after the cloud came back")

        assert sim.stop() == 0
        wait_all_stored(database_url, cfg, [edge, cloud])
    finally:
        for service in (edge, cloud, sim):
            service.stop()

    result = verify_exactly_once(database_url, record, "edge-e2e", max_runs=2)
    print(f"stored {result.stored}; runs per machine {result.runs}")
    assert result.stored >= 60


def test_kafka_broker_stop_and_start_loses_and_duplicates_nothing(
    tmp_path: Path, log_dir: Path, database_url: str
) -> None:
    from tools.kafka_broker import KafkaBroker

    broker = KafkaBroker(tmp_path / "kafka", log_file=log_dir / "kafka.log")
    bootstrap = broker.start()
    broker.create_topic("sensor-data", partitions=3)
    record = tmp_path / "served.db"
    sim, sim_port = start_simulator(log_dir, record, MACHINES, SIM_RATE_HZ)
    cfg = edge_config(
        tmp_path,
        sim_port=sim_port,
        machines=MACHINES,
        poll_interval_s=POLL_INTERVAL_S,
        output={
            "kind": "kafka",
            "bootstrap_servers": bootstrap,
            "topic": "sensor-data",
            "linger_ms": 5,
            "message_timeout_ms": 5_000,
        },
    )
    env = {"DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    edge = Service("rig-edge", ["edge.cli", "run", "-c", str(cfg)], log_dir).start()
    agg = Service("aggregator", ["cloud.cli", "aggregate"], log_dir, env).start()
    try:
        _grow(database_url, [sim, edge, agg], 30, "first readings")
        broker.stop()  # the broker goes away; the edge keeps buffering
        time.sleep(6.0)
        health = edge_health(cfg)
        assert health is not None and health["buffer"]["depth"] > 0
        assert health["output"]["healthy"] is False
        broker.start()  # same port, same log directory
        _grow(database_url, [sim, edge, agg], 60, "readings after the broker came back")
        assert sim.stop() == 0
        wait_all_stored(database_url, cfg, [edge, agg])
    finally:
        for service in (edge, agg, sim):
            service.stop()
        broker.stop()
    result = verify_exactly_once(database_url, record, "edge-e2e", max_runs=1)
    assert result.stored >= 60
