"""Per-second ingest statistics: throughput and end-to-end latency without scanning readings.

Writers add each committed batch to the row of the current second (same transaction);
readers sum the last few seconds. Latency percentiles come from fixed histogram buckets,
interpolated within the bucket, which is accurate to the bucket width.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from datetime import UTC, datetime

import psycopg

LATENCY_BOUNDS_MS: tuple[float, ...] = (
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    30_000,
    60_000,
    300_000,
    3_600_000,
    float("inf"),
)

_UPSERT = """
INSERT INTO ingest_rollup (second, readings, latency_buckets) VALUES (%s, %s, %s)
ON CONFLICT (second) DO UPDATE SET
    readings = ingest_rollup.readings + excluded.readings,
    latency_buckets = ARRAY(
        SELECT a + b FROM unnest(ingest_rollup.latency_buckets, excluded.latency_buckets)
        AS t(a, b))
"""


def histogram(latencies_ms: Iterable[float]) -> list[int]:
    counts = [0] * len(LATENCY_BOUNDS_MS)
    for value in latencies_ms:
        counts[bisect_left(LATENCY_BOUNDS_MS, max(0.0, value))] += 1
    return counts


def record_batch(cur: psycopg.Cursor, committed_at: datetime, timestamps: list[datetime]) -> None:
    """Add a batch of stored readings (their reading timestamps) to the current second."""
    if not timestamps:
        return
    latencies = [(committed_at - ts).total_seconds() * 1000.0 for ts in timestamps]
    second = committed_at.astimezone(UTC).replace(microsecond=0)
    cur.execute(_UPSERT, (second, len(timestamps), histogram(latencies)))


def percentile(buckets: list[int], q: float) -> float | None:
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for bound, count in zip(LATENCY_BOUNDS_MS, buckets, strict=True):
        if count and seen + count >= rank:
            upper = bound if bound != float("inf") else lower * 2 or 1.0
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
        lower = bound
    return lower


def recent(conn: psycopg.Connection, window_s: int) -> tuple[int, list[int]]:
    """Readings and latency buckets of the last ``window_s`` whole seconds."""
    row = conn.execute(
        "SELECT coalesce(sum(readings), 0), "
        "  (SELECT array_agg(s ORDER BY i) FROM (SELECT i, sum(b) AS s FROM ingest_rollup r2, "
        "   unnest(r2.latency_buckets) WITH ORDINALITY AS u(b, i) "
        "   WHERE r2.second >= now() - make_interval(secs => %s) GROUP BY i) x) "
        "FROM ingest_rollup WHERE second >= now() - make_interval(secs => %s)",
        (window_s, window_s),
    ).fetchone()
    if row is None or row[1] is None:
        return 0, [0] * len(LATENCY_BOUNDS_MS)
    return int(row[0]), [int(v) for v in row[1]]


def prune(conn: psycopg.Connection, keep_s: int = 86_400) -> None:
    conn.execute(
        "DELETE FROM ingest_rollup WHERE second < now() - make_interval(secs => %s)", (keep_s,)
    )
