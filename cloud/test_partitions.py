"""Daily partitions of sensor_readings: created ahead and for days that hold rows, rows never
rejected for a missing partition, retention drops whole old days and their keys; a run is
bounded whatever timestamps the default partition holds, and only one process runs it."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from cloud.db.partitions import (
    MaintenanceThread,
    existing_partitions,
    maintain_partitions,
    partition_name,
)
from cloud.storage import store_readings
from shared.message import Reading
from tests.support.processes import Service, free_port, http_ok, wait_until
from tools.kafka_broker import KafkaBroker

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _store(url: str, *timestamps: datetime, first_seq: int = 0) -> None:
    readings = [
        Reading("A", "e1", first_seq + i, ts, {"rpm": 3000.0}) for i, ts in enumerate(timestamps)
    ]
    with psycopg.connect(url) as conn, conn.transaction():
        store_readings(conn, readings)


def _where(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tableoid::regclass::text, count(*) FROM sensor_readings GROUP BY 1"
        ).fetchall()
    return dict(rows)


def _insert_raw(url: str, *timestamps: str) -> None:
    """Rows as a pre-window installation (or a bulk load) left them: straight into the table,
    past every check of the ingest path."""
    with psycopg.connect(url) as conn, conn.transaction():
        for i, ts in enumerate(timestamps):
            conn.execute(
                'INSERT INTO sensor_readings (edge_id, seq, machine_id, "timestamp", rpm) '
                "VALUES ('raw', %s, 'A', %s, 1.0)",
                (i, ts),
            )


def test_partitions_ahead_default_rows_moved_and_retention(database_url: str) -> None:
    # Before any maintenance a reading still goes in: the default partition takes it.
    _store(database_url, NOW - timedelta(days=2))
    assert _where(database_url) == {"sensor_readings_default": 1}

    result = maintain_partitions(database_url, now=NOW, ahead_days=3, retention_days=30)
    # Today .. today + 3, and the one earlier day that holds a row; not the empty day between.
    assert sorted(result.created) == [f"sensor_readings_2026112{d}" for d in (0, 2, 3, 4, 5)]
    assert _where(database_url) == {"sensor_readings_20261120": 1}  # moved out of default
    # Idempotent, and safe to run from several processes.
    assert maintain_partitions(database_url, now=NOW, ahead_days=3).created == []

    _store(database_url, NOW, NOW + timedelta(days=1), first_seq=1)
    assert _where(database_url)["sensor_readings_20261122"] == 1
    assert _where(database_url)["sensor_readings_20261123"] == 1

    later = NOW + timedelta(days=32)
    result = maintain_partitions(database_url, now=later, ahead_days=1, retention_days=30)
    assert "sensor_readings_20261120" in result.dropped
    assert "sensor_readings_20261123" in result.dropped
    with psycopg.connect(database_url) as conn:
        names = existing_partitions(conn)
        count = conn.execute("SELECT count(*) FROM sensor_readings").fetchone()[0]
        keys = conn.execute("SELECT count(*) FROM reading_keys").fetchone()[0]
    assert min(names.values()) >= (later - timedelta(days=30)).date()
    assert count == 0
    assert keys == 0  # the keys of dropped days go with them


def test_redelivered_reading_is_still_dropped_by_key(database_url: str) -> None:
    maintain_partitions(database_url, now=NOW)
    reading = Reading("A", "e1", 7, NOW, {"rpm": 1.0})
    with psycopg.connect(database_url) as conn, conn.transaction():
        first = store_readings(conn, [reading])
        second = store_readings(conn, [reading, reading])
    assert (first.inserted, second.inserted, second.duplicates) == (1, 0, 2)


def test_far_past_and_future_rows_get_no_partitions_and_runs_are_bounded(
    database_url: str,
) -> None:
    now = datetime.now(UTC)
    today = now.date()
    # Garbage clocks, as an unchecked Modbus register or a hostile client once wrote them:
    # year 9999 (2.9 million days ahead), year 1, and 1,000 days back (outside 400).
    _insert_raw(
        database_url,
        "9999-12-31T00:00:00Z",
        "0001-01-01T00:00:00Z",
        (now - timedelta(days=1000)).isoformat(),
    )
    # And 40 distinct days of genuine backfill inside the window.
    backfill = [now - timedelta(days=10 + d) for d in range(40)]
    _store(database_url, *backfill, first_seq=100)

    first = maintain_partitions(database_url, ahead_days=3, max_create=31)
    assert len(first.created) == 31, first
    assert first.pending == 40 + 4 - 31
    assert first.outside_window == 3
    # Today .. today + 3 come first, then the newest days that hold rows.
    assert first.created[:4] == [partition_name(today + timedelta(days=d)) for d in range(4)]
    assert partition_name((now - timedelta(days=10)).date()) in first.created

    second = maintain_partitions(database_url, ahead_days=3, max_create=31)
    assert len(second.created) == 13 and second.pending == 0
    assert maintain_partitions(database_url, ahead_days=3).created == []

    with psycopg.connect(database_url) as conn:
        names = existing_partitions(conn)
        default = conn.execute(
            'SELECT count(*), min("timestamp"), max("timestamp") FROM sensor_readings_default'
        ).fetchone()
    assert len(names) == 44
    assert min(names.values()) >= (now - timedelta(days=400)).date()
    assert max(names.values()) == today + timedelta(days=3)
    # The outliers stay where they are: in the default partition, reported, harmless.
    assert default[0] == 3
    assert default[1].year == 1 and default[2].year == 9999
    assert all(count == 1 for name, count in _where(database_url).items() if name in names)


def test_a_second_process_skips_the_run_instead_of_waiting(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (0x52494750,))
        result = maintain_partitions(database_url, now=NOW)
        assert result.skipped and result.created == []
        holder.execute("SELECT pg_advisory_unlock(%s)", (0x52494750,))
    assert not maintain_partitions(database_url, now=NOW).skipped


def test_maintenance_thread_outlives_failures() -> None:
    calls: list[int] = []
    done = threading.Event()

    def flaky() -> object:
        calls.append(1)
        if len(calls) < 3:
            raise psycopg.OperationalError("database is starting up")
        done.set()
        return None

    thread = MaintenanceThread(flaky, interval_s=3600, retry_s=0.01).start()
    try:
        wait_until(done.is_set, 30, "maintenance to succeed after two failures")
    finally:
        thread.stop()
    assert len(calls) == 3


def _partition_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        return len(existing_partitions(conn))


def test_serve_listens_at_once_and_maintains_in_the_background(
    database_url: str, log_dir: Path
) -> None:
    now = datetime.now(UTC)
    _insert_raw(database_url, "9999-12-31T00:00:00Z")
    _store(database_url, *[now - timedelta(days=10 + d) for d in range(40)], first_seq=100)
    port = free_port()
    api = Service(
        "api", ["cloud.cli", "serve", "--port", str(port)], log_dir, {"DATABASE_URL": database_url}
    ).start()
    try:
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 60, "the API", services=[api]
        )
        # 44 partitions take two runs of at most 31; the second follows the first by itself.
        wait_until(
            lambda: _partition_count(database_url) == 44,
            120,
            "background maintenance to create every partition",
            services=[api],
        )
    finally:
        api.stop()


def test_the_aggregator_maintains_partitions_on_a_thread_of_its_own(
    database_url: str, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    from cloud.aggregator import Aggregator

    aggregator = Aggregator(
        kafka_broker.bootstrap,
        database_url,
        topic=kafka_topic,
        group=f"g-{kafka_topic}",
        maintenance=lambda: maintain_partitions(database_url, ahead_days=2),
    )
    stop = threading.Event()
    thread = threading.Thread(target=aggregator.run, args=(stop,))
    thread.start()
    try:
        wait_until(lambda: _partition_count(database_url) == 3, 60, "today .. today + 2")
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
