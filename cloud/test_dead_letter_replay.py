"""Dead letters keep the Kafka key and the whole payload, and ``rig-cloud dead-letters replay``
stores them after the cause is fixed: exactly once, idempotently, keeping what is still
invalid with its new reason (real Kafka, aggregator, PostgreSQL; the CLI in process).

The fix chosen is the common one: an edge was offline longer than the acceptance window the
operator had set (RIG_ACCEPT_MAX_AGE_DAYS=30) and its backlog was dead-lettered as
"timestamp out of range"; the operator widens the window and replays."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from cloud.aggregator import Aggregator
from cloud.cli import main as rig_cloud
from cloud.dead_letters import DeadLetter, replay, store_dead_letters
from shared.message import Reading, TimeWindow, encode_reading
from tests.support.processes import wait_until
from tools.kafka_broker import KafkaBroker

pytestmark = pytest.mark.integration


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    assert rig_cloud(["dead-letters", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _count(database_url: str, sql: str = "SELECT count(*) FROM sensor_readings") -> int:
    with psycopg.connect(database_url) as conn:
        return int(conn.execute(sql).fetchone()[0])


@pytest.mark.timeout(180)
def test_backlog_outside_the_window_is_replayed_after_the_window_is_widened(
    database_url: str,
    kafka_broker: KafkaBroker,
    kafka_topic: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = datetime.now(UTC)
    edge = "rig-offline"
    backlog = [
        Reading("A", edge, seq, now - timedelta(days=45, minutes=seq), {"temperature": 60.0 + seq})
        for seq in range(1, 6)
    ]
    ancient = Reading("A", edge, 6, now - timedelta(days=100), {"temperature": 50.0})
    fresh = Reading("A", edge, 7, now, {"temperature": 70.0})
    # A message larger than the old 64 KiB cut (refused for its size): kept whole.
    oversized = b'{"machine_id": "B", "pad": "' + b"x" * 200_000 + b'"}'
    messages = [(encode_reading(r), b"A") for r in [*backlog, ancient, fresh]]
    messages.append((oversized, b"B"))
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    for value, key in messages:
        producer.produce(kafka_topic, value, key)
    assert producer.flush(30) == 0

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
            lambda: aggregator.stored_total + aggregator.dead_letters_total == len(messages),
            90,
            "the aggregator to take every message",
        )
    finally:
        stop.set()
        thread.join(30)
    assert (aggregator.stored_total, aggregator.dead_letters_total) == (1, 7)

    with psycopg.connect(database_url) as conn:
        letters = conn.execute(
            "SELECT kafka_key, payload, payload_bytes, reason FROM dead_letters ORDER BY id"
        ).fetchall()
    by_payload = {bytes(p): (bytes(k), size, reason) for k, p, size, reason in letters}
    for value, key in messages[:6] + messages[7:]:
        # Key and payload whole, byte for byte.
        assert by_payload[value][:2] == (key, len(value))
    assert "timestamp out of range" in by_payload[encode_reading(ancient)][2]
    assert "30 days in the past" in by_payload[encode_reading(ancient)][2]
    assert "a reading is at most" in by_payload[oversized][2]

    # The mirror topic has the original key and the whole payload too.
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_broker.bootstrap,
            "group.id": f"c-{dlq}",
            "fetch.wait.max.ms": 100,
        }
    )
    consumer.assign([TopicPartition(dlq, 0, OFFSET_BEGINNING)])
    mirrored: dict[bytes, bytes] = {}
    try:
        wait_until(lambda: _poll_into(consumer, mirrored) and len(mirrored) == 7, 30, "the mirror")
    finally:
        consumer.close()
    assert mirrored[oversized] == b"B"

    monkeypatch.setenv("DATABASE_URL", database_url)
    listed = _cli(capsys, "list")
    assert len(listed) == 7 and all(d["status"] == "open" for d in listed)
    assert {d["key"] for d in listed} == {"A", "B"}
    assert all(d["payload_complete"] for d in listed)

    # Not fixed yet: a replay with the same window changes nothing but the attempt count.
    monkeypatch.setenv("RIG_ACCEPT_MAX_AGE_DAYS", "30")
    unchanged = _cli(capsys, "replay")
    assert (unchanged["examined"], unchanged["stored"], unchanged["still_invalid"]) == (7, 0, 7)

    # The fix: a 60-day window. A dry run first reports without storing.
    monkeypatch.setenv("RIG_ACCEPT_MAX_AGE_DAYS", "60")
    dry = _cli(capsys, "replay", "--dry-run")
    assert (dry["stored"], dry["still_invalid"]) == (5, 2)
    assert _count(database_url) == 1

    report = _cli(capsys, "replay")
    assert (report["examined"], report["stored"], report["duplicates"]) == (7, 5, 0)
    assert report["still_invalid"] == 2
    still = report["reasons"]
    assert any("60 days in the past" in r for r in still.values()), still
    assert any("a reading is at most" in r for r in still.values()), still

    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            "SELECT seq, temperature FROM sensor_readings WHERE edge_id = %s ORDER BY seq", (edge,)
        ).fetchall()
        kept = conn.execute(
            "SELECT status, replays, reason, first_reason, stored_seq FROM dead_letters ORDER BY id"
        ).fetchall()
    assert stored == [(s, 60.0 + s) for s in range(1, 6)] + [(7, 70.0)]
    replayed = [k for k in kept if k[0] == "replayed"]
    assert sorted(k[4] for k in replayed) == [1, 2, 3, 4, 5]
    open_ = [k for k in kept if k[0] == "open"]
    assert len(open_) == 2 and all(k[1] == 2 for k in open_)  # the dry run counts no attempt
    ancient_row = next(k for k in open_ if "in the past" in k[2])
    assert "60 days" in ancient_row[2] and "30 days" in ancient_row[3]

    # Idempotent: again, nothing new is stored and the replayed letters are not read again.
    again = _cli(capsys, "replay")
    assert (again["examined"], again["stored"], again["still_invalid"]) == (2, 0, 2)
    assert _count(database_url) == 6
    assert len(_cli(capsys, "list", "--status", "replayed")) == 5


def _poll_into(consumer: Consumer, into: dict[bytes, bytes]) -> bool:
    message = consumer.poll(0.5)
    if message is not None and message.error() is None:
        into[message.value() or b""] = message.key() or b""
    return True


def test_replay_stores_once_and_keeps_conflicts_and_cut_payloads(database_url: str) -> None:
    now = datetime.now(UTC)
    stored = Reading("A", "e1", 1, now, {"rpm": 1.0})
    same = encode_reading(stored)
    other = encode_reading(Reading("A", "e1", 1, now, {"rpm": 2.0}))
    twice = encode_reading(Reading("A", "e1", 2, now, {"rpm": 3.0}))
    with psycopg.connect(database_url) as conn:
        from cloud.storage import store_readings

        store_readings(conn, [stored])
        store_dead_letters(
            conn,
            [
                DeadLetter("kafka", "old reason", same, "t", 0, 1, key=b"A"),
                DeadLetter("kafka", "old reason", other, "t", 0, 2, key=b"A"),
                DeadLetter("kafka", "old reason", twice, "t", 0, 3, key=b"A"),
                DeadLetter("kafka", "old reason", twice, "t", 0, 4, key=b"A"),
            ],
        )
        # A letter written before migration 0014: payload cut at 64 KiB, length unknown.
        conn.execute(
            "INSERT INTO dead_letters (source, reason, payload) VALUES ('kafka', 'big', %s)",
            (b"{" + b"x" * 65535,),
        )
        conn.commit()
        first = replay(conn, window=TimeWindow(), chunk=2)
        conn.commit()
        second = replay(conn, window=TimeWindow())
        rows = conn.execute(
            "SELECT kafka_offset, status, reason, detail IS NOT NULL FROM dead_letters ORDER BY id"
        ).fetchall()
        readings = conn.execute("SELECT seq, rpm FROM sensor_readings ORDER BY seq").fetchall()
    assert (first.examined, first.stored, first.duplicates) == (5, 1, 2)
    assert (first.still_invalid, first.incomplete) == (1, 1)
    assert (second.examined, second.stored, second.duplicates) == (2, 0, 0)
    assert readings == [(1, 1.0), (2, 3.0)]
    assert [r[1] for r in rows] == ["replayed", "open", "replayed", "replayed", "open"]
    conflict = rows[1]
    assert conflict[2].startswith("key conflict") and conflict[3] is True
    assert rows[4][2] == "big"  # a cut payload keeps its reason: it was never re-read
