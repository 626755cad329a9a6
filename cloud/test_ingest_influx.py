"""POST /api/v1/ingest/influx: Telegraf's line protocol stored, one fate per line, the guards
of the JSON ingest (real PostgreSQL; real Kafka and aggregator for the Kafka mode). Also the
epoch-millisecond timestamps Node-RED sends to the JSON endpoint."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from cloud.aggregator import Aggregator
from cloud.api.app import create_app
from cloud.api.routers.ingest import InfluxOut
from cloud.settings import CloudSettings
from tests.support.accounts import add_user, login
from tests.support.processes import free_port, wait_until
from tools.kafka_broker import KafkaBroker

pytestmark = pytest.mark.integration

KEY = "k-" + "i" * 30
URL = "/api/v1/ingest/influx"


def _ns(ts: datetime) -> int:
    return int(ts.timestamp()) * 1_000_000_000 + ts.microsecond * 1000


def telegraf_batch(ts: datetime, machine: str = "A") -> str:
    """One flush of Telegraf 1.x (outputs.http, data_format = "influx") on a rig PC with
    the cpu, mem, system and modbus inputs and ``[global_tags] machine_id``: tags sorted,
    integers with ``i``, a string field, nanosecond timestamps."""
    t = _ns(ts)
    tags = f"host=rig-pc-07,machine_id={machine}"
    return (
        f"cpu,cpu=cpu-total,{tags} usage_idle=97.48,usage_system=0.75,usage_user=1.5 {t}\n"
        f"mem,{tags} available=6170284032i,used_percent=24.41 {t}\n"
        f'system,{tags} load1=0.25,n_cpus=4i,uptime_format="10 days, 18:32" {t}\n'
        f"modbus,{tags},name=press-1,slave_id=1,type=holding_register "
        f"temperature=71.2,pressure=10.4,rpm=2950i {t}\n"
    )


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    settings = CloudSettings(database_url=database_url, ingest_api_key=KEY)
    password = add_user(database_url, "admin", "admin")
    with TestClient(create_app(settings)) as test_client:
        login(test_client, "admin", password)
        yield test_client


def _post(
    client: TestClient,
    text: str | bytes,
    key: str | None = KEY,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    sent = {"Content-Type": "text/plain; charset=utf-8", **(headers or {})}
    if key is not None:
        sent["X-API-KEY"] = key
    body = text.encode() if isinstance(text, str) else text
    return client.post(URL, content=body, headers=sent, params=params or {})


def _check_model(body: dict[str, Any]) -> None:
    InfluxOut.model_validate(body)
    # Not 200: an RFC 9457 problem like every error (type, title, detail), the lines' fates
    # its extension members; 200: those members are null.
    if body["status"] == 200:
        assert body["type"] is body["title"] is body["detail"] is None
    else:
        assert body["type"] == "about:blank" and body["detail"] == body["error"]
        assert body["title"] in ("Unprocessable Entity", "Service Unavailable")


def _rows(database_url: str) -> list[dict[str, Any]]:
    with psycopg.connect(database_url) as conn:
        cur = conn.execute(
            'SELECT machine_id, edge_id, seq, "timestamp", temperature, pressure, rpm, '
            "custom_sensors FROM sensor_readings ORDER BY seq"
        )
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def test_telegraf_line_protocol_is_stored_once(client: TestClient, database_url: str) -> None:
    ts = datetime.now(UTC).replace(microsecond=123456)
    response = _post(client, telegraf_batch(ts))
    assert response.status_code == 200, response.text
    body = response.json()
    _check_model(body)
    assert (body["lines"], body["accepted"], body["refused"]) == (4, 4, 0)
    system = body["results"][2]
    assert system["ignored"] == [
        {"field": "uptime_format", "error": "a string is not a measurement; send a number"}
    ]
    rows = _rows(database_url)
    assert len(rows) == 4
    assert {r["machine_id"] for r in rows} == {"A"}
    assert {r["edge_id"] for r in rows} == {"ingest:default"}
    assert {r["timestamp"] for r in rows} == {ts}
    modbus = next(r for r in rows if r["temperature"] is not None)
    assert (modbus["temperature"], modbus["pressure"], modbus["rpm"]) == (71.2, 10.4, 2950.0)
    assert modbus["custom_sensors"] == {}
    customs = {name for r in rows for name in r["custom_sensors"]}
    assert customs == {
        "usage_idle",
        "usage_system",
        "usage_user",
        "available",
        "used_percent",
        "load1",
        "n_cpus",
    }
    assert sorted(r["seq"] for r in rows) == sorted(e["seq"] for e in body["results"])

    # Telegraf resends a batch it got no answer for: the same keys, nothing stored twice.
    again = _post(client, telegraf_batch(ts)).json()
    assert (again["accepted"], again["duplicates"]) == (4, 4)
    assert len(_rows(database_url)) == 4
    stats = client.get("/api/stats").json()
    assert stats["machines"]["A"]["total_readings"] == 4


def test_one_fate_per_line_bad_lines_refused_with_reasons(
    client: TestClient, database_url: str
) -> None:
    now = datetime.now(UTC)
    t = _ns(now)
    old = _ns(now - timedelta(days=500))
    lines = [
        f"modbus,machine_id=A temperature=70.5 {t}",  # 1 accepted
        "modbus,machine_id=A temperature=",  # 2 syntax
        f"modbus,host=x temperature=70.5 {t}",  # 3 no machine tag
        f'system,machine_id=A uptime_format="1 day",ok=true {t}',  # 4 nothing numeric
        f"modbus,machine_id=A temperature=70.5 {old}",  # 5 outside the time window
        f"modbus,machine_id=A,sensor=b temperature=1e13,Bad_Name=1,pressure=9.5 {t}",  # 6 partly
        "",
        "# comment",
        f"modbus,machine_id=../x temperature=1 {t}",  # 9 machine id not allowed
    ]
    response = _post(client, "\n".join(lines))
    assert response.status_code == 422, response.text
    body = response.json()
    _check_model(body)
    fates = {e["line"]: (e["status"], e["field"]) for e in body["results"]}
    assert fates == {
        1: ("accepted", None),
        2: ("refused", "$"),
        3: ("refused", "tag machine_id"),
        4: ("refused", "fields"),
        5: ("refused", "timestamp"),
        6: ("accepted", None),
        9: ("refused", "tag machine_id"),
    }
    assert (body["accepted"], body["refused"], body["lines"]) == (2, 5, 7)
    assert body["field"] == "line 2: $"
    errors = {e["line"]: e["error"] for e in body["results"]}
    assert "empty field value" in errors[2]
    assert "timestamp out of range" in errors[5]
    assert "a string is not a measurement" in errors[4]
    partly = next(e for e in body["results"] if e["line"] == 6)
    assert {i["field"] for i in partly["ignored"]} == {"temperature", "Bad_Name"}
    assert any("exceeds the limit" in i["error"] for i in partly["ignored"])
    rows = _rows(database_url)
    stored = sorted((r["temperature"] or 0.0, r["pressure"] or 0.0) for r in rows)
    assert stored == [(0.0, 9.5), (70.5, 0.0)]
    assert len(rows) == 2


def test_machine_tag_and_precision_parameters(client: TestClient, database_url: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    seconds = int(now.timestamp())
    response = _post(
        client,
        f"modbus,host=press-7 temperature=66.0 {seconds}\n",
        params={"precision": "s", "machine_tag": "host"},
    )
    assert response.status_code == 200, response.text
    (row,) = _rows(database_url)
    assert (row["machine_id"], row["timestamp"], row["temperature"]) == ("press-7", now, 66.0)
    wrong = _post(client, "m,host=x a=1\n", params={"precision": "minutes"})
    assert wrong.status_code == 422 and wrong.json()["field"] == "precision"


def test_guards_of_the_json_ingest(client: TestClient, database_url: str) -> None:
    line = f"modbus,machine_id=A temperature=70.5 {_ns(datetime.now(UTC))}\n"
    assert _post(client, line, key=None).status_code == 401
    assert _post(client, line, key="k-" + "w" * 30).status_code == 401

    issued = client.post("/api/v1/edges/rig-7/keys")
    assert issued.status_code == 201, issued.text
    edge_key = issued.json()["api_key"]
    own = _post(client, line, key=edge_key)
    assert own.status_code == 200, own.text
    assert own.json()["results"][0]["edge_id"] == "rig-7"
    forged = _post(
        client,
        line + f"modbus,edge_id=rig-8,machine_id=A temperature=1 {_ns(datetime.now(UTC))}\n",
        key=edge_key,
    )
    assert forged.status_code == 403
    assert forged.json()["field"] == "line 2: tag edge_id"
    assert [r["edge_id"] for r in _rows(database_url)] == ["rig-7"]

    too_big = _post(client, line * (1_048_576 // len(line) + 1))
    assert too_big.status_code == 413
    bomb = gzip.compress(line.encode() * (2_000_000 // len(line)))
    assert _post(client, bomb, headers={"Content-Encoding": "gzip"}).status_code == 413
    assert _post(client, b"\xff\xfe", headers={}).status_code == 400
    assert _post(client, "# only a comment\n\n").status_code == 422
    assert _post(client, line, headers={"Content-Encoding": "br"}).status_code == 415

    zipped = _post(
        client,
        gzip.compress(f"modbus,machine_id=B rpm=1500i {_ns(datetime.now(UTC))}\n".encode()),
        headers={"Content-Encoding": "gzip"},
    )
    assert zipped.status_code == 200, zipped.text
    assert len(_rows(database_url)) == 2


def test_idempotency_key_for_lines_without_timestamps(
    client: TestClient, database_url: str
) -> None:
    body = "modbus,machine_id=A temperature=70.5\nmodbus,machine_id=B temperature=71.5\n"
    first = _post(client, body, headers={"Idempotency-Key": "flush-1"})
    assert first.status_code == 200, first.text
    retry = _post(client, body, headers={"Idempotency-Key": "flush-1"})
    assert retry.status_code == 200, retry.text
    assert [(e["seq"], e["ts"]) for e in retry.json()["results"]] == [
        (e["seq"], e["ts"]) for e in first.json()["results"]
    ]
    assert retry.json()["duplicates"] == 2
    assert len(_rows(database_url)) == 2
    other = _post(client, body + "m,machine_id=C rpm=1\n", headers={"Idempotency-Key": "flush-1"})
    assert other.status_code == 422 and other.json()["field"] == "Idempotency-Key"
    # Without the key, a body without timestamps is new readings each time (server time).
    assert _post(client, body).json()["duplicates"] == 0
    assert len(_rows(database_url)) == 4


def test_node_red_epoch_milliseconds_at_the_json_endpoint(
    client: TestClient, database_url: str
) -> None:
    millis = int(time.time() * 1000)
    response = client.post(
        "/api/v1/ingest",
        content=json.dumps({"machine_id": "A", "timestamp": millis, "temperature": 70.1}),
        headers={"X-API-KEY": KEY, "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    (row,) = _rows(database_url)
    assert row["timestamp"] == datetime.fromtimestamp(millis / 1000, UTC)
    seconds = client.post(
        "/api/v1/ingest",
        content=json.dumps({"machine_id": "A", "ts": millis // 1000, "temperature": 70.2}),
        headers={"X-API-KEY": KEY, "Content-Type": "application/json"},
    )
    assert seconds.status_code == 200, seconds.text
    micros = client.post(
        "/api/v1/ingest",
        content=json.dumps({"machine_id": "A", "ts": millis * 1000, "temperature": 70.3}),
        headers={"X-API-KEY": KEY, "Content-Type": "application/json"},
    )
    assert micros.status_code == 422 and micros.json()["field"] == "$.ts"


@pytest.mark.timeout(180)
def test_with_kafka_telegraf_lines_reach_the_database_and_an_outage_is_503(
    database_url: str, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    settings = CloudSettings(
        database_url=database_url,
        ingest_api_key=KEY,
        kafka_bootstrap=kafka_broker.bootstrap,
        topic=kafka_topic,
    )
    aggregator = Aggregator(
        kafka_broker.bootstrap, database_url, topic=kafka_topic, group=f"g-{kafka_topic}"
    )
    stop = threading.Event()
    thread = threading.Thread(target=aggregator.run, args=(stop,))
    thread.start()
    try:
        with TestClient(create_app(settings)) as client:
            ts = datetime.now(UTC).replace(microsecond=0)
            response = _post(client, telegraf_batch(ts, "K") + "bad line\n")
            assert response.status_code == 422, response.text
            body = response.json()
            _check_model(body)
            assert [e["status"] for e in body["results"]] == ["accepted"] * 4 + ["refused"]
            assert all(e["offset"] is not None for e in body["results"][:4])
            # Resent as Telegraf would: the keys are the same, the aggregator drops repeats.
            assert _post(client, telegraf_batch(ts, "K")).status_code == 200
            wait_until(
                lambda: aggregator.stored_total + aggregator.duplicates_total >= 8,
                90,
                "the aggregator to consume both batches",
            )
        assert aggregator.stored_total == 4 and aggregator.dead_letters_total == 0
        rows = _rows(database_url)
        assert len(rows) == 4 and {r["machine_id"] for r in rows} == {"K"}
    finally:
        stop.set()
        thread.join(30)

    # A broker that does not answer: 503 with Retry-After within the delivery deadline.
    down = CloudSettings(
        database_url=database_url,
        ingest_api_key=KEY,
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        topic=kafka_topic,
        ingest_delivery_timeout_ms=500,
    )
    with TestClient(create_app(down)) as client:
        response = _post(client, telegraf_batch(datetime.now(UTC)))
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    _check_model(body)
    assert {e["status"] for e in body["results"]} <= {"failed", "unconfirmed"}
    assert body["accepted"] == 0 and body["lines"] == 4
