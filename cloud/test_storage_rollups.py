"""The per-minute rollups are computed by ``store_readings`` from the batch it stores
(``minute_rollup_rows``, vectorised) instead of by SQL aggregates over the inserted rows:
after random batches (several machines and minutes, nulls, missing sensors, redeliveries,
repeated keys with other content) they must equal what SQL's min/max/sum/count give when the
rollups are rebuilt from the stored rows (``rebuild_minute_rollups``)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from cloud.storage import rebuild_minute_rollups, store_readings
from shared.catalog import CORE_SENSOR_NAMES
from shared.message import Reading

pytestmark = pytest.mark.integration


def _reading(rng: random.Random, seq: int, start: datetime) -> Reading:
    values: dict[str, float | None] = {}
    for name in rng.sample(CORE_SENSOR_NAMES, rng.randint(1, len(CORE_SENSOR_NAMES))):
        roll = rng.random()
        values[name] = (
            None
            if roll < 0.1
            else rng.choice([0.0, -0.0, 1e12, -1e12, 5e-324])
            if roll < 0.2
            else rng.uniform(-1e3, 1e3)
        )
    ts = start + timedelta(seconds=rng.uniform(0, 240))
    return Reading(rng.choice("ABC"), rng.choice(["e1", "e2"]), seq, ts, values)


def _rollups(conn: psycopg.Connection) -> dict[tuple[str, datetime], tuple[object, ...]]:
    rows = conn.execute("SELECT * FROM sensor_minute_rollup ORDER BY 1, 2").fetchall()
    return {(row[0], row[1]): tuple(row[2:]) for row in rows}


def _close(a: object, b: object) -> bool:
    # A sensor with no value in a minute: the merge has always added coalesce(sum, 0), the
    # rebuild leaves SQL's NULL. Sums of +-1e12 and small values differ by rounding with the
    # order of addition (SQL's order is unspecified too).
    a, b = (0.0 if a is None else a), (0.0 if b is None else b)
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-2)
    return a == b


def test_incremental_rollups_equal_the_sql_rebuild(database_url: str) -> None:
    rng = random.Random(7)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    batches = [[_reading(rng, 100 * b + i, start) for i in range(60)] for b in range(4)]
    # A redelivered batch, and a batch reusing stored keys with other content (conflicts):
    # neither may count twice.
    batches.append(batches[1])
    batches.append([_reading(rng, r.seq, start) for r in batches[2][:20]])
    with psycopg.connect(database_url) as conn:
        for batch in batches:
            with conn.transaction():
                store_readings(conn, batch)
        incremental = _rollups(conn)
        with conn.transaction():
            rebuild_minute_rollups(conn, start, start + timedelta(minutes=6))
        rebuilt = _rollups(conn)
    assert incremental.keys() == rebuilt.keys() and len(rebuilt) > 3
    for key, row in rebuilt.items():
        assert all(_close(a, b) for a, b in zip(incremental[key], row, strict=True)), key
