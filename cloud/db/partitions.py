"""Time partitions of sensor_readings: one per UTC day, created ahead, dropped past retention.

Creating a partition never blocks ingest: the new table is filled with any rows the default
partition holds for its day, then attached (ATTACH PARTITION takes only a SHARE UPDATE
EXCLUSIVE lock on the parent). An advisory lock lets any number of API and aggregator
processes run maintenance concurrently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql

from cloud.rollup import prune
from shared.logs import log_event

log = logging.getLogger(__name__)

PARENT = "sensor_readings"
_LOCK_KEY = 0x52494750  # "RIGP"


@dataclass(frozen=True)
class MaintenanceResult:
    created: list[str]
    dropped: list[str]


def partition_name(day: date) -> str:
    return f"{PARENT}_{day:%Y%m%d}"


def existing_partitions(conn: psycopg.Connection) -> dict[str, date]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s",
        (PARENT,),
    ).fetchall()
    out = {}
    for (name,) in rows:
        suffix = name.removeprefix(f"{PARENT}_")
        if suffix.isdigit() and len(suffix) == 8:
            out[name] = datetime.strptime(suffix, "%Y%m%d").date()
    return out


def _create(conn: psycopg.Connection, day: date) -> str:
    name = partition_name(day)
    lo = datetime(day.year, day.month, day.day, tzinfo=UTC)
    hi = lo + timedelta(days=1)
    parent, child = sql.Identifier(PARENT), sql.Identifier(name)
    with conn.transaction():
        conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)").format(
                child, parent
            )
        )
        # Rows that arrived before the partition existed sit in the default partition.
        conn.execute(
            sql.SQL(
                'WITH moved AS (DELETE FROM {} WHERE "timestamp" >= %s AND '
                '"timestamp" < %s RETURNING *) INSERT INTO {} SELECT * FROM moved'
            ).format(sql.Identifier(f"{PARENT}_default"), child),
            (lo, hi),
        )
        conn.execute(
            sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
                parent, child, sql.Literal(lo), sql.Literal(hi)
            )
        )
    return name


def maintain_partitions(
    conninfo: str,
    *,
    now: datetime | None = None,
    ahead_days: int = 3,
    retention_days: int = 0,
) -> MaintenanceResult:
    """Create partitions from the oldest day with rows in the default partition (within
    retention) through ``ahead_days`` ahead; drop partitions entirely older than
    ``retention_days`` (0 keeps everything)."""
    now = now or datetime.now(UTC)
    today = now.astimezone(UTC).date()
    created: list[str] = []
    dropped: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        default = sql.Identifier(f"{PARENT}_default")
        try:
            existing = existing_partitions(conn)
            have = set(existing.values())
            oldest = conn.execute(
                sql.SQL('SELECT min("timestamp"), max("timestamp") FROM {}').format(default)
            ).fetchone()
            first = today
            last = today + timedelta(days=ahead_days)
            if oldest and oldest[0] is not None:
                first = min(first, oldest[0].astimezone(UTC).date())
                last = max(last, oldest[1].astimezone(UTC).date())
            if retention_days:
                first = max(first, today - timedelta(days=retention_days))
            day = first
            while day <= last:
                if day not in have:
                    created.append(_create(conn, day))
                day += timedelta(days=1)
            if retention_days:
                cutoff = today - timedelta(days=retention_days)
                for name, day in sorted(existing.items(), key=lambda kv: kv[1]):
                    if day + timedelta(days=1) <= cutoff:
                        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
                        dropped.append(name)
                cutoff_ts = datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC)
                conn.execute(
                    sql.SQL('DELETE FROM {} WHERE "timestamp" < %s').format(default),
                    (cutoff_ts,),
                )
                # The history rollups follow the rows they summarise.
                conn.execute("DELETE FROM sensor_minute_rollup WHERE minute < %s", (cutoff_ts,))
            prune(conn)
            conn.execute("DELETE FROM user_sessions WHERE expires_at <= now()")
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    if created or dropped:
        log_event(log, logging.INFO, "partitions maintained", created=created, dropped=dropped)
    return MaintenanceResult(created, dropped)
