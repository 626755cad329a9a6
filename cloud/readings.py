"""Reading rows back out of PostgreSQL in the API's JSON shape (the same shape the live
stream pushes, so a dashboard merges loaded and pushed readings without translation)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from shared.catalog import CORE_SENSOR_NAMES
from shared.message import format_ts

_COLUMNS = ", ".join(f'"{c}"' for c in CORE_SENSOR_NAMES)
_SELECT = (
    f'SELECT machine_id, edge_id, seq, "timestamp", {_COLUMNS}, custom_sensors, quality, '
    "detection FROM sensor_readings"
)
LATEST_SQL = f'{_SELECT} WHERE machine_id = %s ORDER BY "timestamp" DESC LIMIT %s'
ONE_SQL = f"{_SELECT} WHERE edge_id = %s AND seq = %s LIMIT 1"


def reading_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "machine_id": row["machine_id"],
        "edge_id": row["edge_id"],
        "seq": row["seq"],
        "timestamp": format_ts(row["timestamp"]),
        "values": {name: row[name] for name in CORE_SENSOR_NAMES if row[name] is not None},
        "custom_sensors": row["custom_sensors"] or {},
        "quality": row["quality"] or {},
        "detection": row["detection"],
    }


def latest_readings(conn: psycopg.Connection, machine_id: str, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` readings of a machine, oldest first (chart order)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(LATEST_SQL, (machine_id, limit))
        rows = cur.fetchall()
    return [reading_json(row) for row in reversed(rows)]


async def load_reading(
    conn: psycopg.AsyncConnection[Any], edge_id: str, seq: int
) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(ONE_SQL, (edge_id, seq))
        row = await cur.fetchone()
    return {"type": "reading", **reading_json(row)} if row else None
