"""Time partitions of sensor_readings: one per UTC day, created ahead, dropped past retention.

Creating a partition never blocks ingest: the new table is filled with any rows the default
partition holds for its day, then attached (ATTACH PARTITION takes only a SHARE UPDATE
EXCLUSIVE lock on the parent). A run is bounded whatever the data: it creates partitions
only for today .. today + ahead and for days that hold rows in the default partition inside
the acceptance window, at most ``max_create`` per run (the next run continues). Rows outside
the window (a device clock reading garbage before the window was enforced) stay in the
default partition and are reported, never given a partition each. Any number of API and
aggregator processes may run it: a try-lock makes all but one skip the run, and it runs on
a background thread of its own, never on the consume loop or before the API listens.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql

from cloud.ingest_stats import prune
from shared.logs import log_event
from shared.message import DEFAULT_WINDOW, TimeWindow

log = logging.getLogger(__name__)

PARENT = "sensor_readings"
DEFAULT_PARTITION = f"{PARENT}_default"
_LOCK_KEY = 0x52494750  # "RIGP"
# Each new partition costs a CREATE, a move out of the default partition and an ATTACH
# (which scans the default partition): a month of them is seconds, not hours.
MAX_CREATE_PER_RUN = 31
IDEMPOTENCY_HOURS = 24


@dataclass(frozen=True)
class MaintenanceResult:
    created: list[str]
    dropped: list[str]
    skipped: bool = False  # another process held the maintenance lock
    pending: int = 0  # days that hold rows but wait for a later run (max_create reached)
    outside_window: int = 0  # rows in the default partition outside the acceptance window
    errors: list[str] = field(default_factory=list)


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


def _days_with_rows(conn: psycopg.Connection, lo: datetime, hi: datetime) -> list[date]:
    """UTC days of the rows in the default partition within [lo, hi), newest first (recent
    days are the ones dashboards read)."""
    rows = conn.execute(
        sql.SQL(
            "SELECT DISTINCT (\"timestamp\" AT TIME ZONE 'UTC')::date FROM {} "
            'WHERE "timestamp" >= %s AND "timestamp" < %s ORDER BY 1 DESC'
        ).format(sql.Identifier(DEFAULT_PARTITION)),
        (lo, hi),
    ).fetchall()
    return [day for (day,) in rows]


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def maintain_partitions(
    conninfo: str,
    *,
    now: datetime | None = None,
    ahead_days: int = 3,
    retention_days: int = 0,
    window: TimeWindow = DEFAULT_WINDOW,
    max_create: int = MAX_CREATE_PER_RUN,
) -> MaintenanceResult:
    """Create the partitions of today .. today + ``ahead_days`` and of the days inside the
    acceptance ``window`` (and retention) that hold rows in the default partition, at most
    ``max_create`` per run; drop partitions entirely older than ``retention_days`` (0 keeps
    everything) with their keys; prune expired sessions and idempotency keys.

    Returns at once with ``skipped`` when another process is maintaining."""
    now = now or datetime.now(UTC)
    today = now.astimezone(UTC).date()
    created: list[str] = []
    dropped: list[str] = []
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()
        if not got or not got[0]:
            return MaintenanceResult([], [], skipped=True)
        try:
            have = set(existing_partitions(conn).values())
            first_day = (now - window.max_age).astimezone(UTC).date()
            if retention_days:
                first_day = max(first_day, today - timedelta(days=retention_days))
            last_day = max(today + timedelta(days=ahead_days), (now + window.max_ahead).date())
            lo, hi = _midnight(first_day), _midnight(last_day + timedelta(days=1))
            wanted = [today + timedelta(days=d) for d in range(ahead_days + 1)]
            wanted += [d for d in _days_with_rows(conn, lo, hi) if d not in wanted]
            missing = [d for d in wanted if d not in have]
            for day in missing[:max_create]:
                created.append(_create(conn, day))
            pending = max(0, len(missing) - max_create)
            outside = conn.execute(
                sql.SQL(
                    'SELECT count(*) FROM {} WHERE "timestamp" < %s OR "timestamp" >= %s'
                ).format(sql.Identifier(DEFAULT_PARTITION)),
                (lo, hi),
            ).fetchone()
            outside_window = int(outside[0]) if outside else 0
            if retention_days:
                dropped = _apply_retention(conn, today - timedelta(days=retention_days))
            prune(conn)
            conn.execute("DELETE FROM user_sessions WHERE expires_at <= now()")
            conn.execute(
                "DELETE FROM ingest_idempotency WHERE created_at < now() - make_interval("
                "hours => %s)",
                (IDEMPOTENCY_HOURS,),
            )
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    if created or dropped or pending:
        log_event(
            log,
            logging.INFO,
            "partitions maintained",
            created=created,
            dropped=dropped,
            pending_days=pending,
        )
    if outside_window:
        log_event(
            log,
            logging.WARNING,
            "rows outside the acceptance window stay in the default partition",
            rows=outside_window,
            window_start=lo.isoformat(),
            window_end=hi.isoformat(),
        )
    return MaintenanceResult(created, dropped, pending=pending, outside_window=outside_window)


def _apply_retention(conn: psycopg.Connection, cutoff: date) -> list[str]:
    dropped: list[str] = []
    for name, day in sorted(existing_partitions(conn).items(), key=lambda kv: kv[1]):
        if day + timedelta(days=1) <= cutoff:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
            dropped.append(name)
    cutoff_ts = _midnight(cutoff)
    conn.execute(
        sql.SQL('DELETE FROM {} WHERE "timestamp" < %s').format(sql.Identifier(DEFAULT_PARTITION)),
        (cutoff_ts,),
    )
    # The keys and history rollups follow the rows they stand for (BRIN on ts: a range
    # delete that reads only the old blocks).
    conn.execute("DELETE FROM reading_keys WHERE ts < %s", (cutoff_ts,))
    conn.execute("DELETE FROM sensor_minute_rollup WHERE minute < %s", (cutoff_ts,))
    return dropped


class MaintenanceThread:
    """Runs ``maintain`` now and then every ``interval_s`` on a daemon thread of its own
    (with its own connection), so neither a consume loop nor the API's start-up ever waits
    for it. A failure is logged and retried after ``retry_s``; nothing it raises escapes."""

    def __init__(
        self,
        maintain: Callable[[], object],
        *,
        interval_s: float = 3600.0,
        retry_s: float = 30.0,
        name: str = "partition-maintenance",
    ) -> None:
        self._maintain = maintain
        self.interval_s = interval_s
        self.retry_s = retry_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.runs = 0
        self.last_result: object = None

    def start(self) -> MaintenanceThread:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            delay = self.interval_s
            try:
                self.last_result = self._maintain()
                if getattr(self.last_result, "pending", 0):
                    delay = min(delay, 1.0)  # more days wait: continue soon, still bounded
            except Exception as exc:  # the thread must outlive any failure
                delay = self.retry_s
                log_event(
                    log,
                    logging.WARNING,
                    "partition maintenance failed; will retry",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=delay,
                )
            self.runs += 1
            self._stop.wait(delay)
