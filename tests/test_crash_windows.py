"""Each crash window of the delivery guarantee, forced by a failpoint instead of hit by luck.

Real processes throughout: simulator (Modbus TCP) -> rig-edge -> Kafka -> rig-cloud aggregate
-> PostgreSQL. ``RIG_FAILPOINTS`` (shared/failpoints.py) makes a process SIGKILL itself at
exactly one line; the test waits for that death (exit by SIGKILL, the failpoint named in the
log), restarts the process without the failpoint, and the exactly-once checker then proves
every sample the edge could see is stored once with the values served, from the first one.
The Kafka broker itself is killed with SIGKILL mid-stream too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.pipeline import (
    EdgeRun,
    Verification,
    edge_config,
    kafka_messages,
    kafka_output,
    last_log_event,
    start_aggregator,
    start_edge,
    start_simulator,
    verify_exactly_once,
    wait_all_stored,
    wait_health,
    wait_stored_beyond,
)
from tests.support.processes import Service
from tools.kafka_broker import KafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MACHINES = ["A", "B", "C"]
SIM_RATE_HZ = 2.5
# Eight polls per sample period: a sample is missed only if a poll is >350 ms late.
POLL_INTERVAL_S = 0.05


def _finish(
    database_url: str, cfg: Path, log_dir: Path, record: Path, sim: Service, others: list[Service]
) -> Verification:
    """Stop the simulator, wait until the edge has forwarded everything it committed, stop
    the rest, and judge the delivery."""
    assert sim.stop() == 0
    wait_all_stored(database_url, cfg, others)
    for service in others:
        service.stop()
    return verify_exactly_once(database_url, record, edge=EdgeRun.of(cfg, log_dir))


def _stop_all(*services: Service) -> None:
    for service in services:
        service.stop()


def test_edge_killed_right_after_its_buffer_commit(
    tmp_path: Path, log_dir: Path, database_url: str, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    """Readings committed to SQLite, nothing after that line ran: the next run finds them,
    forwards them, and numbers on from the next sequence number."""
    bootstrap = kafka_broker.bootstrap
    record = tmp_path / "served.db"
    sim, sim_port = start_simulator(log_dir, record, MACHINES, SIM_RATE_HZ)
    cfg = edge_config(
        tmp_path,
        sim_port=sim_port,
        machines=MACHINES,
        poll_interval_s=POLL_INTERVAL_S,
        output=kafka_output(bootstrap, kafka_topic),
    )
    edge = start_edge(cfg, log_dir, failpoints="edge.buffer.after_commit=30")
    agg = start_aggregator(log_dir, database_url, bootstrap, kafka_topic)
    try:
        edge.wait_failpoint("edge.buffer.after_commit", timeout=90)
        edge = start_edge(cfg, log_dir)
        wait_stored_beyond(database_url, [sim, edge, agg], 30, "readings after the restart")
        result = _finish(database_url, cfg, log_dir, record, sim, [edge, agg])
    finally:
        _stop_all(edge, agg, sim)
    runs = result.incarnations
    assert [r.end for r in runs] == ["failpoint edge.buffer.after_commit", "stopped"]
    print(f"stored {result.stored}; buffered at restart {runs[1].buffered_at_start}")


def test_edge_killed_after_kafka_confirmed_before_the_buffer_delete(
    tmp_path: Path, log_dir: Path, database_url: str, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    """Kafka has the batch, the edge died before deleting it: the next run sends it again
    (the topic holds those sequence numbers twice) and PostgreSQL stores each once."""
    bootstrap = kafka_broker.bootstrap
    record = tmp_path / "served.db"
    sim, sim_port = start_simulator(log_dir, record, MACHINES, SIM_RATE_HZ)
    cfg = edge_config(
        tmp_path,
        sim_port=sim_port,
        machines=MACHINES,
        poll_interval_s=POLL_INTERVAL_S,
        output=kafka_output(bootstrap, kafka_topic),
    )
    edge = start_edge(cfg, log_dir, failpoints="edge.forwarder.after_send=20")
    agg = start_aggregator(log_dir, database_url, bootstrap, kafka_topic)
    try:
        edge.wait_failpoint("edge.forwarder.after_send", timeout=90)
        edge = start_edge(cfg, log_dir)
        wait_stored_beyond(database_url, [sim, edge, agg], 30, "readings after the restart")
        result = _finish(database_url, cfg, log_dir, record, sim, [edge, agg])
    finally:
        _stop_all(edge, agg, sim)
    runs = result.incarnations
    assert runs[0].end == "failpoint edge.forwarder.after_send"
    # The confirmed batch was still in the buffer when the edge came back ...
    assert runs[1].buffered_at_start >= 1
    # ... and went to Kafka a second time: the window was really crossed.
    seqs = [m["seq"] for m in kafka_messages(bootstrap, kafka_topic) if m["edge_id"] == "edge-e2e"]
    resent = {s for s in seqs if seqs.count(s) > 1}
    assert resent, "no reading reached Kafka twice: the kill did not fall in the window"
    assert len(seqs) == result.stored + sum(seqs.count(s) - 1 for s in resent)


def test_aggregator_killed_after_the_database_commit_before_the_offset_commit(
    tmp_path: Path, log_dir: Path, database_url: str, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    """Rows committed to PostgreSQL, offsets not committed: the next aggregator reads the
    batch again and the (edge_id, seq) key drops every row of it."""
    bootstrap = kafka_broker.bootstrap
    record = tmp_path / "served.db"
    sim, sim_port = start_simulator(log_dir, record, MACHINES, SIM_RATE_HZ)
    cfg = edge_config(
        tmp_path,
        sim_port=sim_port,
        machines=MACHINES,
        poll_interval_s=POLL_INTERVAL_S,
        output=kafka_output(bootstrap, kafka_topic),
    )
    edge = start_edge(cfg, log_dir)
    agg = start_aggregator(
        log_dir,
        database_url,
        bootstrap,
        kafka_topic,
        failpoints="cloud.aggregator.after_db_commit=10",
    )
    try:
        agg.wait_failpoint("cloud.aggregator.after_db_commit", timeout=90)
        agg = start_aggregator(log_dir, database_url, bootstrap, kafka_topic)
        wait_stored_beyond(database_url, [sim, edge, agg], 30, "readings after the restart")
        result = _finish(database_url, cfg, log_dir, record, sim, [edge, agg])
    finally:
        _stop_all(edge, agg, sim)
    # The restarted aggregator met the rows its predecessor had committed: the window was
    # crossed, and the key kept them single.
    stopped = last_log_event(log_dir / "aggregator.log", "aggregator stopped")
    assert stopped["duplicates"] >= 1, stopped
    assert result.stored > 0


def test_kafka_broker_killed_with_sigkill_mid_stream(
    tmp_path: Path, log_dir: Path, database_url: str
) -> None:
    """kill -9 of the broker: the edge keeps everything buffered while it is gone and both
    the edge and the aggregator carry on by themselves once it is back."""
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
        broker.kill()  # SIGKILL: no controlled shutdown, no final flush
        down = wait_health(
            cfg,
            lambda h: h["output"]["healthy"] is False and h["buffer"]["depth"] > 0,
            "the edge to see the broker gone and keep readings buffered",
            services=[sim, edge, agg],
        )
        broker.start()  # same port, same log directory, after an unclean stop
        wait_health(
            cfg,
            lambda h: h["output"]["healthy"] is True,
            "the edge to reach the broker again",
            services=[sim, edge, agg],
        )
        wait_stored_beyond(database_url, [sim, edge, agg], 60, "readings after the broker returned")
        result = _finish(database_url, cfg, log_dir, record, sim, [edge, agg])
    finally:
        _stop_all(edge, agg, sim)
        broker.stop()
    assert down["buffer"]["depth"] > 0
    runs = result.incarnations
    assert len(runs) == 1  # the edge never restarted: it rode the outage out
    assert all(result.runs[m] == [result.runs[m][0]] for m in MACHINES)


def test_ingest_api_killed_after_the_broker_confirmed_then_retried_stores_each_reading_once(
    log_dir: Path, database_url: str, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    """The broker confirmed an integrator's batch but the API died before answering: the
    client saw a broken connection and retries with the same Idempotency-Key. The retry
    reuses the seq/ts the first attempt was given, so the second copies in Kafka are
    duplicates by key and PostgreSQL holds each reading once."""
    import httpx
    import orjson
    import psycopg

    from tests.support.processes import free_port, http_ok, wait_until

    bootstrap = kafka_broker.bootstrap
    key = "crash-window-bootstrap-key-0123456789abcdef"
    port = free_port()
    env = {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC": kafka_topic,
        "RIG_INGEST_API_KEY": key,
    }
    serve = ["cloud.cli", "serve", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    # Integrator shape without seq/ts: only the Idempotency-Key makes the retry safe.
    body = orjson.dumps([{"machine_id": "A", "temperature": 60.0 + i} for i in range(20)])
    headers = {
        "X-API-KEY": key,
        "Idempotency-Key": "batch-0001",
        "Content-Type": "application/json",
    }
    api = Service("api", serve, log_dir, {**env, "RIG_FAILPOINTS": "cloud.ingest.after_produce"})
    api.start()
    agg = start_aggregator(log_dir, database_url, bootstrap, kafka_topic)
    services = [api, agg]
    try:
        wait_until(lambda: http_ok(f"{base}/healthz"), 60, "the API", services=services)
        with pytest.raises(httpx.TransportError):
            httpx.post(f"{base}/api/v1/ingest", content=body, headers=headers, timeout=30)
        api.wait_failpoint("cloud.ingest.after_produce")

        api = Service("api-restarted", serve, log_dir, env).start()
        services = [api, agg]
        wait_until(lambda: http_ok(f"{base}/healthz"), 60, "the restarted API", services=services)
        retry = httpx.post(f"{base}/api/v1/ingest", content=body, headers=headers, timeout=30)
        assert retry.status_code == 200, retry.text
        # A later reading of the same machine goes to the same partition (key = machine):
        # once it is stored, both copies of the batch have been consumed.
        sentinel = orjson.dumps({"machine_id": "A", "temperature": 99.5})
        answer = httpx.post(
            f"{base}/api/v1/ingest",
            content=sentinel,
            headers={"X-API-KEY": key, "Content-Type": "application/json"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text

        def rows() -> list[tuple[str, int, float]]:
            with psycopg.connect(database_url) as conn:
                return conn.execute(
                    "SELECT edge_id, seq, temperature FROM sensor_readings ORDER BY temperature"
                ).fetchall()

        wait_until(lambda: any(r[2] == 99.5 for r in rows()), 60, "the sentinel", services=services)
        stored = [r for r in rows() if r[2] != 99.5]
        assert [r[2] for r in stored] == [60.0 + i for i in range(20)]
        assert len({(r[0], r[1]) for r in stored}) == 20
        in_topic = [m for m in kafka_messages(bootstrap, kafka_topic) if m["values"]]
        assert len(in_topic) == 41, "both copies of the batch (and the sentinel) reached Kafka"
    finally:
        _stop_all(*services)
