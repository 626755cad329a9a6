"""End to end on real services: simulator (Modbus TCP) -> edge -> Kafka -> aggregator ->
PostgreSQL, and simulator -> edge -> HTTP ingest -> PostgreSQL, with the processes killed
from outside at arbitrary moments and the broker stopped and restarted. Every sample the
edge could see must be stored exactly once, from the first one on (the exactly-once
checker in tests/support/pipeline.py). The exact crash windows are forced one by one with
failpoints in tests/test_crash_windows.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.pipeline import (
    EdgeRun,
    Verification,
    edge_config,
    kafka_output,
    start_aggregator,
    start_edge,
    start_simulator,
    topic_size,
    verify_exactly_once,
    wait_all_stored,
    wait_health,
    wait_stored_beyond,
)
from tests.support.processes import Service, free_port, http_ok, wait_until
from tools.kafka_broker import KafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MACHINES = ["A", "B", "C"]
SIM_RATE_HZ = 2.5
# Polling eight times per sample period: a sample is missed only if a poll is >350 ms late,
# which keeps these checks stable on a loaded 2-core CI machine.
POLL_INTERVAL_S = 0.05


def _finish(
    database_url: str, cfg: Path, log_dir: Path, record: Path, sim: Service, others: list[Service]
) -> Verification:
    assert sim.stop() == 0
    wait_all_stored(database_url, cfg, others)
    for service in others:
        service.stop()
    return verify_exactly_once(database_url, record, edge=EdgeRun.of(cfg, log_dir))


def test_kafka_path_survives_edge_and_aggregator_kills(
    tmp_path: Path, log_dir: Path, database_url: str, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    record = tmp_path / "served.db"
    sim, sim_port = start_simulator(log_dir, record, MACHINES, SIM_RATE_HZ)
    bootstrap = kafka_broker.bootstrap
    cfg = edge_config(
        tmp_path,
        sim_port=sim_port,
        machines=MACHINES,
        poll_interval_s=POLL_INTERVAL_S,
        output=kafka_output(bootstrap, kafka_topic),
    )
    edge = start_edge(cfg, log_dir)
    agg = start_aggregator(log_dir, database_url, bootstrap, kafka_topic)
    everyone = [sim, edge, agg]
    try:
        wait_stored_beyond(database_url, everyone, 30, "first readings in PostgreSQL")

        edge.kill()  # SIGKILL mid-stream, wherever the edge happens to be
        edge = start_edge(cfg, log_dir)
        everyone[1] = edge
        wait_stored_beyond(database_url, everyone, 30, "readings after the edge restart")

        agg.kill()  # SIGKILL, wherever the aggregator happens to be
        # Readings pile up in Kafka while no aggregator runs.
        piled = topic_size(bootstrap, kafka_topic)
        wait_until(
            lambda: topic_size(bootstrap, kafka_topic) >= piled + 10,
            60,
            "readings produced while the aggregator is dead",
            services=[sim, edge],
        )
        agg = start_aggregator(log_dir, database_url, bootstrap, kafka_topic)
        everyone[2] = agg
        wait_stored_beyond(database_url, everyone, 30, "readings after the aggregator restart")

        assert agg.stop() == 0  # and a clean stop/start
        agg = start_aggregator(log_dir, database_url, bootstrap, kafka_topic)
        everyone[2] = agg
        wait_stored_beyond(database_url, everyone, 15, "readings after the aggregator stop/start")

        result = _finish(database_url, cfg, log_dir, record, sim, [edge, agg])
    finally:
        for service in (edge, agg, sim):
            service.stop()

    print(f"stored {result.stored}; runs per machine {result.runs}; unseen {result.unseen}")
    assert [r.end for r in result.incarnations] == ["SIGKILL", "stopped"]
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
    edge = start_edge(cfg, log_dir)
    try:
        wait_stored_beyond(database_url, [sim, edge, cloud], 30, "first readings over HTTP")

        edge.kill()
        edge = start_edge(cfg, log_dir)
        wait_stored_beyond(database_url, [sim, edge, cloud], 30, "readings after the edge restart")

        cloud.kill()  # the cloud disappears; the edge keeps collecting into its buffer
        wait_health(
            cfg,
            lambda h: h["output"]["healthy"] is False and h["buffer"]["depth"] > 10,
            "the edge to buffer while the cloud is gone",
            services=[sim, edge],
        )
        cloud = Service("cloud", cloud_args, log_dir, env).start()
        wait_stored_beyond(
            database_url, [sim, edge, cloud], 30, "readings after the cloud came back"
        )
        result = _finish(database_url, cfg, log_dir, record, sim, [edge, cloud])
    finally:
        for service in (edge, cloud, sim):
            service.stop()

    print(f"stored {result.stored}; runs per machine {result.runs}; unseen {result.unseen}")
    assert [r.end for r in result.incarnations] == ["SIGKILL", "stopped"]
    assert set(result.per_machine) == set(MACHINES)


def test_kafka_broker_stop_and_start_loses_and_duplicates_nothing(
    tmp_path: Path, log_dir: Path, database_url: str
) -> None:
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
        output=kafka_output(bootstrap, "sensor-data", message_timeout_ms=5_000),
    )
    edge = start_edge(cfg, log_dir)
    agg = start_aggregator(log_dir, database_url, bootstrap, "sensor-data")
    try:
        wait_stored_beyond(database_url, [sim, edge, agg], 30, "first readings")
        broker.stop()  # the broker shuts down cleanly; the edge keeps buffering
        # A send fails only once message_timeout_ms has passed: wait for that, not a time.
        wait_health(
            cfg,
            lambda h: h["output"]["healthy"] is False and h["buffer"]["depth"] > 0,
            "the edge to see the broker gone and keep readings buffered",
            services=[sim, edge],
        )
        broker.start()  # same port, same log directory
        wait_stored_beyond(database_url, [sim, edge, agg], 60, "readings after the broker returned")
        result = _finish(database_url, cfg, log_dir, record, sim, [edge, agg])
    finally:
        for service in (edge, agg, sim):
            service.stop()
        broker.stop()
    assert len(result.incarnations) == 1  # the edge rode the outage out
    assert all(len(runs) == 1 for runs in result.runs.values()), result.runs
