"""The MQTT input against a real Mosquitto that listens with TLS only: ``check-config
--probe`` connects the way the daemon does (the same client set-up, with the CA), and the
input itself receives over TLS. The certificates are made here: a CA and a server
certificate for 127.0.0.1 signed by it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge.cli import main as edge_main
from edge.inputs.mqtt.config import MqttInputConfig
from edge.inputs.mqtt.input import MqttInput
from edge.metrics import EdgeMetrics
from shared.message import Reading
from tests.support.processes import Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _make_ca(
    directory: Path, label: str
) -> tuple[Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"rig-alpha test CA {label}"))
        .issuer_name(_name(f"rig-alpha test CA {label}"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"ca-{label}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


@dataclass
class TlsBroker:
    port: int
    ca_file: Path
    other_ca_file: Path  # a CA that did not sign the broker's certificate


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    pki = tmp_path / "pki"
    pki.mkdir()
    ca_file, ca_cert, ca_key = _make_ca(pki, "good")
    other_ca_file, _, _ = _make_ca(pki, "other")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(IPv4Address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = pki / "server.pem", pki / "server-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_file)
    broker = Mosquitto(tmp_path, tls=(ca_file, cert_file, key_file))
    broker.start()
    try:
        yield TlsBroker(broker.port, ca_file, other_ca_file)
    finally:
        broker.stop()


def _input_doc(port: int, prefix: str, tls: dict[str, str] | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "plant",
        "host": "127.0.0.1",
        "port": port,
        "client_id": f"edge-{prefix}",
        "subscriptions": [
            {"topic": f"{prefix}/+/telemetry", "machine_from_topic": 1, "values_path": "values"}
        ],
    }
    if tls is not None:
        doc["tls"] = tls
    return doc


def _edge_config(tmp_path: Path, name: str, mqtt_doc: dict[str, Any]) -> Path:
    doc = {
        "edge_id": "tls-test",
        "buffer": {"path": str(tmp_path / "buffer.db")},
        "inputs": {"mqtt": [mqtt_doc]},
        "output": {"kind": "http", "url": "http://127.0.0.1:1/x", "api_key_env": "PATH"},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def test_probe_connects_to_a_tls_only_broker(
    tls_broker: TlsBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    port = tls_broker.port
    good = _edge_config(
        tmp_path, "good", _input_doc(port, prefix, {"ca_file": str(tls_broker.ca_file)})
    )
    assert edge_main(["check-config", "-c", str(good), "--probe", "--inputs-only"]) == 0
    out = capsys.readouterr().out
    assert f"ok   plant: 127.0.0.1:{port} (TLS): connected; 1 subscription(s) granted" in out

    # The listener speaks TLS only: a config without tls: cannot connect.
    plain = _edge_config(tmp_path, "plain", _input_doc(port, prefix, None))
    assert edge_main(["check-config", "-c", str(plain), "--probe"]) == 1
    assert f"FAIL plant: 127.0.0.1:{port}: " in capsys.readouterr().out

    # A CA that did not sign the broker's certificate: refused in the handshake.
    other = _edge_config(
        tmp_path, "other", _input_doc(port, prefix, {"ca_file": str(tls_broker.other_ca_file)})
    )
    assert edge_main(["check-config", "-c", str(other), "--probe"]) == 1
    out = capsys.readouterr().out
    assert f"FAIL plant: 127.0.0.1:{port} (TLS): " in out and "CERTIFICATE_VERIFY_FAILED" in out


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_input_receives_over_tls(tls_broker: TlsBroker) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    config = MqttInputConfig.model_validate(
        _input_doc(tls_broker.port, prefix, {"ca_file": str(tls_broker.ca_file)})
    )
    readings: list[Reading] = []

    def emit(reading: Reading, ack: Callable[[], None] | None = None) -> bool:
        readings.append(reading)
        if ack is not None:
            ack()  # as the daemon does once the reading is committed
        return True

    async def scenario() -> None:
        received = MqttInput(config, "e1", emit, EdgeMetrics())
        stop = asyncio.Event()
        task = asyncio.create_task(received.run(stop))
        publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{prefix}")
        publisher.tls_set(ca_certs=str(tls_broker.ca_file))
        try:
            await _until(lambda: received.health() == {"plant": True}, 30, "connected over TLS")
            publisher.connect("127.0.0.1", tls_broker.port)
            publisher.loop_start()
            payload = orjson.dumps({"values": {"rpm": 1500.0}})

            def published_and_received() -> bool:
                # Published until the input has it: its subscription may still be on its way.
                if not readings:
                    publisher.publish(f"{prefix}/A/telemetry", payload, qos=1)
                return bool(readings)

            await _until(published_and_received, 30, "a reading received over TLS")
        finally:
            publisher.loop_stop()
            publisher.disconnect()
            stop.set()
            await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
    assert readings[0].machine_id == "A" and readings[0].values == {"rpm": 1500.0}
