"""``rig-edge check-config --probe`` asks the configured output too: a real Kafka broker
(metadata with the daemon's client settings, the topic looked up) and a real ``rig-cloud
serve`` on PostgreSQL (the key and its edge scope at GET /api/v1/ingest/check, nothing
stored). The inputs are a real simulator that answers, so a non-zero exit is the output's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from cloud.accounts import create_edge_key
from edge.cli import main as edge_main
from tests.support.pipeline import edge_config, start_simulator, stored_count
from tests.support.processes import Service, free_port, http_ok, wait_until
from tools.kafka_broker import KafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

KEY = "k-" + "p" * 30
EDGE = "edge-probe"


@pytest.fixture
def sim_port(log_dir: Path) -> Iterator[int]:
    sim, port = start_simulator(log_dir, None, ["A"], 2.0)
    try:
        yield port
    finally:
        sim.stop()


def _probe(
    tmp_path: Path, sim_port: int, output: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[str], str]:
    cfg = edge_config(
        tmp_path, sim_port=sim_port, machines=["A"], poll_interval_s=1, output=output, edge_id=EDGE
    )
    code = edge_main(["check-config", "-c", str(cfg), "--probe"])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert any(line.startswith("ok   simulator:") for line in lines), lines  # inputs answer
    return (
        code,
        [line for line in lines if line.split(":")[0].endswith((" output kafka", " output http"))],
        captured.err,
    )


def test_kafka_output_probe(
    tmp_path: Path,
    sim_port: int,
    kafka_broker: KafkaBroker,
    kafka_topic: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kafka = {"kind": "kafka", "bootstrap_servers": kafka_broker.bootstrap, "topic": kafka_topic}
    code, lines, _err = _probe(tmp_path, sim_port, kafka, capsys)
    assert code == 0, lines
    assert lines == [
        f"ok   output kafka: {kafka_broker.bootstrap}: metadata from 1 broker "
        "(security_protocol PLAINTEXT)",
        f"ok   output kafka: topic {kafka_topic}: 3 partitions",
    ]

    missing = "sensor-data-missing"
    code, lines, err = _probe(tmp_path, sim_port, {**kafka, "topic": missing}, capsys)
    assert code == 1
    assert lines[1] == (
        f"FAIL output kafka: topic {missing}: not on the cluster: create it, or fix output.topic"
    )
    assert "the output did not answer" in err
    # The probe asked for the cluster's metadata, not the topic's: nothing was created.
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    assert missing not in admin.list_topics(timeout=10).topics

    # The daemon's security settings are what the probe connects with: SASL against this
    # PLAINTEXT listener fails the handshake, named in the line.
    sasl = {
        **kafka,
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_username": "rig-edge",
        "sasl_password_env": "PATH",
    }
    code, lines, _err = _probe(tmp_path, sim_port, sasl, capsys)
    assert code == 1
    assert lines[0].startswith(
        f"FAIL output kafka: {kafka_broker.bootstrap}: no broker answered a metadata request "
        "within 10 s (security_protocol SASL_PLAINTEXT): "
    ), lines
    assert "SASL PLAIN mechanism handshake failed" in lines[0], lines

    wrong = f"127.0.0.1:{free_port()}"
    code, lines, _err = _probe(tmp_path, sim_port, {**kafka, "bootstrap_servers": wrong}, capsys)
    assert code == 1
    assert len(lines) == 1, lines  # no topic line without a broker
    assert lines[0].startswith(
        f"FAIL output kafka: {wrong}: no broker answered a metadata request within 10 s "
        "(security_protocol PLAINTEXT): "
    ), lines
    assert f"Connect to ipv4#{wrong} failed: Connection refused" in lines[0], lines


def test_http_output_probe(
    tmp_path: Path,
    sim_port: int,
    database_url: str,
    log_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    env = {"DATABASE_URL": database_url, "RIG_INGEST_API_KEY": KEY}
    cloud = Service("cloud", ["cloud.cli", "serve", "--port", str(port)], log_dir, env).start()
    with psycopg.connect(database_url) as conn:
        own_key = create_edge_key(conn, EDGE, None)
        other_key = create_edge_key(conn, "another-edge", None)
    url = f"http://127.0.0.1:{port}/api/v1/ingest"
    try:
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), 60, "cloud API", services=[cloud]
        )
        answers: dict[str, tuple[int, list[str]]] = {}
        for name, key in (("bootstrap", KEY), ("own", own_key), ("other", other_key)):
            (tmp_path / f"{name}.key").write_text(key)
        (tmp_path / "wrong.key").write_text("k-" + "w" * 30)
        for name in ("bootstrap", "own", "other", "wrong"):
            output = {"kind": "http", "url": url, "api_key_file": str(tmp_path / f"{name}.key")}
            code, lines, _err = _probe(tmp_path, sim_port, output, capsys)
            answers[name] = (code, lines)
        dead = {**output, "url": f"http://127.0.0.1:{free_port()}/api/v1/ingest"}
        answers["dead"] = _probe(tmp_path, sim_port, dead, capsys)[:2]
        wrong_path = {**output, "url": f"http://127.0.0.1:{port}/api/v1/ingestion"}
        wrong_path["api_key_file"] = str(tmp_path / "bootstrap.key")
        answers["path"] = _probe(tmp_path, sim_port, wrong_path, capsys)[:2]
    finally:
        cloud.stop()
    assert answers["bootstrap"] == (
        0,
        [
            f"ok   output http: {url}: API key accepted for edge {EDGE} "
            "(the bootstrap key (any edge)); nothing stored"
        ],
    )
    assert answers["own"] == (
        0,
        [
            f"ok   output http: {url}: API key accepted for edge {EDGE} (edge {EDGE}); "
            "nothing stored"
        ],
    )
    code, (line,) = answers["other"]
    assert code == 1
    assert line.startswith(
        f"FAIL output http: {url}: API key may not write edge_id '{EDGE}' (HTTP 403): "
        f"the key of api_key_file {tmp_path / 'other.key'}: "
    ), line
    assert "belongs to edge 'another-edge'" in line
    code, (line,) = answers["wrong"]
    assert code == 1
    assert line == (
        f"FAIL output http: {url}: API key refused (HTTP 401): the key of api_key_file "
        f"{tmp_path / 'wrong.key'}: unknown or revoked API key"
    )
    code, (line,) = answers["dead"]
    assert code == 1 and "not reachable: ConnectError" in line, line
    code, (line,) = answers["path"]
    assert code == 1 and "(HTTP 404): url must be the cloud's /api/v1/ingest" in line, line
    assert stored_count(database_url) == 0  # probes store nothing
