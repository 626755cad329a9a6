"""GET /api/stats (and /api/v1/stats): totals, throughput, latency and latest values."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Response
from psycopg import Error as PsycopgError

from cloud.api.deps import AppServices, Database, Db, Services
from cloud.api.guards import AnyUser
from cloud.api.schemas import StatsOut
from cloud.ingest_stats import percentile
from cloud.store.stats import StatsSnapshot, stats_snapshot
from shared.message import format_ts

router = APIRouter(tags=["stats"])

WINDOW_S = 10
CACHE_S = 0.5


def _document(snapshot: StatsSnapshot) -> dict[str, Any]:
    """The answer for an unscoped user (StatsOut); scoped users get it filtered."""

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    buckets = snapshot.latency_buckets
    return {
        "total_readings": sum(m.total for m in snapshot.machines),
        "messages_per_second": round(snapshot.window_count / WINDOW_S, 2),
        "window_s": WINDOW_S,
        "latency_ms": {"p50": ms(percentile(buckets, 0.5)), "p95": ms(percentile(buckets, 0.95))},
        # Lag as last reported by the aggregators (every few seconds); None: no aggregator
        # has reported lately (direct-ingest mode, or all aggregators down).
        "consumer_lag": sum(r.lag for r in snapshot.lag) if snapshot.lag else None,
        "consumer_lag_partitions": [
            {
                "group": r.group_id,
                "topic": r.topic,
                "partition": r.kafka_partition,
                "lag": r.lag,
                "reported_at": format_ts(r.updated_at),
            }
            for r in snapshot.lag
        ],
        # Each rig's store-and-forward depth as reported with its latest batch.
        "edges": {
            e.edge_id: {
                "last_seen": format_ts(e.last_seen),
                "backlog": e.backlog,
                "backlog_reported_at": format_ts(e.backlog_reported_at)
                if e.backlog_reported_at
                else None,
            }
            for e in snapshot.edges
        },
        "machines": {
            m.machine_id: {
                "total_readings": m.total,
                "last_timestamp": format_ts(m.reading_ts) if m.reading_ts else None,
                "edge_id": m.edge_id,
                "seq": m.seq,
                "latest": m.values,
                "custom": m.custom,
                "quality": m.quality,
                "detection": m.detection,
            }
            for m in snapshot.machines
        },
        "computed_at": format_ts(datetime.now(UTC)),
    }


@router.get(
    "/api/stats",
    response_model=StatsOut,
    summary="Pipeline statistics and latest values per machine",
)
@router.get("/api/v1/stats", response_model=StatsOut, include_in_schema=False)
async def stats(services: Services, db: Db, user: AnyUser) -> Response:
    """Any logged-in user; an operator assigned to some machines sees only theirs.

    orjson into a ready ``Response`` (FastAPI passes it through): the generic encoder costs
    more than the query for 50 values per machine.
    """
    cache = services.stats_cache
    if cache.body is None:
        async with cache.lock:
            if cache.body is None:
                await _refresh(services, db)
    elif time.monotonic() - cache.at > CACHE_S and not cache.lock.locked():
        # Stale: one request refreshes in the background, everyone is answered at once
        # from the previous snapshot (at most CACHE_S plus one query old).
        asyncio.get_running_loop().create_task(_refresh_locked(services, db))
    assert cache.body is not None and cache.doc is not None
    if user.machines is None:
        return Response(cache.body, media_type="application/json")
    doc = dict(cache.doc)
    doc["machines"] = {m: v for m, v in cache.doc["machines"].items() if user.may_see(m)}
    doc["total_readings"] = sum(v["total_readings"] for v in doc["machines"].values())
    # Which rig serves which machine is not recorded per edge: scoped users see none.
    doc["edges"] = {}
    return Response(orjson.dumps(doc), media_type="application/json")


async def _refresh(services: AppServices, db: Database) -> None:
    """Many dashboards ask at once: one query per CACHE_S per API process answers them
    all (``computed_at`` says how fresh it is)."""
    doc = _document(await db.run(stats_snapshot, WINDOW_S))
    services.stats_cache.doc = doc
    services.stats_cache.body = orjson.dumps(doc)
    services.stats_cache.at = time.monotonic()


async def _refresh_locked(services: AppServices, db: Database) -> None:
    cache = services.stats_cache
    if cache.lock.locked():
        return
    async with cache.lock:
        try:
            await _refresh(services, db)
        except PsycopgError:
            # Serving a snapshot older than the database outage would hide the outage.
            cache.body = None
