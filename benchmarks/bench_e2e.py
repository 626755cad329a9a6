"""End-to-end benchmark: edge -> Kafka -> aggregator -> PostgreSQL, real processes.

1. Throughput: an edge buffer pre-filled with a backlog of 50-sensor readings is drained by a
   real ``rig-edge`` through a real Kafka broker into PostgreSQL by a real ``rig-cloud
   aggregate``; ``readings_per_s`` = backlog / time until the last row is committed.
2. Latency: the simulator serves live samples; ``latency_p50_ms``/``latency_p95_ms`` are the
   time from a sample's timestamp (set by the simulator when it produced the sample) to the
   commit of its row (``created_at``), so they include polling, buffering, Kafka and storage.

Prints progress on stderr and one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psutil
import psycopg

from cloud.db.embedded import EmbeddedPostgres
from cloud.db.migrate import apply_migrations
from edge.buffer import StoreAndForwardBuffer
from shared.catalog import CORE_SENSORS
from shared.message import Reading
from tests.support.pipeline import edge_config, start_simulator, stored_count
from tests.support.processes import Service, wait_until
from tools.kafka_broker import KafkaBroker


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _fill_backlog(path: Path, count: int, machines: list[str]) -> None:
    rng = np.random.default_rng(1)
    typical = np.array([s.typical for s in CORE_SENSORS])
    names = [s.name for s in CORE_SENSORS]
    buffer = StoreAndForwardBuffer(path, synchronous="NORMAL")
    now = datetime.now(UTC)
    batch: list[Reading] = []
    for i in range(count):
        values = typical * (1 + 0.01 * rng.standard_normal(len(typical)))
        batch.append(
            Reading(
                machines[i % len(machines)],
                "bench-edge",
                0,
                now,
                dict(zip(names, values.tolist(), strict=True)),
            )
        )
        if len(batch) == 5000:
            buffer.append_many(batch)
            batch = []
    buffer.append_many(batch)
    buffer.close()


def _process_cpu(services: list[Service]) -> dict[str, float]:
    out = {}
    for service in services:
        if service.proc is not None and service.running:
            times = psutil.Process(service.proc.pid).cpu_times()
            out[service.name] = times.user + times.system
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backlog", type=int, default=200_000)
    parser.add_argument("--live-seconds", type=float, default=20.0)
    parser.add_argument("--live-machines", type=int, default=10)
    parser.add_argument("--live-rate", type=float, default=10.0)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    logs = work / "logs"
    logs.mkdir()
    pg = EmbeddedPostgres(work / "pg")
    broker = KafkaBroker(work / "kafka", log_file=logs / "kafka.log")
    services: list[Service] = []
    result: dict[str, object] = {}
    try:
        _say("starting PostgreSQL and Kafka …")
        pg.start()
        bootstrap = broker.start()
        database_url = pg.url
        apply_migrations(database_url)
        topic = f"bench-{uuid.uuid4().hex[:6]}"
        broker.create_topic(topic, partitions=3)

        machines = [f"M{i:02d}" for i in range(1, args.live_machines + 1)]
        record = work / "served.db"
        sim, sim_port = start_simulator(logs, record, machines[:3], 1.0)
        services.append(sim)

        # --- throughput: drain a backlog ------------------------------------------------
        _say(f"filling an edge buffer with {args.backlog} readings …")
        cfg = edge_config(
            work,
            sim_port=sim_port,
            machines=machines[:3],
            poll_interval_s=1.0,
            edge_id="bench-edge",
            output={
                "kind": "kafka",
                "bootstrap_servers": bootstrap,
                "topic": topic,
                "linger_ms": 20,
            },
        )
        _fill_backlog(work / "bench-edge-buffer.db", args.backlog, machines)
        env = {
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPIC": topic,
            "KAFKA_CONSUMER_GROUP": f"bench-{topic}",
        }
        agg = Service(
            "aggregator",
            ["cloud.cli", "--log-level", "WARNING", "aggregate", "--batch-size", "5000"],
            logs,
            env,
        ).start()
        services.append(agg)
        time.sleep(2.0)  # consumer joins the group
        started = time.perf_counter()
        edge = Service(
            "rig-edge", ["edge.cli", "run", "-c", str(cfg), "--log-level", "WARNING"], logs
        ).start()
        services.append(edge)
        wait_until(
            lambda: stored_count(database_url) >= args.backlog,
            600,
            "the backlog in PostgreSQL",
            interval=0.25,
            services=services,
        )
        elapsed = time.perf_counter() - started
        cpu = _process_cpu([edge, agg])
        result["readings_per_s"] = round(args.backlog / elapsed)
        result["backlog_readings"] = args.backlog
        result["backlog_seconds"] = round(elapsed, 2)
        result["cpu_seconds"] = {k: round(v, 1) for k, v in cpu.items()}
        _say(f"drained {args.backlog} readings in {elapsed:.1f} s")
        edge.stop()
        sim.stop()

        # --- latency: live samples ------------------------------------------------------
        _say(f"live: {len(machines)} machines at {args.live_rate} Hz for {args.live_seconds} s …")
        sim2, sim2_port = start_simulator(logs, work / "served-live.db", machines, args.live_rate)
        services.append(sim2)
        cfg2 = edge_config(
            work,
            sim_port=sim2_port,
            machines=machines,
            poll_interval_s=min(0.05, 0.5 / args.live_rate),
            edge_id="bench-live",
            output={
                "kind": "kafka",
                "bootstrap_servers": bootstrap,
                "topic": topic,
                "linger_ms": 1,
            },
        )
        edge2 = Service(
            "rig-edge-live", ["edge.cli", "run", "-c", str(cfg2), "--log-level", "WARNING"], logs
        ).start()
        services.append(edge2)
        time.sleep(3.0)  # warm-up: imports, connections
        since = datetime.now(UTC)
        time.sleep(args.live_seconds)
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT count(*),"
                " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM created_at -"
                '   "timestamp")),'
                " percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM created_at -"
                '   "timestamp")),'
                ' max(extract(epoch FROM created_at - "timestamp"))'
                " FROM sensor_readings WHERE edge_id = 'bench-live' AND \"timestamp\" >= %s",
                (since,),
            ).fetchone()
        assert row is not None and row[0] > 0, "no live readings arrived"
        result["live_readings"] = int(row[0])
        result["live_readings_per_s"] = round(int(row[0]) / args.live_seconds, 1)
        result["latency_p50_ms"] = round(float(row[1]) * 1000, 1)
        result["latency_p95_ms"] = round(float(row[2]) * 1000, 1)
        result["latency_max_ms"] = round(float(row[3]) * 1000, 1)
        result["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    finally:
        for service in reversed(services):
            service.stop()
        broker.stop()
        pg.stop("immediate")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
