"""GET /api/stats (and /api/v1/stats): totals, throughput, latency and latest values."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Response
from psycopg import Error as PsycopgError
from psycopg.rows import dict_row
from starlette.concurrency import run_in_threadpool

from cloud.api.auth import AnyUser
from cloud.api.deps import Services
from cloud.api.errors import ApiError
from cloud.rollup import percentile, recent
from shared.catalog import CORE_SENSOR_NAMES
from shared.message import format_ts

router = APIRouter(tags=["stats"])

WINDOW_S = 10
CACHE_S = 0.5
_SENSOR_COLUMNS = ", ".join(f"s.{name}" for name in CORE_SENSOR_NAMES)

_LATEST = f"""
SELECT t.machine_id, t.total, t.last_timestamp, r.*
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

_LAG = """
SELECT group_id, topic, kafka_partition, lag, updated_at FROM consumer_lag
WHERE updated_at > now() - interval '60 seconds' ORDER BY 1, 2, 3
"""

_EDGES = "SELECT edge_id, last_seen, backlog, backlog_reported_at FROM edges ORDER BY edge_id"


def _collect(services: Any) -> dict[str, Any]:
    with services.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_LATEST)  # type: ignore[arg-type]
        rows = cur.fetchall()
        count, buckets = recent(conn, WINDOW_S)
        cur.execute(_LAG)  # type: ignore[arg-type]
        lag_rows = cur.fetchall()
        cur.execute(_EDGES)  # type: ignore[arg-type]
        edge_rows = cur.fetchall()
    machines: dict[str, Any] = {}
    total = 0
    for row in rows:
        total += int(row["total"])
        latest = {name: row[name] for name in CORE_SENSOR_NAMES if row.get(name) is not None}
        machines[row["machine_id"]] = {
            "total_readings": int(row["total"]),
            "last_timestamp": format_ts(row["reading_ts"]) if row["reading_ts"] else None,
            "edge_id": row["edge_id"],
            "seq": row["seq"],
            "latest": latest,
            "custom": row["custom_sensors"] or {},
            "quality": row["quality"] or {},
            "detection": row["detection"],
        }

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    return {
        "total_readings": total,
        "messages_per_second": round(count / WINDOW_S, 2),
        "window_s": WINDOW_S,
        "latency_ms": {"p50": ms(percentile(buckets, 0.5)), "p95": ms(percentile(buckets, 0.95))},
        # Lag as last reported by the aggregators (every few seconds); None: no aggregator
        # has reported lately (direct-ingest mode, or all aggregators down).
        "consumer_lag": sum(int(r["lag"]) for r in lag_rows) if lag_rows else None,
        "consumer_lag_partitions": [
            {
                "group": r["group_id"],
                "topic": r["topic"],
                "partition": r["kafka_partition"],
                "lag": int(r["lag"]),
                "reported_at": format_ts(r["updated_at"]),
            }
            for r in lag_rows
        ],
        # Each rig's store-and-forward depth as reported with its latest batch.
        "edges": {
            r["edge_id"]: {
                "last_seen": format_ts(r["last_seen"]),
                "backlog": r["backlog"],
                "backlog_reported_at": format_ts(r["backlog_reported_at"])
                if r["backlog_reported_at"]
                else None,
            }
            for r in edge_rows
        },
        "machines": machines,
    }


@router.get("/api/stats", summary="Pipeline statistics and latest values per machine")
@router.get("/api/v1/stats", include_in_schema=False)
async def stats(services: Services, user: AnyUser) -> Response:
    """Any logged-in user; an operator assigned to some machines sees only theirs."""
    cache = services.stats_cache
    try:
        if cache.body is None:
            async with cache.lock:
                if cache.body is None:
                    await _refresh(services)
        elif time.monotonic() - cache.at > CACHE_S and not cache.lock.locked():
            # Stale: one request refreshes in the background, everyone is answered at once
            # from the previous snapshot (at most CACHE_S plus one query old).
            asyncio.get_running_loop().create_task(_refresh_locked(services))
        assert cache.body is not None and cache.doc is not None
        if user.machines is None:
            return Response(cache.body, media_type="application/json")
        doc = dict(cache.doc)
        doc["machines"] = {m: v for m, v in cache.doc["machines"].items() if user.may_see(m)}
        doc["total_readings"] = sum(v["total_readings"] for v in doc["machines"].values())
        # Which rig serves which machine is not recorded per edge: scoped users see none.
        doc["edges"] = {}
        return Response(orjson.dumps(doc), media_type="application/json")
    except PsycopgError as exc:
        raise ApiError(
            503, "$", f"database unavailable: {type(exc).__name__}", retry_after=5
        ) from None


async def _refresh(services: Services) -> None:
    """Many dashboards ask at once: one query per CACHE_S per API process answers them
    all (``computed_at`` says how fresh it is). orjson straight to bytes: FastAPI's
    generic encoder costs more than the query for 50 values per machine."""
    doc = await run_in_threadpool(_collect, services)
    doc["computed_at"] = format_ts(datetime.now(UTC))
    services.stats_cache.doc = doc
    services.stats_cache.body = orjson.dumps(doc)
    services.stats_cache.at = time.monotonic()


async def _refresh_locked(services: Services) -> None:
    cache = services.stats_cache
    if cache.lock.locked():
        return
    async with cache.lock:
        try:
            await _refresh(services)
        except PsycopgError:
            # Serving a snapshot older than the database outage would hide the outage.
            cache.body = None
