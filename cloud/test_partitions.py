"""Daily partitions of sensor_readings: created ahead, rows never rejected for a missing
partition, retention drops whole old days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from cloud.db.partitions import existing_partitions, maintain_partitions
from cloud.storage import store_readings
from shared.message import Reading

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _store(url: str, *timestamps: datetime) -> None:
    readings = [Reading("A", "e1", i, ts, {"rpm": 3000.0}) for i, ts in enumerate(timestamps)]
    with psycopg.connect(url) as conn, conn.transaction():
        store_readings(conn, readings)


def _where(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tableoid::regclass::text, count(*) FROM sensor_readings GROUP BY 1"
        ).fetchall()
    return dict(rows)


def test_partitions_ahead_default_rows_moved_and_retention(database_url: str) -> None:
    # Before any maintenance a reading still goes in: the default partition takes it.
    _store(database_url, NOW - timedelta(days=2))
    assert _where(database_url) == {"sensor_readings_default": 1}

    result = maintain_partitions(database_url, now=NOW, ahead_days=3, retention_days=30)
    assert result.created == [f"sensor_readings_2026112{d}" for d in range(0, 6)]
    assert _where(database_url) == {"sensor_readings_20261120": 1}  # moved out of default
    # Idempotent, and safe to run from several processes.
    assert maintain_partitions(database_url, now=NOW, ahead_days=3).created == []

    _store(database_url, NOW, NOW + timedelta(days=1))
    assert _where(database_url)["sensor_readings_20261122"] == 1
    assert _where(database_url)["sensor_readings_20261123"] == 1

    later = NOW + timedelta(days=32)
    result = maintain_partitions(database_url, now=later, ahead_days=1, retention_days=30)
    assert "sensor_readings_20261120" in result.dropped
    assert "sensor_readings_20261123" in result.dropped
    with psycopg.connect(database_url) as conn:
        names = existing_partitions(conn)
        count = conn.execute("SELECT count(*) FROM sensor_readings").fetchone()[0]
    assert min(names.values()) >= (later - timedelta(days=30)).date()
    assert count == 0


def test_redelivered_reading_is_still_dropped_by_key(database_url: str) -> None:
    maintain_partitions(database_url, now=NOW)
    reading = Reading("A", "e1", 7, NOW, {"rpm": 1.0})
    with psycopg.connect(database_url) as conn, conn.transaction():
        first = store_readings(conn, [reading])
        second = store_readings(conn, [reading, reading])
    assert (first.inserted, second.inserted, second.duplicates) == (1, 0, 2)
