"""Writing readings into PostgreSQL: one statement claims each reading's key ``(edge_id,
seq)`` in ``reading_keys``, then exactly the readings whose key was new are COPied into
``sensor_readings`` and added to the per-minute rollups, all in the caller's transaction.
(Rows loaded around this path make the COPY fail on a unique key: the batch then goes
through a staging table and one guarded statement instead.) Used by the Kafka aggregator and
the direct ingest path alike, so both give exactly-once storage under redelivery.

A reading whose key was already stored is compared with the stored row: the same content is a
silent duplicate (a redelivery), other content (another timestamp, other values) a conflict,
returned to the caller naming both versions and never stored as a second row. Comparing
only on a key hit keeps the normal path free of any per-reading hashing: hits are rare
(redeliveries after a crash or a rebalance) and cost one indexed read per batch."""

from __future__ import annotations

import math
import operator
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from typing import Any

import numpy as np
import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from cloud.ingest_stats import record_batch
from cloud.live import notify_readings
from cloud.scoring import client_part, client_part_sql, default_scorer
from shared.catalog import CORE_SENSOR_NAMES
from shared.message import Reading, format_ts

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
_STAGED_LIST = ", ".join(f's."{c}"' for c in _COLUMNS)

# Per connection (temporary). Every statement that reads it empties it (DELETE .. RETURNING
# or a DELETE right after), so several calls in one transaction (the aggregator's
# bisection, savepoints) never see each other's rows.
_STAGING = "staging_keyed_readings"
_CREATE_STAGING = f"""
CREATE TEMP TABLE IF NOT EXISTS {_STAGING}
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

# One statement: the staged rows are taken out of staging, keys new to reading_keys are
# claimed, exactly those readings are inserted, and exactly those rows are added to the
# per-minute rollups (a redelivered reading changes nothing). ORDER BY makes concurrent
# aggregators take key and rollup locks in the same order, so they cannot deadlock.
_MERGE_TEMPLATE = f"""
WITH staged AS (
    DELETE FROM {_STAGING} RETURNING {_COLUMN_LIST}
), keys AS (
    INSERT INTO reading_keys (edge_id, seq, ts)
    SELECT edge_id, seq, "timestamp" FROM staged ORDER BY edge_id, seq
    ON CONFLICT (edge_id, seq) DO NOTHING
    RETURNING edge_id, seq
), ins AS (
    INSERT INTO sensor_readings ({_COLUMN_LIST})
    SELECT {_STAGED_LIST} FROM staged s JOIN keys k ON k.edge_id = s.edge_id AND k.seq = s.seq
    {{guard}}
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
# The staged statement is the path for batches that hit rows loaded around the claim and
# COPY path (``_insert_claimed``; a bulk COPY into sensor_readings): its guard skips them.
# Measured on 5,000-reading batches it costs ~25 us of PostgreSQL CPU per reading against
# ~15 us for claim + COPY + rollup upsert (the staging write and delete, the join and 200
# SQL aggregates per row are gone); ``_MERGE`` (unguarded) is kept for comparison runs.
_MERGE = _MERGE_TEMPLATE.replace("{guard}", "")
_MERGE_GUARDED = _MERGE_TEMPLATE.replace(
    "{guard}", 'ON CONFLICT (edge_id, seq, "timestamp") DO NOTHING'
)

# The last content column, the detection, is compared by what its sender posted
# (``cloud.scoring.client_part``): the verdict the cloud added to a reading is not content.
# After the merge, in a statement of its own (it sees what concurrent writers committed): the
# staged readings whose key is held by a row with other content. PostgreSQL compares: jsonb
# by value (key order, 1 = 1.0), float8 with -0.0 = 0.0. A key whose row is gone counts.
_CONTENT = ("machine_id", "timestamp", *CORE_SENSOR_NAMES, "custom_sensors", "quality", "detection")
_DIFFERENT = f"""
SELECT s.edge_id, s.seq, k.ts
FROM {_STAGING} s
JOIN reading_keys k ON k.edge_id = s.edge_id AND k.seq = s.seq
LEFT JOIN sensor_readings r ON r.edge_id = k.edge_id AND r.seq = k.seq AND r."timestamp" = k.ts
WHERE r.edge_id IS NULL
   OR ({", ".join(f'r."{c}"' for c in _CONTENT[:-1])}, {client_part_sql("r")})
      IS DISTINCT FROM ({", ".join(f's."{c}"' for c in _CONTENT[:-1])}, {client_part_sql("s")})
"""
_ROW_COLUMNS = (
    f'machine_id, edge_id, seq, "timestamp", {_SENSOR_LIST}, custom_sensors, quality, detection'
)
# The timestamps come from reading_keys, so only the partitions of those days are read.
_STORED_ROWS = (
    f"SELECT {_ROW_COLUMNS} FROM sensor_readings "
    'WHERE "timestamp" = ANY(%s::timestamptz[]) '
    "AND (edge_id, seq) IN (SELECT * FROM unnest(%s::text[], %s::bigint[]))"
)


@dataclass(frozen=True, slots=True)
class Conflict:
    """A reading whose key ``(edge_id, seq)`` is already taken by other content.

    ``index``: its position in the readings given to ``store_readings``; ``detail``: both
    versions, ``{"stored": wire reading, "received": wire reading}``."""

    index: int
    reason: str
    detail: dict[str, Any]


def _content(reading: Reading) -> tuple[object, ...]:
    """What is stored of a reading besides its key, in a form two deliveries share however
    the sender ordered its JSON (a value that could not be read counts as absent, as it is
    stored: NULL; JSONB gives 0.0 for -0.0, which compares equal)."""
    values = reading.values
    if None in values.values():
        values = {name: value for name, value in values.items() if value is not None}
    return (
        reading.machine_id,
        reading.ts,
        values,
        reading.custom,
        reading.quality,
        client_part(reading.detection),
    )


@dataclass(frozen=True, slots=True)
class StoreResult:
    received: int
    inserted: int
    conflicts: tuple[Conflict, ...] = ()

    @property
    def duplicates(self) -> int:
        """Identical redeliveries of readings already stored (or repeated in the batch)."""
        return self.received - self.inserted - len(self.conflicts)


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

    Readings whose key is already stored with the same content are dropped as duplicates;
    with other content they are returned as ``conflicts`` (and not stored): the caller
    dead-letters or refuses them. ``edge_backlog``: per edge id, the buffer depth the edge
    reported with this batch."""
    if not readings:
        return StoreResult(0, 0)
    unique, repeats = _one_version_per_key(readings)
    conflicts: list[Conflict] = []
    # Readings without a trusted detection get the cloud's verdict before they are staged
    # (cloud.scoring); ``readings`` stays as received for the comparisons below.
    judged = default_scorer().judge(conn, [readings[i] for i in unique])
    staged = dict(zip(unique, judged, strict=True))
    with conn.cursor() as cur:
        try:
            with conn.transaction():
                inserted = _insert_claimed(cur, judged)
        except psycopg.errors.UniqueViolation:
            # Rows loaded around this path (a bulk COPY into sensor_readings) hold some of
            # the (edge_id, seq, timestamp) keys: the staged statement skips those rows.
            cur.execute(_CREATE_STAGING)
            _stage(cur, judged)
            cur.execute(_MERGE_GUARDED)
            inserted = cur.fetchall()
        # Where a key of the batch holds other content than the batch's first reading of it:
        # the stored version (its timestamp alone if its row is gone).
        other: dict[tuple[str, int], Reading | datetime] = {}
        if len(inserted) < len(unique):
            stored_now = {(edge, seq) for _, _, edge, seq, _ in inserted}
            taken = [i for i in unique if (readings[i].edge_id, readings[i].seq) not in stored_now]
            other = _stored_otherwise(cur, [staged[i] for i in taken])
            for i in taken:
                _compare(i, readings, other, conflicts)
        for i, j in repeats:
            _compare(i, readings, other, conflicts, first=j)
        _update_totals(cur, inserted)
        if edge_backlog:
            _record_backlog(cur, edge_backlog)
        # Only rows stored now count: a redelivered reading adds nothing twice.
        by_key = {(staged[i].edge_id, staged[i].seq): staged[i] for i in unique}
        fresh = [by_key[(edge, seq)] for _, _, edge, seq, _ in inserted]
        _register_custom_sensors(cur, fresh)
        anomaly_ids = _store_anomalies(cur, fresh)
        # Delivered by PostgreSQL only if this transaction commits.
        notify_readings(cur, fresh, anomaly_ids)
    conflicts.sort(key=lambda c: c.index)
    return StoreResult(len(readings), len(inserted), tuple(conflicts))


def _stage(cur: psycopg.Cursor, readings: Sequence[Reading]) -> None:
    # Binary COPY: values go over as IEEE doubles, twice as fast as text on this path.
    with cur.copy(f"COPY {_STAGING} ({_COLUMN_LIST}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(_COPY_TYPES)
        for reading in readings:
            copy.write_row(_row(reading))


_CLAIM = """
INSERT INTO reading_keys (edge_id, seq, ts)
SELECT * FROM unnest(%s::text[], %s::bigint[], %s::timestamptz[]) ORDER BY 1, 2
ON CONFLICT (edge_id, seq) DO NOTHING
RETURNING edge_id, seq
"""
_ROLLUP_UPSERT = f"""
INSERT INTO sensor_minute_rollup AS r (machine_id, minute, readings, {_ROLLUP_COLUMNS})
VALUES ({", ".join(["%s"] * (3 + 4 * len(CORE_SENSOR_NAMES)))})
ON CONFLICT (machine_id, minute) DO UPDATE SET readings = r.readings + excluded.readings,
{_ROLLUP_MERGE}
"""


def _insert_claimed(
    cur: psycopg.Cursor, readings: Sequence[Reading]
) -> list[tuple[str, datetime, str, int, datetime]]:
    """Claim the readings' keys in ``reading_keys``, COPY exactly the readings whose key was
    new straight into ``sensor_readings`` and add them to the per-minute rollups; returns
    them as (machine_id, timestamp, edge_id, seq, created_at).

    The same effect as the staged statement (``_MERGE``) without a staging table: no
    staging write and delete, no join, and the rollups aggregated vectorised here instead
    of 200 SQL aggregates per row -- together ~60 % of PostgreSQL's time per reading.
    Keys are claimed sorted, as the staged statement does, so concurrent writers cannot
    deadlock. Raises UniqueViolation if a row loaded around this path holds a key."""
    if not readings:
        return []
    cur.execute(_CLAIM, _key_arrays(readings))
    claimed = set(cur.fetchall())
    fresh = (
        list(readings)
        if len(claimed) == len(readings)
        else [r for r in readings if (r.edge_id, r.seq) in claimed]
    )
    if not fresh:
        return []
    with cur.copy(f"COPY sensor_readings ({_COLUMN_LIST}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(_COPY_TYPES)
        for reading in fresh:
            copy.write_row(_row(reading))
    _add_to_rollups(cur, fresh)
    # created_at is clock_timestamp() per row: the clock now is the last row's, give or take.
    row = cur.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    stored_at: datetime = row[0]
    return [(r.machine_id, r.ts, r.edge_id, r.seq, stored_at) for r in fresh]


# What an array literal may hold unquoted-in-quotes: the wire's edge id alphabet
# (shared.message.EDGE_ID_RE) has no quote, backslash, brace or comma.
_PLAIN_EDGE_IDS = re.compile(r"[A-Za-z0-9_.:\-]*")


_CORE_VALUES = operator.itemgetter(*CORE_SENSOR_NAMES)


def _key_arrays(readings: Sequence[Reading]) -> tuple[object, object, object]:
    """The keys as three array parameters. Written as array literals with str.join (C) when
    the ids allow it: psycopg dumps a list element by element in Python, ~6 us per reading
    for these three."""
    edges = [r.edge_id for r in readings]
    seqs = [r.seq for r in readings]
    stamps = [r.ts for r in readings]
    joined = '","'.join(edges)
    if not _PLAIN_EDGE_IDS.fullmatch(joined.replace('","', "")):
        return edges, seqs, stamps
    return (
        f'{{"{joined}"}}',
        "{" + ",".join(map(str, seqs)) + "}",
        '{"' + '","'.join(map(datetime.isoformat, stamps)) + '"}',
    )


def minute_rollup_rows(readings: Sequence[Reading]) -> list[tuple[object, ...]]:
    """Per (machine, minute) of the readings: the row the rollup statement adds, readings
    then min, max, sum, count of each core sensor over its non-null values (None where a
    sensor has none), as SQL's min/max/sum/count over the stored rows give. Sorted by key,
    the order in which concurrent writers lock rollup rows."""
    groups: dict[tuple[str, datetime], list[int]] = {}
    for k, r in enumerate(readings):
        minute = r.ts.astimezone(UTC).replace(second=0, microsecond=0)
        groups.setdefault((r.machine_id, minute), []).append(k)
    nan = math.nan
    # None (a value that could not be read) becomes NaN, like a missing sensor: neither counts.
    vectors = []
    for r in readings:
        try:
            vectors.append(_CORE_VALUES(r.values))  # every core sensor present: one C call
        except KeyError:
            vectors.append(tuple(map(r.values.get, CORE_SENSOR_NAMES, repeat(nan))))
    matrix = np.array(vectors, dtype=np.float64)
    rows: list[tuple[object, ...]] = []
    for (machine, minute), idx in sorted(groups.items()):
        part = matrix[idx]
        present = ~np.isnan(part)
        counts = present.sum(axis=0).tolist()
        lows = np.fmin.reduce(part, axis=0).tolist()
        highs = np.fmax.reduce(part, axis=0).tolist()
        sums = np.where(present, part, 0.0).sum(axis=0).tolist()
        cells: list[object] = [machine, minute, len(idx)]
        for n, low, high, total in zip(counts, lows, highs, sums, strict=True):
            if n:
                cells += (low, high, total, n)
            else:
                cells += (None, None, None, 0)
        rows.append(tuple(cells))
    return rows


def _add_to_rollups(cur: psycopg.Cursor, readings: Sequence[Reading]) -> None:
    cur.executemany(_ROLLUP_UPSERT, minute_rollup_rows(readings))


def _one_version_per_key(readings: Sequence[Reading]) -> tuple[list[int], list[tuple[int, int]]]:
    """Indexes of the first reading of each key in the batch (those are staged), and the
    later ones as (index, index of the first), compared once the stored version is known."""
    keys = list(zip([r.edge_id for r in readings], [r.seq for r in readings], strict=True))
    if len(set(keys)) == len(keys):  # the normal case: one pass in C
        return list(range(len(readings))), []
    first: dict[tuple[str, int], int] = {}
    unique: list[int] = []
    repeats: list[tuple[int, int]] = []
    for i, key in enumerate(keys):
        j = first.setdefault(key, i)
        if j == i:
            unique.append(i)
        else:
            repeats.append((i, j))
    return unique, repeats


def _compare(
    i: int,
    readings: Sequence[Reading],
    other: dict[tuple[str, int], Reading | datetime],
    conflicts: list[Conflict],
    *,
    first: int | None = None,
) -> None:
    """Reading ``i`` against the version its key has in the table. For a staged reading
    PostgreSQL already compared (``other``: the keys whose stored content differs); a
    later reading of the same key in the batch is compared with the table's version: the
    stored one if it differs from the batch's first, else that first reading."""
    reading = readings[i]
    stored = other.get((reading.edge_id, reading.seq))
    if first is None:
        if stored is None:
            return
    else:
        if stored is None:
            stored = readings[first]
        if isinstance(stored, Reading) and _content(stored) == _content(reading):
            return
    if isinstance(stored, datetime):
        conflicts.append(_conflict(i, reading, None, stored))
    else:
        conflicts.append(_conflict(i, reading, stored, stored.ts))


def _stored_otherwise(
    cur: psycopg.Cursor, taken: list[Reading]
) -> dict[tuple[str, int], Reading | datetime]:
    """Of the readings whose key was taken: the keys that hold other content, with the
    stored version. PostgreSQL compares them with the stored rows (staged once more: the
    rare path of a redelivery)."""
    cur.execute(_CREATE_STAGING)
    _stage(cur, taken)
    cur.execute(_DIFFERENT)
    stamps: dict[tuple[str, int], datetime] = {(edge, seq): ts for edge, seq, ts in cur.fetchall()}
    cur.execute(f"DELETE FROM {_STAGING}")
    # A key's timestamp is replaced below by the stored reading when its row is still there.
    other: dict[tuple[str, int], Reading | datetime] = dict(stamps)
    if not other:
        return other
    keys = sorted(other)
    with cur.connection.cursor(row_factory=dict_row) as rows:
        rows.execute(
            _STORED_ROWS,
            (sorted(set(stamps.values())), [k[0] for k in keys], [k[1] for k in keys]),
        )
        for row in rows.fetchall():
            key = (row["edge_id"], row["seq"])
            if other.get(key) == row["timestamp"]:
                other[key] = _row_reading(row)
    return other


def stored_reading(conn: psycopg.Connection, edge_id: str, seq: int) -> Reading | None:
    """The reading stored under a key, as a ``Reading`` as it was received (None if there is
    none); the cloud's verdict on it, if any, is in the row's ``detection``."""
    found = conn.execute(
        "SELECT ts FROM reading_keys WHERE edge_id = %s AND seq = %s", (edge_id, seq)
    ).fetchone()
    if found is None:
        return None
    with conn.cursor(row_factory=dict_row) as rows:
        rows.execute(_STORED_ROWS, ([found[0]], [edge_id], [seq]))
        row = rows.fetchone()
    return _row_reading(row) if row is not None else None


def _row_reading(row: dict[str, Any]) -> Reading:
    return Reading(
        row["machine_id"],
        row["edge_id"],
        row["seq"],
        row["timestamp"].astimezone(UTC),
        {name: row[name] for name in CORE_SENSOR_NAMES if row[name] is not None},
        row["custom_sensors"] or {},
        row["quality"] or {},
        # As it was received: a verdict the cloud added is not part of the reading's content.
        client_part(row["detection"]),
    )


def _conflict(
    index: int, received: Reading, stored: Reading | None, stored_ts: datetime
) -> Conflict:
    reason = (
        f"key conflict: edge_id {received.edge_id!r} seq {received.seq} is already stored "
        f"with {_difference(stored, stored_ts, received)}"
    )
    stored_doc: dict[str, Any] = (
        stored.to_wire()
        if stored is not None
        else {"edge_id": received.edge_id, "seq": received.seq, "ts": format_ts(stored_ts)}
    )
    return Conflict(index, reason, {"stored": stored_doc, "received": received.to_wire()})


def _difference(stored: Reading | None, stored_ts: datetime, received: Reading) -> str:
    """The first thing that differs between the two versions, both sides quoted."""
    if stored_ts != received.ts:
        return (
            f"another timestamp: stored {format_ts(stored_ts)}, "
            f"this message {format_ts(received.ts)}"
        )
    if stored is None:
        return "content that is no longer stored (its row is gone)"
    if stored.machine_id != received.machine_id:
        return (
            f"another machine: stored {stored.machine_id!r}, this message {received.machine_id!r}"
        )
    old_all, new_all = _content(stored), _content(received)
    for label, old, new in (
        ("values", old_all[2], new_all[2]),
        ("custom", stored.custom, received.custom),
    ):
        assert isinstance(old, dict) and isinstance(new, dict)
        for name in sorted(old.keys() | new.keys()):
            if old.get(name) != new.get(name):
                return (
                    f"other values: {label}.{name} stored {old.get(name)!r}, "
                    f"this message {new.get(name)!r}"
                )
    if stored.quality != received.quality:
        return f"other values: quality stored {stored.quality!r}, this message {received.quality!r}"
    return "other values: another detection"


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


def _store_anomalies(cur: psycopg.Cursor, readings: list[Reading]) -> dict[tuple[str, int], int]:
    """Stores the readings' anomalies; their row ids by reading key (the live event carries
    the id, so a feed can link a row pushed to it to the anomaly's detail page)."""
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
                # What a client posted is kept on the reading only, apart from the verdict.
                Jsonb({k: v for k, v in d.items() if k != "client"}),
            )
        )
    ids: dict[tuple[str, int], int] = {}
    if rows:
        cur.executemany(
            "INSERT INTO anomaly_detections (edge_id, seq, reading_ts, machine_id, "
            "detection_method, anomaly_score, is_anomaly, detected_sensors, details) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING "
            "RETURNING id, edge_id, seq",
            rows,
            returning=True,
        )
        # One result set per row; a row kept out by ON CONFLICT returns nothing.
        while True:
            for anomaly_id, edge_id, seq in cur.fetchall():
                ids[(edge_id, seq)] = anomaly_id
            if not cur.nextset():
                break
    return ids


def record_edge_backlog(conn: psycopg.Connection, edge_backlog: Mapping[str, int]) -> None:
    """Per edge, the buffer depth it reported (in the caller's transaction)."""
    with conn.cursor() as cur:
        _record_backlog(cur, edge_backlog)


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
        cur.execute(_REBUILD_ROLLUPS, {"start": start, "end": end})
        return cur.rowcount


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message set aside with its reason: ``source`` "kafka" (with its position) or
    "api"; ``detail`` what the reason cannot hold (both versions of a key conflict)."""

    source: str
    reason: str
    payload: bytes | None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    detail: dict[str, Any] | None = None


MAX_REASON_CHARS = 2000
MAX_DEAD_PAYLOAD = 65536


def clean_text(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """A reason as PostgreSQL TEXT takes it: no NUL, no lone surrogates (a field path may
    quote a hostile key), bounded."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")


_INSERT_DEAD_LETTER = (
    "INSERT INTO dead_letters (source, topic, kafka_partition, kafka_offset, reason, payload, "
    "detail) VALUES (%s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (topic, kafka_partition, kafka_offset) WHERE source = 'kafka' DO NOTHING "
    "RETURNING id"
)


def store_dead_letters(conn: psycopg.Connection, letters: Sequence[DeadLetter]) -> list[int]:
    """Insert dead letters in the caller's transaction; returns the indexes of the letters
    stored now (a Kafka message dead-lettered before, then redelivered, is stored once)."""
    if not letters:
        return []
    stored: list[int] = []
    with conn.cursor() as cur:
        cur.executemany(
            _INSERT_DEAD_LETTER,
            [
                (
                    d.source,
                    d.topic,
                    d.partition,
                    d.offset,
                    clean_text(d.reason),
                    d.payload[:MAX_DEAD_PAYLOAD] if d.payload is not None else None,
                    Jsonb(d.detail, dumps=_orjson_text) if d.detail is not None else None,
                )
                for d in letters
            ],
            returning=True,
        )
        index = 0
        while True:
            if cur.fetchone() is not None:
                stored.append(index)
            index += 1
            if not cur.nextset():
                break
    return stored
