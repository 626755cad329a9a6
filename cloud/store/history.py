"""One sensor's history downsampled to time buckets (min/max/avg/count per bucket).

Where the buckets come from is decided here, once: buckets of a minute or more come from the
per-minute rollups (60x fewer rows than raw 1 Hz data, and min/max/avg merge exactly), shorter
ones from the raw readings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from cloud.fielderror import FieldError
from shared.catalog import SENSOR_INDEX
from shared.message import CUSTOM_NAME_RE

MAX_POINTS = 5000
DEFAULT_SPAN = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class HistoryWindow:
    """What a history query reads: ``[start, end)`` in buckets of ``step``."""

    sensor: str
    start: datetime
    end: datetime
    step: timedelta
    resolution: Literal["minute", "raw"]


@dataclass(frozen=True, slots=True)
class Bucket:
    t: datetime
    min: float
    max: float
    avg: float
    n: int


def plan_history(
    sensor: str,
    start: datetime | None,
    end: datetime | None,
    points: int,
    *,
    now: datetime | None = None,
) -> HistoryWindow:
    """The window and bucket size for at most ``points`` buckets. Naive times are UTC (like
    reading timestamps); no ``end``: now; no ``start``: an hour before ``end``. Buckets of
    whole minutes widen the range to whole minutes."""
    if sensor not in SENSOR_INDEX and not CUSTOM_NAME_RE.fullmatch(sensor):
        raise FieldError("sensor", f"{sensor!r} is neither a core nor a custom sensor name")
    if not 1 <= points <= MAX_POINTS:
        raise FieldError("points", f"must be 1 to {MAX_POINTS}")
    end = end or now or datetime.now(UTC)
    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    try:
        start = start or end - DEFAULT_SPAN
    except OverflowError:
        raise FieldError("to", "too early to leave room for the default hour before it") from None
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    if start >= end:
        raise FieldError("from", "must be before 'to'")
    step = max(timedelta(milliseconds=1), (end - start) / points)
    if sensor in SENSOR_INDEX and step >= timedelta(minutes=1):
        step = timedelta(minutes=math.ceil(step.total_seconds() / 60))
        return HistoryWindow(sensor, start.replace(second=0, microsecond=0), end, step, "minute")
    return HistoryWindow(sensor, start, end, step, "raw")


def _query(window: HistoryWindow) -> sql.Composed:
    sensor = window.sensor
    if window.resolution == "minute":
        return sql.SQL(
            "SELECT date_bin(%(step)s, minute, %(start)s) AS t, min({lo}) AS min, "
            "max({hi}) AS max, sum({total}) / nullif(sum({n}), 0) AS avg, sum({n}) AS n "
            "FROM sensor_minute_rollup "
            "WHERE machine_id = %(machine)s AND minute >= %(start)s AND minute < %(end)s "
            "GROUP BY 1 HAVING sum({n}) > 0 ORDER BY 1"
        ).format(
            lo=sql.Identifier(f"{sensor}_min"),
            hi=sql.Identifier(f"{sensor}_max"),
            total=sql.Identifier(f"{sensor}_sum"),
            n=sql.Identifier(f"{sensor}_n"),
        )
    value = (
        sql.Identifier(sensor)
        if sensor in SENSOR_INDEX
        else sql.SQL("(custom_sensors->>{})::float8").format(sql.Literal(sensor))
    )
    return sql.SQL(
        'SELECT date_bin(%(step)s, "timestamp", %(start)s) AS t, min({v}) AS min, '
        "max({v}) AS max, avg({v}) AS avg, count({v}) AS n FROM sensor_readings "
        'WHERE machine_id = %(machine)s AND "timestamp" >= %(start)s AND "timestamp" < %(end)s '
        "GROUP BY 1 HAVING count({v}) > 0 ORDER BY 1"
    ).format(v=value)


def history_buckets(
    conn: psycopg.Connection, machine_id: str, window: HistoryWindow
) -> list[Bucket]:
    """The non-empty buckets of ``window`` for ``machine_id``, oldest first."""
    params = {"step": window.step, "start": window.start, "end": window.end, "machine": machine_id}
    with conn.cursor(row_factory=class_row(Bucket)) as cur:
        cur.execute(_query(window), params)
        return cur.fetchall()
