"""Writing readings into PostgreSQL: COPY into a staging table, then one INSERT that skips
``(edge_id, seq)`` keys already stored. Used by the Kafka aggregator and the direct ingest
path alike, so both give exactly-once storage under redelivery."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
import psycopg
from psycopg.types.json import Jsonb

from cloud.live import notify_readings
from cloud.rollup import record_batch
from shared.catalog import CORE_SENSOR_NAMES
from shared.message import Reading

_COLUMNS = (
    "edge_id",
    "seq",
    "machine_id",
    "timestamp",
    *CORE_SENSOR_NAMES,
    "custom_sensors",
    "quality",
    "detection",
)
_COLUMN_LIST = ", ".join(f'"{c}"' for c in _COLUMNS)

_CREATE_STAGING = f"""
CREATE TEMP TABLE IF NOT EXISTS staging_readings
ON COMMIT DELETE ROWS
AS SELECT {_COLUMN_LIST} FROM sensor_readings WITH NO DATA
"""

_ROLLUP_COLUMNS = ", ".join(f"{n}_min, {n}_max, {n}_sum, {n}_n" for n in CORE_SENSOR_NAMES)
_ROLLUP_AGGREGATES = ", ".join(
    f'min("{n}"), max("{n}"), sum("{n}"), count("{n}")' for n in CORE_SENSOR_NAMES
)
_ROLLUP_MERGE = ", ".join(
    f"{n}_min = LEAST(r.{n}_min, excluded.{n}_min), "
    f"{n}_max = GREATEST(r.{n}_max, excluded.{n}_max), "
    f"{n}_sum = coalesce(r.{n}_sum, 0) + coalesce(excluded.{n}_sum, 0), "
    f"{n}_n = r.{n}_n + excluded.{n}_n"
    for n in CORE_SENSOR_NAMES
)
_SENSOR_LIST = ", ".join(f'"{n}"' for n in CORE_SENSOR_NAMES)

# One statement: rows new to the table are inserted, and exactly those rows are added to the
# per-minute rollups (a redelivered reading changes neither). ORDER BY makes concurrent
# aggregators lock rollup rows in the same order, so they cannot deadlock.
_MERGE = f"""
WITH ins AS (
    INSERT INTO sensor_readings ({_COLUMN_LIST})
    SELECT {_COLUMN_LIST} FROM staging_readings
    ON CONFLICT (edge_id, seq, "timestamp") DO NOTHING
    RETURNING machine_id, "timestamp", edge_id, seq, created_at, {_SENSOR_LIST}
), roll AS (
    INSERT INTO sensor_minute_rollup AS r (machine_id, minute, readings, {_ROLLUP_COLUMNS})
    SELECT machine_id, date_trunc('minute', "timestamp"), count(*), {_ROLLUP_AGGREGATES}
    FROM ins GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (machine_id, minute) DO UPDATE SET readings = r.readings + excluded.readings,
    {_ROLLUP_MERGE}
)
SELECT machine_id, "timestamp", edge_id, seq, created_at FROM ins
"""


@dataclass(frozen=True, slots=True)
class StoreResult:
    received: int
    inserted: int

    @property
    def duplicates(self) -> int:
        return self.received - self.inserted


_COPY_TYPES = [
    "text",
    "int8",
    "text",
    "timestamptz",
    *(["float8"] * len(CORE_SENSOR_NAMES)),
    "jsonb",
    "jsonb",
    "jsonb",
]


def _orjson_text(obj: object) -> str:
    return orjson.dumps(obj).decode()


# Most readings have no custom sensors: one shared value instead of a dump per row.
_EMPTY_OBJECT = Jsonb({}, dumps=lambda _obj: "{}")


def _row(reading: Reading) -> tuple[object, ...]:
    # map() over the column names runs in C: a third of the cost of a generator expression
    # on this per-reading path.
    return (
        reading.edge_id,
        reading.seq,
        reading.machine_id,
        reading.ts,
        *map(reading.values.get, CORE_SENSOR_NAMES),
        Jsonb(reading.custom, dumps=_orjson_text) if reading.custom else _EMPTY_OBJECT,
        Jsonb(reading.quality, dumps=_orjson_text) if reading.quality else None,
        Jsonb(reading.detection, dumps=_orjson_text) if reading.detection is not None else None,
    )


def store_readings(
    conn: psycopg.Connection,
    readings: Sequence[Reading],
    edge_backlog: Mapping[str, int] | None = None,
) -> StoreResult:
    """Store readings inside the caller's transaction (the caller commits).

    ``edge_backlog``: per edge id, the buffer depth the edge reported with this batch."""
    if not readings:
        return StoreResult(0, 0)
    with conn.cursor() as cur:
        cur.execute(_CREATE_STAGING)  # type: ignore[arg-type]
        # Binary COPY: values go over as IEEE doubles, twice as fast as text on this path.
        with cur.copy(
            f"COPY staging_readings ({_COLUMN_LIST}) FROM STDIN (FORMAT BINARY)"  # type: ignore[arg-type]
        ) as copy:
            copy.set_types(_COPY_TYPES)
            for reading in readings:
                copy.write_row(_row(reading))
        cur.execute(_MERGE)  # type: ignore[arg-type]
        inserted = cur.fetchall()
        _update_totals(cur, inserted)
        if edge_backlog:
            _record_backlog(cur, edge_backlog)
        # Only rows stored now count: a redelivered reading adds nothing twice.
        by_key = {(r.edge_id, r.seq): r for r in readings}
        fresh = [by_key[(edge, seq)] for _, _, edge, seq, _ in inserted]
        _register_custom_sensors(cur, fresh)
        _store_anomalies(cur, fresh)
        # Delivered by PostgreSQL only if this transaction commits.
        notify_readings(cur, fresh)
    return StoreResult(len(readings), len(inserted))


def _register_custom_sensors(cur: psycopg.Cursor, readings: list[Reading]) -> None:
    stats: dict[str, list] = {}
    for r in readings:
        for name, value in r.custom.items():
            entry = stats.get(name)
            if entry is None:
                stats[name] = [r.ts, r.ts, r.machine_id, 1, value, value, value, {r.machine_id}]
            else:
                entry[0] = min(entry[0], r.ts)
                entry[1] = max(entry[1], r.ts)
                entry[3] += 1
                entry[4] = min(entry[4], value)
                entry[5] = max(entry[5], value)
                entry[6] += value
                entry[7].add(r.machine_id)
    if not stats:
        return
    cur.executemany(
        "INSERT INTO custom_sensors (name, first_seen, last_seen, first_machine, samples, "
        "min_value, max_value, sum_value, machines) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (name) DO UPDATE SET "
        "first_seen = LEAST(custom_sensors.first_seen, excluded.first_seen), "
        "first_machine = coalesce(custom_sensors.first_machine, excluded.first_machine), "
        "machines = ARRAY(SELECT DISTINCT unnest(custom_sensors.machines || excluded.machines)"
        " ORDER BY 1), "
        "last_seen = GREATEST(custom_sensors.last_seen, excluded.last_seen), "
        "samples = custom_sensors.samples + excluded.samples, "
        "min_value = LEAST(custom_sensors.min_value, excluded.min_value), "
        "max_value = GREATEST(custom_sensors.max_value, excluded.max_value), "
        "sum_value = custom_sensors.sum_value + excluded.sum_value",
        # Sorted: concurrent aggregators take row locks in one order, so no deadlocks.
        [(name, *entry[:7], sorted(entry[7])) for name, entry in sorted(stats.items())],
    )


def _store_anomalies(cur: psycopg.Cursor, readings: list[Reading]) -> None:
    rows = []
    for r in readings:
        d = r.detection
        if not d or not d.get("is_anomaly"):
            continue
        rows.append(
            (
                r.edge_id,
                r.seq,
                r.ts,
                r.machine_id,
                str(d.get("method", "unknown"))[:32],
                float(d.get("score", 0.0)),
                True,
                list(d.get("sensors", [])),
                Jsonb(d),
            )
        )
    if rows:
        cur.executemany(
            "INSERT INTO anomaly_detections (edge_id, seq, reading_ts, machine_id, "
            "detection_method, anomaly_score, is_anomaly, detected_sensors, details) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            rows,
        )


def _record_backlog(cur: psycopg.Cursor, edge_backlog: Mapping[str, int]) -> None:
    cur.executemany(
        "INSERT INTO edges (edge_id, backlog, backlog_reported_at) VALUES (%s, %s, now()) "
        "ON CONFLICT (edge_id) DO UPDATE SET backlog = excluded.backlog, "
        "backlog_reported_at = now()",
        sorted(edge_backlog.items()),
    )


def _update_totals(
    cur: psycopg.Cursor, inserted: list[tuple[str, datetime, str, int, datetime]]
) -> None:
    if not inserted:
        return
    record_batch(cur, max(row[4] for row in inserted), [row[1] for row in inserted])
    per_machine: dict[str, tuple[int, datetime]] = {}
    per_edge: dict[str, int] = defaultdict(int)
    for machine_id, ts, edge_id, seq, _ in inserted:
        count, last = per_machine.get(machine_id, (0, ts))
        per_machine[machine_id] = (count + 1, max(last, ts))
        per_edge[edge_id] = max(per_edge[edge_id], seq)
    # Sorted so that concurrent aggregators lock rows in the same order: no deadlocks.
    for machine_id in sorted(per_machine):
        count, last = per_machine[machine_id]
        cur.execute(
            "INSERT INTO reading_totals (machine_id, total, last_timestamp, updated_at) "
            "VALUES (%s, %s, %s, now()) ON CONFLICT (machine_id) DO UPDATE SET "
            "total = reading_totals.total + excluded.total, "
            "last_timestamp = GREATEST(reading_totals.last_timestamp, excluded.last_timestamp), "
            "updated_at = now()",
            (machine_id, count, last),
        )
        cur.execute(
            "INSERT INTO machines (machine_id) VALUES (%s) ON CONFLICT DO NOTHING", (machine_id,)
        )
    for edge_id in sorted(per_edge):
        cur.execute(
            "INSERT INTO edges (edge_id, last_seq) VALUES (%s, %s) ON CONFLICT (edge_id) DO "
            "UPDATE SET last_seen = now(), last_seq = GREATEST(edges.last_seq, excluded.last_seq)",
            (edge_id, per_edge[edge_id]),
        )


_ROLLUP_PARTS = ("min", "max", "sum", "n")
_REBUILD_ROLLUPS = f"""
INSERT INTO sensor_minute_rollup AS r (machine_id, minute, readings, {_ROLLUP_COLUMNS})
SELECT machine_id, date_trunc('minute', "timestamp"), count(*), {_ROLLUP_AGGREGATES}
FROM sensor_readings WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s
GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (machine_id, minute) DO UPDATE SET readings = excluded.readings,
{", ".join(f"{n}_{a} = excluded.{n}_{a}" for n in CORE_SENSOR_NAMES for a in _ROLLUP_PARTS)}
"""


def rebuild_minute_rollups(conn: psycopg.Connection, start: datetime, end: datetime) -> int:
    """Recompute the per-minute rollups of [start, end) from the stored rows, in the caller's
    transaction: for data loaded around the ingest path (bulk imports, restores) and for
    readings stored before the rollups existed. Returns the number of minutes written."""
    start = start.replace(second=0, microsecond=0)
    with conn.cursor() as cur:
        cur.execute(
            "DELETE FROM sensor_minute_rollup WHERE minute >= %(start)s AND minute < %(end)s",
            {"start": start, "end": end},
        )
        cur.execute(_REBUILD_ROLLUPS, {"start": start, "end": end})  # type: ignore[arg-type]
        return cur.rowcount


def store_dead_letters(
    conn: psycopg.Connection,
    letters: Sequence[tuple[str, str | None, int | None, int | None, str, bytes | None]],
) -> None:
    """(source, topic, partition, offset, reason, payload) rows, in the caller's transaction."""
    if not letters:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO dead_letters (source, topic, kafka_partition, kafka_offset, reason, "
            "payload) VALUES (%s, %s, %s, %s, %s, %s)",
            letters,
        )
