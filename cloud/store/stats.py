"""What ``/api/stats`` reports: totals and the newest reading per machine, the ingest rate
and latency of the last seconds, consumer lag and the edges' buffer depths."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row, dict_row

from cloud.ingest_stats import recent
from shared.catalog import CORE_SENSOR_NAMES

# How recent a consumer's lag report must be to count: aggregators report every few seconds.
LAG_FRESH_S = 60


@dataclass(frozen=True, slots=True)
class MachineLatest:
    machine_id: str
    total: int
    # The newest reading; all None when the machine's rows are gone (partitions dropped).
    reading_ts: datetime | None
    edge_id: str | None
    seq: int | None
    values: dict[str, float]
    custom: dict[str, float]
    quality: dict[str, str]
    detection: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ConsumerLag:
    group_id: str
    topic: str
    kafka_partition: int
    lag: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class EdgeBacklog:
    edge_id: str
    last_seen: datetime
    backlog: int | None
    backlog_reported_at: datetime | None


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    machines: list[MachineLatest]
    # Readings stored in the window and their end-to-end latency histogram
    # (cloud.ingest_stats.LATENCY_BOUNDS_MS).
    window_count: int
    latency_buckets: list[int]
    lag: list[ConsumerLag]
    edges: list[EdgeBacklog]


_SENSOR_COLUMNS = ", ".join(f"s.{name}" for name in CORE_SENSOR_NAMES)
_LATEST = f"""
SELECT t.machine_id, t.total, r.*
FROM reading_totals t
LEFT JOIN LATERAL (
    SELECT s."timestamp" AS reading_ts, s.edge_id, s.seq, {_SENSOR_COLUMNS},
           s.custom_sensors, s.quality, s.detection
    FROM sensor_readings s
    WHERE s.machine_id = t.machine_id
    ORDER BY s."timestamp" DESC
    LIMIT 1
) r ON true
ORDER BY t.machine_id
"""
_LAG = f"""
SELECT group_id, topic, kafka_partition, lag, updated_at FROM consumer_lag
WHERE updated_at > now() - interval '{LAG_FRESH_S} seconds' ORDER BY 1, 2, 3
"""
_EDGES = "SELECT edge_id, last_seen, backlog, backlog_reported_at FROM edges ORDER BY edge_id"


def _machine(row: dict[str, Any]) -> MachineLatest:
    return MachineLatest(
        machine_id=row["machine_id"],
        total=int(row["total"]),
        reading_ts=row["reading_ts"],
        edge_id=row["edge_id"],
        seq=row["seq"],
        values={name: row[name] for name in CORE_SENSOR_NAMES if row.get(name) is not None},
        custom=row["custom_sensors"] or {},
        quality=row["quality"] or {},
        detection=row["detection"],
    )


def stats_snapshot(conn: psycopg.Connection, window_s: int) -> StatsSnapshot:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_LATEST)
        machines = [_machine(row) for row in cur.fetchall()]
    count, buckets = recent(conn, window_s)
    with conn.cursor(row_factory=class_row(ConsumerLag)) as cur:
        cur.execute(_LAG)
        lag = cur.fetchall()
    with conn.cursor(row_factory=class_row(EdgeBacklog)) as cur:
        cur.execute(_EDGES)
        edges = cur.fetchall()
    return StatsSnapshot(machines, count, buckets, lag, edges)
