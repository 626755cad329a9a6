"""Cloud benchmark on real services (Kafka broker, embedded PostgreSQL, real processes).
Prints progress on stderr and one JSON object on the last line of stdout:

- ingest_readings_per_s: 50-sensor readings already in Kafka, consumed by --aggregators
  `rig-cloud aggregate` processes (one group) into PostgreSQL, until all are stored;
- copy_ceiling_per_s: a plain binary COPY of the same rows into the same table, same run;
  ingest_vs_copy is the ratio;
- stats_p50_ms / stats_p99_ms: GET /api/stats at --rps requests/s for --seconds;
- history_p95_ms: one sensor over --history-days days of 1 Hz data for one machine,
  downsampled to 1,000 points, through GET /api/v1/machines/{id}/history.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import psycopg
from confluent_kafka import Producer
from psycopg.types.json import Jsonb

from cloud.db.embedded import EmbeddedPostgres
from cloud.db.migrate import apply_migrations
from cloud.db.partitions import maintain_partitions
from cloud.storage import rebuild_minute_rollups
from shared.catalog import CORE_SENSOR_NAMES, CORE_SENSORS
from shared.message import Reading, encode_reading
from tests.support.accounts import admin_token, bearer
from tests.support.pipeline import stored_count
from tests.support.processes import Service, free_port, http_ok, wait_until
from tools.kafka_broker import KafkaBroker

TYPICAL = np.array([s.typical for s in CORE_SENSORS])


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _readings(count: int, edge: str) -> list[Reading]:
    rng = np.random.default_rng(3)
    now = datetime.now(UTC)
    noise = 1 + 0.01 * rng.standard_normal((count, len(TYPICAL)))
    return [
        Reading(
            f"M{i % 30:02d}",
            edge,
            i + 1,
            now - timedelta(milliseconds=count - i),
            dict(zip(CORE_SENSOR_NAMES, (TYPICAL * noise[i]).tolist(), strict=True)),
        )
        for i in range(count)
    ]


def bench_ingest(
    work: Path,
    logs: Path,
    url: str,
    bootstrap: str,
    broker: KafkaBroker,
    count: int,
    aggregators: int,
) -> dict[str, float]:
    topic = f"bench-{uuid.uuid4().hex[:6]}"
    broker.create_topic(topic, partitions=6)
    _say(f"producing {count} readings to Kafka …")
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "compression.type": "lz4",
            "enable.idempotence": True,
        }
    )
    for reading in _readings(count, "bench-ingest"):
        while True:
            try:
                producer.produce(topic, encode_reading(reading), reading.machine_id.encode())
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(60)
    env = {
        "DATABASE_URL": url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_CONSUMER_GROUP": f"g-{topic}",
    }
    before = stored_count(url)
    started = time.perf_counter()
    services = [
        Service(
            f"aggregator-{i}",
            ["cloud.cli", "--log-level", "WARNING", "aggregate", "--batch-size", "5000"],
            logs,
            env,
        ).start()
        for i in range(aggregators)
    ]
    try:
        wait_until(
            lambda: stored_count(url) >= before + count,
            900,
            "all readings stored",
            interval=0.25,
            services=services,
        )
        elapsed = time.perf_counter() - started
    finally:
        for service in services:
            service.stop()
    return {
        "ingest_readings_per_s": round(count / elapsed),
        "ingest_seconds": round(elapsed, 1),
        "aggregators": aggregators,
        "partitions": 6,
    }


def bench_copy(url: str, count: int) -> dict[str, float]:
    readings = _readings(count, "bench-copy")
    columns = ", ".join(
        f'"{c}"'
        for c in ("edge_id", "seq", "machine_id", "timestamp", *CORE_SENSOR_NAMES, "custom_sensors")
    )
    types = ["text", "int8", "text", "timestamptz", *(["float8"] * 50), "jsonb"]
    started = time.perf_counter()
    with (
        psycopg.connect(url) as conn,
        conn.cursor() as cur,
        cur.copy(f"COPY sensor_readings ({columns}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types(types)
        for r in readings:
            copy.write_row(
                (
                    r.edge_id,
                    r.seq,
                    r.machine_id,
                    r.ts,
                    *(r.values[n] for n in CORE_SENSOR_NAMES),
                    Jsonb({}),
                )
            )
    return {"copy_ceiling_per_s": round(count / (time.perf_counter() - started))}


async def _load(
    url: str, rps: float, seconds: float, headers: dict[str, str]
) -> tuple[list[float], int]:
    """Open-loop load: latencies of the answered requests, and how many failed (an error
    status, or no answer within 30 s) — counted, so an overloaded server is a figure in the
    report instead of a benchmark that dies and loses the ingest figures measured before."""
    latencies: list[float] = []
    failed = 0
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    async with httpx.AsyncClient(timeout=30, limits=limits, headers=headers) as client:

        async def one() -> None:
            nonlocal failed
            t0 = time.perf_counter()
            try:
                response = await client.get(url)
                response.raise_for_status()
            except httpx.HTTPError:
                failed += 1
                return
            latencies.append((time.perf_counter() - t0) * 1000)

        tasks = []
        start = time.perf_counter()
        for i in range(int(rps * seconds)):
            delay = start + i / rps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return latencies, failed


def _start_api(logs: Path, url: str) -> tuple[Service, int]:
    """A real `rig-cloud serve` on a free port, once it answers /readyz."""
    port = free_port()
    api = Service(
        "api",
        ["cloud.cli", "--log-level", "WARNING", "serve", "--port", str(port)],
        logs,
        {"DATABASE_URL": url, "RIG_INGEST_API_KEY": "k" * 32},
    ).start()
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), 60, "api", services=[api])
    return api, port


def bench_stats(logs: Path, url: str, rps: float, seconds: float) -> dict[str, float]:
    api, port = _start_api(logs, url)
    headers = bearer(admin_token(f"http://127.0.0.1:{port}", url, "stats-admin"))
    stats = f"http://127.0.0.1:{port}/api/stats"
    try:
        asyncio.run(_load(stats, 20, 2, headers))  # warm-up
        answered, failed = asyncio.run(_load(stats, rps, seconds, headers))
    finally:
        api.stop()
    latencies = sorted(answered)
    if not latencies:
        return {"stats_rps": rps, "stats_failed": failed}
    pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1)  # noqa: E731
    return {
        "stats_rps": rps,
        "stats_p50_ms": pick(0.50),
        "stats_p99_ms": pick(0.99),
        "stats_failed": failed,
    }


def bench_history(logs: Path, url: str, days: int, queries: int) -> dict[str, float]:
    """One machine, one reading per second for ``days`` days, then the dashboard's history
    query (one sensor, 1,000 points) over the whole range through the API."""
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=days)
    total = days * 86_400
    _say(f"loading {total} rows of history …")
    columns = ", ".join(
        f'"{c}"' for c in ("edge_id", "seq", "machine_id", "timestamp", *CORE_SENSOR_NAMES)
    )
    rng = np.random.default_rng(5)
    with (
        psycopg.connect(url) as conn,
        conn.cursor() as cur,
        cur.copy(f"COPY sensor_readings ({columns}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types(["text", "int8", "text", "timestamptz", *(["float8"] * 50)])
        for block in range(0, total, 86_400):
            noise = 1 + 0.01 * rng.standard_normal((86_400, len(TYPICAL)))
            values = (TYPICAL * noise).tolist()
            for i in range(86_400):
                copy.write_row(
                    (
                        "history",
                        block + i + 1,
                        "H",
                        start + timedelta(seconds=block + i),
                        *values[i],
                    )
                )
    # The days without a partition landed in the default one. Maintenance gives each day
    # that holds rows its partition (moving them there), a bounded number per run: run it
    # until no day waits, as the hourly background maintenance would over a few hours.
    _say("moving the history into daily partitions …")
    while maintain_partitions(url).pending:
        pass
    _say("building the per-minute rollups of the loaded rows …")
    with psycopg.connect(url) as conn, conn.transaction():
        rebuild_minute_rollups(conn, start, end + timedelta(minutes=1))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE sensor_readings")
        conn.execute("ANALYZE sensor_minute_rollup")
    api, port = _start_api(logs, url)
    headers = bearer(admin_token(f"http://127.0.0.1:{port}", url, "history-admin"))
    latencies = []
    points = 0
    try:
        params: dict[str, str | int] = {
            "sensor": "vibration",
            "from": start.isoformat(),
            "to": end.isoformat(),
            "points": 1000,
        }
        with httpx.Client(timeout=60) as client:
            for _ in range(queries):
                t0 = time.perf_counter()
                response = client.get(
                    f"http://127.0.0.1:{port}/api/v1/machines/H/history",
                    params=params,
                    headers=headers,
                )
                response.raise_for_status()
                latencies.append((time.perf_counter() - t0) * 1000)
                # Minute rollups round the bucket up to whole minutes: ~980 of 1,000 points.
                points = len(response.json()["points"])
                assert points >= 900, points
    finally:
        api.stop()
    latencies.sort()
    return {
        "history_rows": total,
        "history_points": points,
        "history_p50_ms": round(latencies[len(latencies) // 2], 1),
        "history_p95_ms": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--aggregators", type=int, default=2)
    parser.add_argument("--rps", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--history-days", type=int, default=30)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-cloud-"))
    logs = work / "logs"
    logs.mkdir()
    pg = EmbeddedPostgres(work / "pg")
    broker = KafkaBroker(work / "kafka", log_file=logs / "kafka.log")
    result: dict[str, object] = {}
    try:
        url = pg.start()
        bootstrap = broker.start()
        apply_migrations(url)
        maintain_partitions(url)
        ingest = bench_ingest(work, logs, url, bootstrap, broker, args.readings, args.aggregators)
        result.update(ingest)
        _say("plain COPY of the same rows …")
        copied = bench_copy(url, args.readings)
        result.update(copied)
        result["ingest_vs_copy"] = round(
            ingest["ingest_readings_per_s"] / copied["copy_ceiling_per_s"], 2
        )
        _say(f"GET /api/stats at {args.rps} req/s …")
        result.update(bench_stats(logs, url, args.rps, args.seconds))
        _say(f"history over {args.history_days} days …")
        result.update(bench_history(logs, url, args.history_days, 20))
    finally:
        broker.stop()
        pg.stop("immediate")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
