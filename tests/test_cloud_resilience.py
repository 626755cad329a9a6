"""The cloud under failure, on real services: PostgreSQL stopped and restarted mid-stream,
and one of three aggregators (three partitions, one consumer group) killed mid-run."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from cloud.db.embedded import EmbeddedPostgres
from cloud.db.migrate import apply_migrations
from tests.support.accounts import admin_token, bearer
from tests.support.pipeline import (
    EdgeRun,
    edge_config,
    kafka_output,
    start_edge,
    start_simulator,
    stored_count,
    topic_size,
    verify_exactly_once,
    wait_all_stored,
)
from tests.support.processes import Service, free_port, http_ok, wait_until
from tools.kafka_broker import KafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MACHINES = ["A", "B", "C"]


def _ok(url: str, headers: dict[str, str]) -> bool:
    return _status(url, headers) == 200


def _status(url: str, headers: dict[str, str]) -> int | None:
    try:
        return httpx.get(url, headers=headers, timeout=10).status_code
    except httpx.HTTPError:
        return None


def test_postgres_restart_mid_stream_loses_nothing(
    tmp_path: Path, log_dir: Path, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg")
    url = pg.start()
    apply_migrations(url)
    record = tmp_path / "served.db"
    # Each sample stays on show 400 ms: an edge held up for less than that by a loaded
    # machine still reads every one (the checker requires them all).
    sim, sim_port = start_simulator(log_dir, record, MACHINES, 2.5)
    bootstrap = kafka_broker.bootstrap
    cfg = edge_config(
        tmp_path,
        sim_port=sim_port,
        machines=MACHINES,
        poll_interval_s=0.05,
        output=kafka_output(bootstrap, kafka_topic),
    )
    env = {
        "DATABASE_URL": url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC": kafka_topic,
        "KAFKA_CONSUMER_GROUP": f"g-{kafka_topic}",
        "RIG_INGEST_API_KEY": "k" * 32,
    }
    api_port = free_port()
    edge = start_edge(cfg, log_dir)
    agg = Service("aggregator", ["cloud.cli", "aggregate"], log_dir, env).start()
    api = Service("api", ["cloud.cli", "serve", "--port", str(api_port)], log_dir, env).start()
    services = [sim, edge, agg, api]
    try:
        wait_until(lambda: stored_count(url) > 30, 60, "first rows", services=services)
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{api_port}/readyz"),
            30,
            "api ready",
            services=services,
        )
        base = f"http://127.0.0.1:{api_port}"
        auth = bearer(admin_token(base, url))
        pg.stop("immediate")  # the database goes away mid-stream
        # /api/stats may answer from its half-second snapshot once more, then says 503.
        wait_until(
            lambda: _status(f"{base}/api/stats", auth) == 503,
            30,
            "stats to say 503",
            services=services,
        )
        stats = httpx.get(f"{base}/api/stats", headers=auth, timeout=10)
        assert stats.status_code == 503 and stats.headers["Retry-After"]
        ready = httpx.get(f"http://127.0.0.1:{api_port}/readyz", timeout=10)
        assert ready.status_code == 503
        # Readings pile up in Kafka while the aggregator retries against no database.
        piled = topic_size(bootstrap, kafka_topic)
        wait_until(
            lambda: topic_size(bootstrap, kafka_topic) >= piled + 20,
            60,
            "readings produced while the database is down",
            services=services,
        )
        pg.start()
        wait_until(
            lambda: _ok(f"{base}/api/stats", auth),
            60,
            "the API to recover by itself",
            services=services,
        )
        before = stored_count(url)
        wait_until(
            lambda: stored_count(url) > before + 60,
            90,
            "the aggregator to catch up by itself",
            services=services,
        )
        assert sim.stop() == 0
        wait_all_stored(url, cfg, [edge, agg])
        edge.stop()
        result = verify_exactly_once(url, record, edge=EdgeRun.of(cfg, log_dir))
    finally:
        for service in (api, edge, agg, sim):
            service.stop()
        pg.stop()
    # One run of the edge and nothing missing between its first and last sample: the outage
    # cost no reading.
    assert len(result.incarnations) == 1
    assert all(len(runs) == 1 for runs in result.runs.values()), result.runs


def test_one_of_three_aggregators_killed_mid_run(
    tmp_path: Path, log_dir: Path, database_url: str, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    record = tmp_path / "served.db"
    sim, sim_port = start_simulator(log_dir, record, MACHINES, 2.5)
    bootstrap = kafka_broker.bootstrap
    cfg = edge_config(
        tmp_path,
        sim_port=sim_port,
        machines=MACHINES,
        poll_interval_s=0.03,
        output=kafka_output(bootstrap, kafka_topic),
    )
    env = {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC": kafka_topic,
        "KAFKA_CONSUMER_GROUP": f"g-{kafka_topic}",
    }
    aggs = [
        Service(
            f"aggregator-{i}", ["cloud.cli", "aggregate", "--batch-size", "20"], log_dir, env
        ).start()
        for i in range(3)
    ]
    edge = start_edge(cfg, log_dir)
    try:
        wait_until(
            lambda: stored_count(database_url) > 60, 60, "first rows", services=[sim, edge, *aggs]
        )
        aggs[1].kill()  # its partitions move to the survivors after the session timeout
        before = stored_count(database_url)
        wait_until(
            lambda: stored_count(database_url) > before + 150,
            90,
            "the group to carry on",
            services=[sim, edge, aggs[0], aggs[2]],
        )
        assert sim.stop() == 0
        wait_all_stored(database_url, cfg, [edge, aggs[0], aggs[2]])
        edge.stop()
        result = verify_exactly_once(database_url, record, edge=EdgeRun.of(cfg, log_dir))
    finally:
        for service in (edge, *aggs, sim):
            service.stop()
    assert len(result.incarnations) == 1
    assert all(len(runs) == 1 for runs in result.runs.values()), result.runs
    # The survivors took the dead one's partitions over (everything is stored) and were still
    # healthy enough to stop cleanly.
    for survivor in (aggs[0], aggs[2]):
        assert survivor.proc is not None and survivor.proc.returncode == 0
