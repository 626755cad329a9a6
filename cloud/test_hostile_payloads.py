"""Every hostile payload of the fault review, sent through the ingest API and produced
straight into the topic, ends as a 4xx or a dead letter with its reason; a good reading sent
right after each is stored, and the aggregator never stops (real Kafka, real PostgreSQL)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from fastapi.testclient import TestClient

from cloud.aggregator import Aggregator
from cloud.api.app import create_app
from cloud.settings import CloudSettings
from shared.message import format_ts
from tests.support.processes import wait_until
from tools.kafka_broker import KafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

KEY = "k-" + "h" * 30
EDGE = "rig-h"
NOW = datetime.now(UTC)
TWO_MB = 2 * 1024 * 1024


def _doc(seq: int, **extra: Any) -> dict[str, Any]:
    return {
        "machine_id": "A",
        "edge_id": EDGE,
        "seq": seq,
        "ts": format_ts(NOW + timedelta(milliseconds=seq)),
        "values": {"rpm": 3000.0, "temperature": 70.0},
        **extra,
    }


_RUL_BASE = {"method": "thresholds", "is_anomaly": False, "score": 0.0}


@dataclass
class Case:
    name: str
    raw: bytes  # the message as produced into the topic / posted to the API
    reason: str  # what the dead letter's reason contains
    api_status: int  # what the ingest API answers


def _cases(seq: Iterator[int]) -> list[Case]:
    def doc(**extra: Any) -> bytes:
        return orjson.dumps(_doc(next(seq), **extra))

    big = {"machine_id": "A", "edge_id": EDGE, "seq": next(seq), "ts": format_ts(NOW)}
    big["values"] = {"rpm": 1.0}
    big["pad"] = "x" * TWO_MB
    return [
        Case(
            "string score",
            doc(detection={"method": "thresholds", "is_anomaly": True, "score": "x"}),
            "$.detection.score",
            422,
        ),
        Case("quality list", doc(quality={"rpm": []}), "$.quality.rpm", 422),
        Case(
            "ts before year 1 in UTC",
            doc(ts="0001-01-01T00:00:00+01:00"),
            "timestamp out of range",
            422,
        ),
        Case(
            "NUL in a JSONB string",
            doc(detection={"method": "thresholds", "score": 0.1, "warnings": ["\u0000"]}),
            "$.detection.warnings[0]",
            422,
        ),
        Case(
            "integer sensors",
            doc(detection={"method": "thresholds", "is_anomaly": True, "score": 1, "sensors": [1]}),
            "$.detection.sensors[0]",
            422,
        ),
        Case(
            "RUL interval that excludes its estimate",
            doc(detection={**_RUL_BASE, "rul": {"rul_hours": 5, "low_hours": 6, "high_hours": 7}}),
            "$.detection.rul",
            422,
        ),
        Case(
            "RUL hours as a string",
            doc(
                detection={**_RUL_BASE, "rul": {"rul_hours": "5", "low_hours": 1, "high_hours": 9}}
            ),
            "$.detection.rul.rul_hours",
            422,
        ),
        Case(
            "RUL of a thousand centuries",
            doc(
                detection={
                    **_RUL_BASE,
                    "rul": {"rul_hours": 1e9, "low_hours": 1e9, "high_hours": 1e9},
                }
            ),
            "$.detection.rul.rul_hours",
            422,
        ),
        Case(
            "RUL critical sensor share above 1",
            doc(
                detection={
                    **_RUL_BASE,
                    "rul": {
                        "rul_hours": 5,
                        "low_hours": 1,
                        "high_hours": 9,
                        "critical_sensors": [{"sensor": "vibration", "share": 7}],
                    },
                }
            ),
            "$.detection.rul.critical_sensors[0].share",
            422,
        ),
        Case(
            "RUL unknown field",
            doc(
                detection={
                    **_RUL_BASE,
                    "rul": {"rul_hours": 5, "low_hours": 1, "high_hours": 9, "eta": "soon"},
                }
            ),
            "$.detection.rul.eta",
            422,
        ),
        Case(
            "thresholds version not a string",
            doc(detection={**_RUL_BASE, "thresholds_version": 7}),
            "$.detection.thresholds_version",
            422,
        ),
        Case(
            "thresholds version with a newline",
            doc(detection={**_RUL_BASE, "thresholds_version": "abc\n<script>"}),
            "$.detection.thresholds_version",
            422,
        ),
        Case(
            "nested thresholds version too long",
            doc(
                detection={
                    "method": "onnx",
                    "score": 0.1,
                    "thresholds": {**_RUL_BASE, "thresholds_version": "v" * 65},
                }
            ),
            "$.detection.thresholds.thresholds_version",
            422,
        ),
        Case("year 9999", doc(ts="9999-12-31T00:00:00Z"), "timestamp out of range", 422),
        Case("unparseable bytes", b"\x00\xff{not json", "not valid JSON", 400),
        Case("2 MB message", orjson.dumps(big), "a reading is at most", 413),
    ]


def _stored(url: str, seq: int) -> bool:
    with psycopg.connect(url) as conn:
        return (
            conn.execute(
                "SELECT 1 FROM sensor_readings WHERE edge_id = %s AND seq = %s", (EDGE, seq)
            ).fetchone()
            is not None
        )


def _letter(url: str, topic: str, partition: int, offset: int) -> tuple[str, Any] | None:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT reason, detail FROM dead_letters WHERE topic = %s AND kafka_partition = %s "
            "AND kafka_offset = %s",
            (topic, partition, offset),
        ).fetchone()
    return (row[0], row[1]) if row else None


class Harness:
    def __init__(self, url: str, bootstrap: str, topic: str, dlq: str) -> None:
        self.url = url
        self.topic = topic
        self.producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 4 * TWO_MB})
        self.aggregator = Aggregator(
            bootstrap,
            url,
            topic=topic,
            group=f"g-{topic}",
            dead_letter_topic=dlq,
            kafka_extra={},
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.aggregator.run, args=(self.stop,))
        self.thread.start()

    def produce(
        self, raw: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> tuple[int, int]:
        where: list[tuple[int, int]] = []

        def on_delivery(err: object, msg: Any) -> None:
            assert err is None, err
            where.append((msg.partition(), msg.offset()))

        self.producer.produce(self.topic, raw, b"A", headers=headers, on_delivery=on_delivery)
        self.producer.flush(30)
        assert where, "the broker did not confirm"
        return where[0]

    def dead_letter(self, partition: int, offset: int, what: str) -> tuple[str, Any]:
        found: list[tuple[str, Any]] = []

        def check() -> bool:
            letter = _letter(self.url, self.topic, partition, offset)
            if letter:
                found.append(letter)
            return bool(letter)

        wait_until(check, 60, f"the dead letter of {what}")
        self.alive(what)
        return found[0]

    def stored(self, seq: int, what: str) -> None:
        wait_until(lambda: _stored(self.url, seq), 60, f"the good reading after {what}")
        self.alive(what)

    def alive(self, what: str) -> None:
        assert self.thread.is_alive(), f"the aggregator stopped after {what}"
        assert self.aggregator.batches_failed == 0, f"a batch was retried after {what}"

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


@pytest.fixture
def big_topic(kafka_broker: KafkaBroker) -> str:
    """Three partitions that take messages up to 8 MB, so a 2 MB reading reaches the
    aggregator (the broker's default limit of 1 MB would refuse it at the door)."""
    name = f"hostile-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=3, config={"max.message.bytes": str(4 * TWO_MB)})]
    )
    futures[name].result(timeout=60)
    kafka_broker.create_topic(name, partitions=3)  # waits for leaders
    return name


def test_hostile_messages_in_the_topic_are_dead_lettered_and_the_stream_flows(
    database_url: str, kafka_broker: KafkaBroker, big_topic: str
) -> None:
    bootstrap = kafka_broker.bootstrap
    dlq = f"dlq-{big_topic}"
    seq = iter(range(1, 10_000))
    harness = Harness(database_url, bootstrap, big_topic, dlq)
    letters = 0
    try:
        cases = _cases(seq)
        for case in cases:
            partition, offset = harness.produce(case.raw)
            reason, _detail = harness.dead_letter(partition, offset, case.name)
            assert case.reason in reason, (case.name, reason)
            letters += 1
            good = next(seq)
            harness.produce(orjson.dumps(_doc(good)))
            harness.stored(good, case.name)

        # A key reused with another timestamp, then with other values: conflicts naming
        # both versions; the identical redelivery is a silent duplicate.
        original = _doc(next(seq))
        harness.produce(orjson.dumps(original))
        harness.stored(original["seq"], "the original")
        duplicates = harness.aggregator.duplicates_total
        harness.produce(orjson.dumps(original))
        wait_until(lambda: harness.aggregator.duplicates_total > duplicates, 60, "the duplicate")
        for name, changed in (
            ("another timestamp", {"ts": format_ts(NOW + timedelta(seconds=30))}),
            ("other values", {"values": {"rpm": 1.0, "temperature": 70.0}}),
        ):
            where = harness.produce(orjson.dumps({**original, **changed}))
            reason, detail = harness.dead_letter(*where, name)
            letters += 1
            assert reason.startswith("key conflict") and name in reason, reason
            assert detail["stored"]["ts"] == original["ts"]
            assert detail["stored"]["values"] == original["values"]
            assert detail["received"]["seq"] == original["seq"]
            good = next(seq)
            harness.produce(orjson.dumps(_doc(good)))
            harness.stored(good, name)

        # edge_backlog headers past BIGINT, negative or not a number: ignored, the readings
        # themselves are stored.
        for header in (str(10**20).encode(), b"-5", b"lots", b"9" * 5000):
            good = next(seq)
            harness.produce(orjson.dumps(_doc(good)), [("edge_backlog", header)])
            harness.stored(good, f"a backlog header of {header[:20]!r}")
        with psycopg.connect(database_url) as conn:
            rows = conn.execute("SELECT count(*) FROM sensor_readings WHERE edge_id = %s", (EDGE,))
            # One good reading after each case, the original, two conflicts' goods, 4 headers.
            assert rows.fetchone()[0] == len(cases) + 1 + 2 + 4
            backlog = conn.execute("SELECT backlog FROM edges WHERE edge_id = %s", (EDGE,))
            assert backlog.fetchone()[0] is None
            assert conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == letters
    finally:
        harness.close()
    assert not harness.thread.is_alive()
    _assert_mirrored(bootstrap, dlq, letters)


def _assert_mirrored(bootstrap: str, dlq: str, count: int) -> None:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"check-{dlq}", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(dlq, 0, OFFSET_BEGINNING)])
    reasons: list[str] = []
    wait_until(
        lambda: _drain(consumer, reasons) >= count, 60, f"{count} letters on the dead-letter topic"
    )
    consumer.close()
    assert len(reasons) == count


def _drain(consumer: Consumer, reasons: list[str]) -> int:
    message = consumer.poll(0.5)
    if message is not None and message.error() is None:
        reasons.append(dict(message.headers() or [])["reason"].decode())
    return len(reasons)


def test_hostile_bodies_through_the_api_get_4xx_and_the_stream_flows(
    database_url: str, kafka_broker: KafkaBroker, big_topic: str
) -> None:
    bootstrap = kafka_broker.bootstrap
    settings = CloudSettings(
        database_url=database_url, ingest_api_key=KEY, kafka_bootstrap=bootstrap, topic=big_topic
    )
    seq = iter(range(1, 10_000))
    harness = Harness(database_url, bootstrap, big_topic, f"dlq-{big_topic}")
    headers = {"X-API-KEY": KEY, "Content-Type": "application/json"}
    try:
        with TestClient(create_app(settings)) as client:

            def post(raw: bytes, extra: dict[str, str] | None = None) -> Any:
                return client.post(
                    "/api/v1/ingest", content=raw, headers={**headers, **(extra or {})}
                )

            for case in _cases(seq):
                response = post(case.raw)
                assert response.status_code == case.api_status, (case.name, response.text)
                assert case.reason.split(": ")[0] in response.text or case.api_status in (400, 413)
                good = next(seq)
                assert post(orjson.dumps(_doc(good))).status_code == 200
                harness.stored(good, case.name)

            response = post(orjson.dumps(_doc(next(seq))), {"X-Edge-Backlog": str(10**20)})
            assert response.status_code == 422 and response.json()["field"] == "x-edge-backlog"

            # Key conflicts pass the API in Kafka mode (the broker has no notion of keys) and
            # end as dead letters at the aggregator.
            original = _doc(next(seq))
            assert post(orjson.dumps(original)).status_code == 200
            harness.stored(original["seq"], "the original")
            conflicting = {**original, "ts": format_ts(NOW + timedelta(seconds=30))}
            body = post(orjson.dumps(conflicting)).json()
            reason, detail = harness.dead_letter(body["partition"], body["offset"], "conflict")
            assert reason.startswith("key conflict"), reason
            assert detail["stored"]["ts"] == original["ts"]
            good = next(seq)
            assert post(orjson.dumps(_doc(good))).status_code == 200
            harness.stored(good, "the conflict")
    finally:
        harness.close()
