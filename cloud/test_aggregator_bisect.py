"""A batch PostgreSQL refuses because of some of its rows is bisected: exactly the offending
readings become dead letters with the database's reason, the rest is stored, and the batch
is never retried (real Kafka, real PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest
from confluent_kafka import Producer

from cloud.aggregator import Aggregator
from shared.message import Reading, encode_reading
from tests.support.processes import wait_until
from tools.kafka_broker import KafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

NOW = datetime.now(UTC)


def _reading(seq: int, **values: float) -> Reading:
    return Reading("A", "e1", seq, NOW + timedelta(milliseconds=seq), {"rpm": 1.0, **values})


def test_rows_the_database_refuses_are_isolated_and_dead_lettered(
    database_url: str, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    # Rules the codec does not know, so that valid readings meet a refusal in PostgreSQL:
    # a check constraint (IntegrityError) and a failing cast (DataError).
    with psycopg.connect(database_url) as conn, conn.transaction():
        conn.execute(
            "ALTER TABLE sensor_readings ADD CONSTRAINT test_no_666 "
            "CHECK (rpm IS DISTINCT FROM 666)"
        )
        conn.execute(
            "ALTER TABLE sensor_readings ADD CONSTRAINT test_boom_int CHECK "
            "((custom_sensors->>'boom') IS NULL OR (custom_sensors->>'boom')::int >= 0)"
        )
    bootstrap = kafka_broker.bootstrap
    producer = Producer({"bootstrap.servers": bootstrap})
    for seq in range(1, 41):
        reading = _reading(seq)
        if seq == 7:
            reading.values["rpm"] = 666.0
        if seq == 30:
            reading.custom["boom"] = 1.5
        producer.produce(kafka_topic, encode_reading(reading), b"A")  # one partition, in order
    producer.flush(30)

    aggregator = Aggregator(bootstrap, database_url, topic=kafka_topic, group=f"g-{kafka_topic}")
    stop = threading.Event()
    thread = threading.Thread(target=aggregator.run, args=(stop,))
    thread.start()
    try:
        wait_until(
            lambda: aggregator.stored_total + aggregator.dead_letters_total >= 40,
            60,
            "every message stored or dead-lettered",
        )
    finally:
        stop.set()
        thread.join(30)
    assert (aggregator.stored_total, aggregator.dead_letters_total) == (38, 2)
    assert aggregator.batches_failed == 0  # bisected in place, not retried
    with psycopg.connect(database_url) as conn:
        seqs = [s for (s,) in conn.execute("SELECT seq FROM sensor_readings ORDER BY seq")]
        letters = conn.execute(
            "SELECT reason, payload FROM dead_letters ORDER BY kafka_offset"
        ).fetchall()
    assert seqs == [s for s in range(1, 41) if s not in (7, 30)]
    assert [orjson.loads(bytes(p))["seq"] for _, p in letters] == [7, 30]
    assert letters[0][0].startswith("refused by the database: CheckViolation")
    assert letters[1][0].startswith("refused by the database: InvalidTextRepresentation")


def test_hand_built_readings_past_validation_are_isolated(
    database_url: str, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    """Readings built in process, bypassing shared.message: a NUL in a text column (refused
    by the client library), a NUL in JSONB (refused by PostgreSQL), a string where a double
    goes. Each is refused alone; the rest of the batch is stored in the same transaction."""
    bad_text = _reading(3)
    bad_text.machine_id = "A\x00"
    bad_json = _reading(6)
    bad_json.detection = {"method": "t", "score": 0.5, "note": "\u0000"}
    bad_number = _reading(8)
    bad_number.values["temperature"] = "hot"  # type: ignore[assignment]  # deliberately
    readings = [_reading(s) for s in range(1, 11)]
    readings[2], readings[5], readings[7] = bad_text, bad_json, bad_number

    aggregator = Aggregator(kafka_broker.bootstrap, database_url, topic=kafka_topic)
    try:
        with psycopg.connect(database_url) as conn, conn.transaction():
            result, refused = aggregator._store_isolating(conn, readings)
    finally:
        aggregator._close()
    assert [index for index, _ in refused] == [2, 5, 7]
    assert all(reason.startswith("refused by the database") for _, reason in refused)
    assert "NUL" in refused[0][1] or "0x00" in refused[0][1]
    assert "UntranslatableCharacter" in refused[1][1]
    assert (result.received, result.inserted, result.duplicates) == (7, 7, 0)
    with psycopg.connect(database_url) as conn:
        seqs = [s for (s,) in conn.execute("SELECT seq FROM sensor_readings ORDER BY seq")]
        keys = conn.execute("SELECT count(*) FROM reading_keys").fetchone()[0]
    assert seqs == [1, 2, 4, 5, 7, 9, 10]
    assert keys == 7  # the refused readings' keys were rolled back with them
