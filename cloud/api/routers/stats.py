"""GET /api/stats (and /api/v1/stats): totals, throughput, latency and latest values."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from psycopg import Error as PsycopgError
from psycopg.rows import dict_row
from starlette.concurrency import run_in_threadpool

from cloud.api.deps import Services
from cloud.api.errors import ApiError
from shared.catalog import CORE_SENSOR_NAMES
from shared.message import format_ts

router = APIRouter(tags=["stats"])

WINDOW_S = 10
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

_RECENT = """
SELECT count(*) AS n,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM created_at - "timestamp"))
           AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM created_at - "timestamp"))
           AS p95
FROM sensor_readings
WHERE created_at > clock_timestamp() - make_interval(secs => %s)
"""


def _collect(services: Any) -> dict[str, Any]:
    with services.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_LATEST)  # type: ignore[arg-type]
        rows = cur.fetchall()
        cur.execute(_RECENT, (WINDOW_S,))
        recent = cur.fetchone() or {"n": 0, "p50": None, "p95": None}
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
        return None if value is None else round(float(value) * 1000.0, 1)

    return {
        "total_readings": total,
        "messages_per_second": round(int(recent["n"]) / WINDOW_S, 2),
        "window_s": WINDOW_S,
        "latency_ms": {"p50": ms(recent["p50"]), "p95": ms(recent["p95"])},
        "machines": machines,
    }


@router.get("/api/stats", summary="Pipeline statistics and latest values per machine")
@router.get("/api/v1/stats", include_in_schema=False)
async def stats(services: Services) -> dict[str, Any]:
    try:
        return await run_in_threadpool(_collect, services)
    except PsycopgError as exc:
        raise ApiError(
            503, "$", f"database unavailable: {type(exc).__name__}", retry_after=5
        ) from None
