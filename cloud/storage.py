"""Writing readings into PostgreSQL: COPY into a staging table, then one statement that
claims each reading's key ``(edge_id, seq)`` in ``reading_keys`` and inserts only the
readings whose key was new. Used by the Kafka aggregator and the direct ingest path alike,
so both give exactly-once storage under redelivery.

A key that was already stored is compared by digest: the same content is a silent duplicate
(a redelivery), other content (another timestamp, other values) is a conflict, returned to
the caller naming both versions and never stored as a second row."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from hashlib import blake2b
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from cloud.live import notify_readings
from cloud.rollup import record_batch
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

# Per connection (temporary), with the digest beside the row's columns. The storing
# statement empties it (DELETE .. RETURNING), so several calls in one transaction (the
# aggregator's bisection, savepoints) never see each other's rows.
_STAGING = "staging_keyed_readings"
_CREATE_STAGING = f"""
CREATE TEMP TABLE IF NOT EXISTS {_STAGING}
ON COMMIT DELETE ROWS
AS SELECT {_COLUMN_LIST}, 0::bigint AS digest FROM sensor_readings WITH NO DATA
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

# One statement: keys new to reading_keys are claimed, exactly those readings are inserted,
# and exactly those rows are added to the per-minute rollups (a redelivered reading changes
# nothing). ORDER BY makes concurrent aggregators take key and rollup locks in the same
# order, so they cannot deadlock. The ON CONFLICT on sensor_readings only guards rows stored
# before reading_keys existed.
_MERGE = f"""
WITH staged AS (
    DELETE FROM {_STAGING} RETURNING {_COLUMN_LIST}, digest
), keys AS (
    INSERT INTO reading_keys (edge_id, seq, ts, digest)
    SELECT edge_id, seq, "timestamp", digest FROM staged ORDER BY edge_id, seq
    ON CONFLICT (edge_id, seq) DO NOTHING
    RETURNING edge_id, seq
), ins AS (
    INSERT INTO sensor_readings ({_COLUMN_LIST})
    SELECT {_STAGED_LIST} FROM staged s JOIN keys k ON k.edge_id = s.edge_id AND k.seq = s.seq
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

_STORED_KEYS = """
SELECT k.edge_id, k.seq, k.ts, k.digest
FROM reading_keys k JOIN unnest(%s::text[], %s::bigint[]) AS q(edge_id, seq)
  ON k.edge_id = q.edge_id AND k.seq = q.seq
"""
_STORED_ROW = (
    f'SELECT machine_id, edge_id, seq, "timestamp", {_SENSOR_LIST}, custom_sensors, quality, '
    'detection FROM sensor_readings WHERE edge_id = %s AND seq = %s AND "timestamp" = %s LIMIT 1'
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def reading_digest(reading: Reading) -> int:
    """64 bits of BLAKE2b over what is stored of a reading besides its key: machine, time
    (microseconds), values, custom sensors, quality and detection, with sorted keys. Two
    deliveries of one reading digest alike however the sender ordered its JSON; a value
    that could not be read (None) counts as absent, as it is stored (NULL)."""
    values = reading.values
    if None in values.values():
        values = {name: value for name, value in values.items() if value is not None}
    data = orjson.dumps(
        (
            reading.machine_id,
            (reading.ts - _EPOCH) // _MICROSECOND,
            values,
            reading.custom,
            reading.quality,
            reading.detection,
        ),
        option=orjson.OPT_SORT_KEYS,
    )
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big", signed=True)


@dataclass(frozen=True, slots=True)
class Conflict:
    """A reading whose key ``(edge_id, seq)`` is already taken by other content.

    ``index``: its position in the readings given to ``store_readings``; ``detail``: both
    versions, ``{"stored": wire reading, "received": wire reading}``."""

    index: int
    reason: str
    detail: dict[str, Any]


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
    "int8",
]


def _orjson_text(obj: object) -> str:
    return orjson.dumps(obj).decode()


# Most readings have no custom sensors: one shared value instead of a dump per row.
_EMPTY_OBJECT = Jsonb({}, dumps=lambda _obj: "{}")


def _row(reading: Reading, digest: int) -> tuple[object, ...]:
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
        digest,
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
    digests = list(map(reading_digest, readings))
    unique, repeats = _one_version_per_key(readings)
    conflicts: list[Conflict] = []
    with conn.cursor() as cur:
        cur.execute(_CREATE_STAGING)  # type: ignore[arg-type]
        # Binary COPY: values go over as IEEE doubles, twice as fast as text on this path.
        with cur.copy(
            f"COPY {_STAGING} ({_COLUMN_LIST}, digest) FROM STDIN (FORMAT BINARY)"  # type: ignore[arg-type]
        ) as copy:
            copy.set_types(_COPY_TYPES)
            for i in unique:
                copy.write_row(_row(readings[i], digests[i]))
        cur.execute(_MERGE)  # type: ignore[arg-type]
        inserted = cur.fetchall()
        # The version each key of the batch has in the table now, where it is not the
        # batch's own first reading of that key.
        kept: dict[tuple[str, int], _Stored] = {}
        if len(inserted) < len(unique):
            kept = _stored_versions(cur, readings, digests, unique, inserted)
            for i in unique:
                _compare(i, readings, digests, kept, conflicts)
        for i, j in repeats:
            _compare(i, readings, digests, kept, conflicts, first=j)
        _update_totals(cur, inserted)
        if edge_backlog:
            _record_backlog(cur, edge_backlog)
        # Only rows stored now count: a redelivered reading adds nothing twice.
        by_key = {(readings[i].edge_id, readings[i].seq): readings[i] for i in unique}
        fresh = [by_key[(edge, seq)] for _, _, edge, seq, _ in inserted]
        _register_custom_sensors(cur, fresh)
        _store_anomalies(cur, fresh)
        # Delivered by PostgreSQL only if this transaction commits.
        notify_readings(cur, fresh)
    conflicts.sort(key=lambda c: c.index)
    return StoreResult(len(readings), len(inserted), tuple(conflicts))


@dataclass(frozen=True, slots=True)
class _Stored:
    ts: datetime
    digest: int | None
    reading: Reading | None  # None: not loaded (its row is gone)


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
    digests: list[int],
    kept: dict[tuple[str, int], _Stored],
    conflicts: list[Conflict],
    *,
    first: int | None = None,
) -> None:
    """Reading ``i`` against the version its key has in the table: the one stored before
    (``kept``), else the batch's first reading of the key (stored now)."""
    reading = readings[i]
    stored = kept.get((reading.edge_id, reading.seq))
    if stored is not None:
        if stored.digest != digests[i]:
            conflicts.append(
                _conflict(
                    i, reading, digests[i], stored.reading, stored.digest, stored_ts=stored.ts
                )
            )
    elif first is not None and digests[first] != digests[i]:
        conflicts.append(_conflict(i, reading, digests[i], readings[first], digests[first]))


def _stored_versions(
    cur: psycopg.Cursor,
    readings: Sequence[Reading],
    digests: list[int],
    unique: list[int],
    inserted: list[tuple[str, datetime, str, int, datetime]],
) -> dict[tuple[str, int], _Stored]:
    """For the staged readings whose key was already stored: the stored version (loaded
    only where it differs, to name it in the conflict)."""
    stored_now = {(edge, seq) for _, _, edge, seq, _ in inserted}
    taken = [i for i in unique if (readings[i].edge_id, readings[i].seq) not in stored_now]
    cur.execute(
        _STORED_KEYS,
        ([readings[i].edge_id for i in taken], [readings[i].seq for i in taken]),
    )
    existing = {(edge, seq): (ts, digest) for edge, seq, ts, digest in cur.fetchall()}
    kept: dict[tuple[str, int], _Stored] = {}
    for i in taken:
        reading = readings[i]
        key = (reading.edge_id, reading.seq)
        found = existing.get(key)
        if found is None:  # pruned by retention meanwhile: nothing to compare with
            continue
        ts, digest = found
        if digest == digests[i]:
            kept[key] = _Stored(ts, digest, reading)  # identical: the stored content
            continue
        stored = _load_stored(cur, reading.edge_id, reading.seq, ts)
        if digest is None and stored is not None:
            # A key from before digests were kept: digest the stored row itself.
            digest = reading_digest(stored)
        kept[key] = _Stored(ts, digest, stored)
    return kept


def stored_reading(conn: psycopg.Connection, edge_id: str, seq: int) -> Reading | None:
    """The reading stored under a key, as a ``Reading`` (None if there is none)."""
    found = conn.execute(
        "SELECT ts FROM reading_keys WHERE edge_id = %s AND seq = %s", (edge_id, seq)
    ).fetchone()
    if found is None:
        return None
    with conn.cursor() as cur:
        return _load_stored(cur, edge_id, seq, found[0])


def _load_stored(cur: psycopg.Cursor, edge_id: str, seq: int, ts: datetime) -> Reading | None:
    with cur.connection.cursor(row_factory=dict_row) as rows:
        rows.execute(_STORED_ROW, (edge_id, seq, ts))  # type: ignore[arg-type]
        row = rows.fetchone()
    if row is None:
        return None
    return _row_reading(row)


def _row_reading(row: dict[str, Any]) -> Reading:
    return Reading(
        row["machine_id"],
        row["edge_id"],
        row["seq"],
        row["timestamp"].astimezone(UTC),
        {name: row[name] for name in CORE_SENSOR_NAMES if row[name] is not None},
        row["custom_sensors"] or {},
        row["quality"] or {},
        row["detection"],
    )


def _conflict(
    index: int,
    received: Reading,
    received_digest: int,
    stored: Reading | None,
    stored_digest: int | None,
    *,
    stored_ts: datetime | None = None,
) -> Conflict:
    ts = stored.ts if stored is not None else stored_ts
    what = "another timestamp" if ts != received.ts else "other values"
    reason = (
        f"key conflict: edge_id {received.edge_id!r} seq {received.seq} is already stored "
        f"with {what}; stored ts {format_ts(ts) if ts else '?'} digest "
        f"{_hex(stored_digest)}, this message ts {format_ts(received.ts)} digest "
        f"{_hex(received_digest)}"
    )
    stored_doc: dict[str, Any] = (
        stored.to_wire()
        if stored is not None
        else {"edge_id": received.edge_id, "seq": received.seq, "ts": format_ts(ts) if ts else None}
    )
    return Conflict(index, reason, {"stored": stored_doc, "received": received.to_wire()})


def _hex(digest: int | None) -> str:
    return "?" if digest is None else f"{digest & (2**64 - 1):016x}"


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
        cur.execute(_REBUILD_ROLLUPS, {"start": start, "end": end})  # type: ignore[arg-type]
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
