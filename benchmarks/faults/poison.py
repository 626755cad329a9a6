"""Hostile and broken messages, produced straight into the topic and posted to the ingest API,
each followed by a good reading, while the edge streams beside them.

A poison message has exactly one acceptable fate: a dead letter with its reason (matched by
topic, partition and offset), a 4xx from the API, or the broker refusing it outright. A
message whose reading is valid and only a header is hostile may also be stored. Each good
reading must be stored; the edge's stream must not stall behind a poison message; no
aggregator may exit.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import psycopg
from confluent_kafka import KafkaError, Message, Producer

from benchmarks.faults.accounting import dead_letters
from benchmarks.faults.harness import Scenario, say, wait_for
from benchmarks.faults.processes import TAIL_S, WARM_S

KAFKA_EDGE = "fault-poison-kafka"
API_EDGE = "fault-poison-api"
MACHINE = "poison-m1"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _doc(edge: str, number: int, **overrides: Any) -> dict[str, Any]:
    """A good reading of ``edge`` with sequence number ``number``; ``overrides`` replace
    fields (``seq`` included) to make it hostile."""
    doc: dict[str, Any] = {
        "v": 1,
        "machine_id": MACHINE,
        "edge_id": edge,
        "seq": number,
        "ts": _now(),
        "values": {"temperature": 70.5, "rpm": 1500.0},
    }
    doc.update(overrides)
    return doc


def _raw(edge: str, seq: int, replace: tuple[str, str]) -> bytes:
    """A good document with one piece of its text swapped (for what JSON libraries refuse to
    write: integers beyond 64 bits, NaN)."""
    text = orjson.dumps(_doc(edge, seq)).decode()
    old, new = replace
    assert old in text
    return text.replace(old, new, 1).encode()


@dataclass
class Poison:
    label: str
    payload: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    # A valid reading with only hostile headers may be stored instead of dead-lettered.
    storable: bool = False


def poison_payloads(edge: str, first_seq: int) -> list[Poison]:
    """Every payload of the issue's list (and a few more), each under its own sequence
    number from ``first_seq`` on (so one accepted by mistake cannot hide behind another)."""
    nul = "\u0000"
    numbers = iter(range(first_seq, first_seq + 1000))

    def seq_() -> int:
        return next(numbers)

    docs: list[tuple[str, dict[str, Any]]] = [
        ("string_score", _doc(edge, seq_(), detection={"method": "threshold", "score": "high"})),
        ("quality_list", _doc(edge, seq_(), quality=["bad"])),
        ("quality_value_list", _doc(edge, seq_(), quality={"rpm": ["bad"]})),
        ("ts_year_1_plus_1h", _doc(edge, seq_(), ts="0001-01-01T00:00:00+01:00")),
        ("ts_9999", _doc(edge, seq_(), ts="9999-12-31T23:59:59Z")),
        ("ts_1970", _doc(edge, seq_(), ts="1970-01-01T00:00:00Z")),
        ("nul_in_machine_id", _doc(edge, seq_(), machine_id=f"m{nul}1")),
        ("nul_in_custom_name", _doc(edge, seq_(), custom={f"pres{nul}sure": 1.0})),
        (
            "nul_in_detection",
            _doc(edge, seq_(), detection={"method": "threshold", "score": 1.0, "warnings": [nul]}),
        ),
        ("nul_in_quality_key", _doc(edge, seq_(), quality={f"rpm{nul}": "bad"})),
        (
            "sensors_integer",
            _doc(edge, seq_(), detection={"method": "x", "score": 1, "sensors": 5}),
        ),
        ("value_bool", _doc(edge, seq_(), values={"temperature": True})),
        ("value_string", _doc(edge, seq_(), values={"temperature": "70"})),
        ("unknown_sensor", _doc(edge, seq_(), values={"warp_drive": 1.0})),
        ("schema_v2", _doc(edge, seq_(), v=2)),
        ("seq_negative", _doc(edge, seq_(), seq=-1)),
        ("seq_string", _doc(edge, seq_(), seq="12")),
        ("custom_60000_keys", _doc(edge, seq_(), custom={f"k{i}": 1.0 for i in range(60_000)})),
        ("padding_2mb", _doc(edge, seq_(), custom={"pad": 1.0}, note="x" * (2 << 20))),
    ]
    out = [Poison(label, orjson.dumps(doc)) for label, doc in docs]
    out += [
        Poison(
            "value_10e400",
            _raw(edge, seq_(), ('"temperature":70.5', '"temperature":1' + "0" * 400)),
        ),
        Poison("seq_2e70", _seq_2e70(edge, seq_())),
        Poison("value_nan", _raw(edge, seq_(), ('"temperature":70.5', '"temperature":NaN'))),
        Poison("value_1e999", _raw(edge, seq_(), ('"temperature":70.5', '"temperature":1e999'))),
        Poison("not_json", b"\xff\xfe\x00 not json at all"),
        Poison("truncated_json", b'{"v":1,"machine_id":'),
        Poison("empty", b""),
        Poison("json_null", b"null"),
        Poison("json_array", b"[1,2,3]"),
        Poison("deep_nesting", b"[" * 100_000),
    ]
    return out


def _seq_2e70(edge: str, seq: int) -> bytes:
    return _raw(edge, seq, (f'"seq":{seq}', f'"seq":{2**70}'))


def header_poison(edge: str, first_seq: int) -> list[Poison]:
    """Valid readings with hostile ``edge_backlog`` headers: stored or dead-lettered."""
    return [
        Poison(
            label,
            orjson.dumps(_doc(edge, first_seq + i)),
            [("edge_backlog", value)],
            storable=True,
        )
        for i, (label, value) in enumerate(
            (
                ("backlog_past_bigint", b"99999999999999999999999"),
                ("backlog_negative", b"-5"),
                ("backlog_binary", b"\xff\xfe"),
            )
        )
    ]


@dataclass
class Sent:
    label: str
    channel: str
    partition: int | None = None
    offset: int | None = None
    status: int | None = None
    refused: str | None = None
    storable_key: tuple[str, int] | None = None


def _produce(producer: Producer, topic: str, payload: bytes, headers: list[Any]) -> Sent:
    sent = Sent("", "kafka")

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            sent.refused = str(err)
        else:
            sent.partition, sent.offset = msg.partition(), msg.offset()

    try:
        producer.produce(
            topic, value=payload, key=MACHINE.encode(), headers=headers, on_delivery=on_delivery
        )
    except Exception as exc:  # the client itself refused (size, ...)
        sent.refused = f"{type(exc).__name__}: {exc}"
        return sent
    producer.flush(30)
    return sent


def poison_messages(sc: Scenario) -> None:
    key = secrets.token_urlsafe(24)
    sc.start_aggregator()
    sc.start_api(env={"RIG_INGEST_API_KEY": key})
    sc.start_sim()
    sc.start_edge()
    sc.wait_flowing()
    time.sleep(WARM_S)

    producer = Producer(
        {
            "bootstrap.servers": sc.infra.bootstrap,
            "acks": "all",
            # Large and compressible: the 2 MB message reaches the broker compressed, so it
            # is the consumer that meets it, not just the producer's own size check.
            "message.max.bytes": 8 << 20,
            "compression.type": "lz4",
        }
    )
    sent: list[Sent] = []
    good: list[tuple[str, int]] = []
    seq = 1
    say("  producing poison into the topic")
    for item in poison_payloads(KAFKA_EDGE, 10_000) + header_poison(KAFKA_EDGE, 20_000):
        result = _produce(producer, sc.topic, item.payload, item.headers)
        result.label = item.label
        if item.storable:
            result.storable_key = (KAFKA_EDGE, int(orjson.loads(item.payload)["seq"]))
        sent.append(result)
        _produce(producer, sc.topic, orjson.dumps(_doc(KAFKA_EDGE, seq)), [])
        good.append((KAFKA_EDGE, seq))
        seq += 1

    say("  posting poison to the API")
    headers = {"X-API-KEY": key, "Content-Type": "application/json"}
    with httpx.Client(base_url=sc.api_url, timeout=30) as client:
        for item in poison_payloads(API_EDGE, 10_000):
            result = Sent(item.label, "api")
            try:
                response = client.post("/api/v1/ingest", content=item.payload, headers=headers)
                result.status = response.status_code
                if response.status_code == 200:
                    body = response.json()
                    result.partition, result.offset = body.get("partition"), body.get("offset")
            except httpx.HTTPError as exc:
                result.refused = f"{type(exc).__name__}: {exc}"
            sent.append(result)
            response = client.post(
                "/api/v1/ingest", content=orjson.dumps(_doc(API_EDGE, seq)), headers=headers
            )
            if response.status_code == 200:
                good.append((API_EDGE, seq))
            else:
                sc.notes.setdefault("good_refused_by_api", []).append(response.status_code)
                sc.extra["lost"] += 1
            seq += 1
    last_poison = time.monotonic()

    def all_good_stored() -> bool:
        return len(_stored_keys(sc, good)) == len(good)

    try:
        wait_for(all_good_stored, 90, "every good reading sent after a poison one")
    except Exception as exc:
        sc.notes["good_wait"] = str(exc).splitlines()[0]
    sc.notes["good_stored_after_s"] = round(time.monotonic() - last_poison, 2)
    sc.fault_ended()
    time.sleep(TAIL_S)
    _account(sc, sent, good)


def _stored_keys(sc: Scenario, keys: list[tuple[str, int]]) -> set[tuple[str, int]]:
    with psycopg.connect(sc.infra.database_url) as conn:
        rows = conn.execute(
            "SELECT edge_id, seq, count(*) FROM sensor_readings WHERE edge_id = ANY(%s) "
            "GROUP BY 1, 2",
            ([KAFKA_EDGE, API_EDGE],),
        ).fetchall()
    counts = {(e, int(s)): int(n) for e, s, n in rows}
    duplicated = sum(n - 1 for n in counts.values() if n > 1)
    sc.notes["injected_duplicates"] = duplicated
    return {k for k in keys if k in counts}


def _account(sc: Scenario, sent: list[Sent], good: list[tuple[str, int]]) -> None:
    letters = {
        (d.partition, d.offset): d.reason for d in dead_letters(sc.infra.database_url, sc.topic)
    }
    storable = [s.storable_key for s in sent if s.storable_key is not None]
    stored = _stored_keys(sc, good + storable)
    fates: dict[str, str] = {}
    unaccounted: list[str] = []
    api_5xx: list[str] = []
    for s in sent:
        name = f"{s.channel}:{s.label}"
        if s.status is not None and 400 <= s.status < 500:
            fates[name] = f"HTTP {s.status}"
        elif s.status is not None and s.status >= 500:
            fates[name] = f"HTTP {s.status}"
            api_5xx.append(name)
        elif s.refused is not None:
            fates[name] = f"refused: {s.refused[:60]}"
        elif (s.partition, s.offset) in letters:
            fates[name] = f"dead letter: {letters[(s.partition, s.offset)][:60]}"
        elif s.storable_key is not None and s.storable_key in stored:
            fates[name] = "stored (header ignored)"
        else:
            fates[name] = "NONE"
            unaccounted.append(name)
    missing_good = [k for k in good if k not in stored]
    sc.extra["lost"] += len(unaccounted) + len(missing_good)
    sc.extra["duplicated"] += sc.notes.get("injected_duplicates", 0)
    sc.notes["poison_sent"] = len(sent)
    sc.notes["good_sent"] = len(good)
    sc.notes["fates"] = fates
    if unaccounted:
        sc.notes["poison_without_fate"] = unaccounted
    if missing_good:
        sc.notes["good_not_stored"] = len(missing_good)
    if api_5xx:
        sc.notes["api_5xx"] = api_5xx
    alive = [a.name for a in sc.aggregators if a.running]
    sc.notes["aggregators_alive"] = f"{len(alive)}/{len(sc.aggregators)}"
