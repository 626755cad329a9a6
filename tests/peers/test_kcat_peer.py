"""The aggregator against kcat, a Kafka client that is not librdkafka-in-Python nor ours
(Debian package ``kcat``, installed by ``make system-deps``): readings kcat produces into the
topic the aggregator consumes are stored once (ISO, epoch-millisecond and epoch-second
timestamps alike); kcat's poison messages are dead-lettered with their key and whole payload,
read back from the dead-letter topic by kcat, and the one whose cause is fixed (a backlog
older than the acceptance window, the window widened) is stored by
``rig-cloud dead-letters replay`` while the undecodable one stays with its reason."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from cloud.aggregator import Aggregator
from cloud.cli import main as rig_cloud
from shared.message import TimeWindow, format_ts
from tests.support.processes import wait_until
from tools.kafka_broker import KafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _kcat() -> str:
    found = shutil.which("kcat")
    if found is None:
        pytest.fail("kcat is not installed: run `make system-deps` (Debian package kcat)")
    return found


def _produce(bootstrap: str, topic: str, messages: list[tuple[str, str]]) -> None:
    """key|value lines on kcat's stdin; kcat waits for the broker before it exits."""
    lines = "".join(f"{key}|{value}\n" for key, value in messages)
    subprocess.run(
        [_kcat(), "-b", bootstrap, "-P", "-t", topic, "-K", "|"],
        input=lines.encode(),
        check=True,
        timeout=60,
    )


def _consume(bootstrap: str, topic: str) -> list[tuple[str, str]]:
    """Every message of the topic, as key and value, read by kcat (-e: exit at the end)."""
    command = [_kcat(), "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q"]
    out = subprocess.run(
        [*command, "-f", "%k\\t%s\\n"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    pairs = [line.split("\t", 1) for line in out.splitlines() if "\t" in line]
    return [(key, value) for key, value in pairs]


def test_kcat_readings_are_stored_and_its_poison_is_replayed_after_the_fix(
    database_url: str,
    kafka_broker: KafkaBroker,
    kafka_topic: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    millis = int(now.timestamp() * 1000)

    def doc(seq: int, ts: object, machine: str = "A", **values: float) -> str:
        return json.dumps(
            {"machine_id": machine, "edge_id": "kcat-1", "seq": seq, "ts": ts, "values": values}
        )

    first = doc(1, format_ts(now), temperature=70.5)
    backlog_ts = int((now - timedelta(days=45)).timestamp() * 1000)
    messages = [
        ("A", first),
        ("A", doc(2, millis, rpm=1500.0)),  # Node-RED style epoch milliseconds
        ("B", doc(3, millis // 1000, "B", pressure=10.1)),  # epoch seconds
        ("A", first),  # a redelivery: stored once
        ("A", doc(4, backlog_ts, temperature=61.0)),  # 45 days old: outside a 30-day window
        ("A", "{not json"),
    ]
    _produce(kafka_broker.bootstrap, kafka_topic, messages)

    dlq = f"dlq-{uuid.uuid4().hex[:6]}"
    aggregator = Aggregator(
        kafka_broker.bootstrap,
        database_url,
        topic=kafka_topic,
        group=f"g-{dlq}",
        dead_letter_topic=dlq,
        window=TimeWindow(max_age=timedelta(days=30)),
    )
    stop = threading.Event()
    thread = threading.Thread(target=aggregator.run, args=(stop,))
    thread.start()
    try:
        wait_until(
            lambda: (
                sum((aggregator.stored_total, aggregator.duplicates_total))
                + aggregator.dead_letters_total
                == len(messages)
            ),
            120,
            "the aggregator to take kcat's messages",
        )
    finally:
        stop.set()
        thread.join(30)
    assert (aggregator.stored_total, aggregator.duplicates_total) == (3, 1)
    assert aggregator.dead_letters_total == 2

    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            'SELECT seq, machine_id, "timestamp", temperature, rpm, pressure FROM sensor_readings '
            "ORDER BY seq"
        ).fetchall()
    assert rows == [
        (1, "A", now, 70.5, None, None),
        (2, "A", now, None, 1500.0, None),
        (3, "B", now, None, None, 10.1),
    ]

    # kcat reads the dead-letter topic: the original keys and payloads.
    mirrored = _consume(kafka_broker.bootstrap, dlq)
    assert sorted(mirrored) == sorted([messages[4], messages[5]])

    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("RIG_ACCEPT_MAX_AGE_DAYS", "60")  # the fix
    assert rig_cloud(["dead-letters", "replay", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["stored"], report["still_invalid"]) == (1, 1)
    assert "not valid JSON" in next(iter(report["reasons"].values()))
    assert rig_cloud(["dead-letters", "replay", "--json"]) == 0  # idempotent
    again = json.loads(capsys.readouterr().out)
    assert (again["stored"], again["still_invalid"]) == (0, 1)

    with psycopg.connect(database_url) as conn:
        replayed = conn.execute(
            'SELECT "timestamp", temperature FROM sensor_readings WHERE seq = 4'
        ).fetchall()
        assert conn.execute("SELECT count(*) FROM sensor_readings").fetchone()[0] == 4
    assert replayed == [(datetime.fromtimestamp(backlog_ts / 1000, UTC), 61.0)]
