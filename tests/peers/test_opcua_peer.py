"""The OPC-UA input against node-opcua, a server not built on asyncua (``tests/peers/opcua``,
installed from the npm registry by ``make peer-deps``): units read from EngineeringUnits and
converted at the door, a wrong unit reported once instead of a stream of anomalies,
PascalCase browse names, and a client certificate made as the technician README says."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.pipeline import buffered_documents, start_edge
from tests.support.processes import free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PEER = Path(__file__).with_name("opcua")
NS = "nsu=urn:rig-alpha:peer;s="
PSI_PER_BAR = 1e5 / 6894.757293168
PASSWORD = "peer-secret-1"


@pytest.fixture
def node_opcua(tmp_path: Path) -> Iterator[str]:
    """A node-opcua server process; its endpoint."""
    if shutil.which("node") is None or not (PEER / "node_modules" / "node-opcua").is_dir():
        pytest.fail("node-opcua is not installed: run make peer-deps (npm ci in tests/peers/opcua)")
    port = free_port()
    log = (tmp_path / "node-opcua.log").open("ab")
    proc = subprocess.Popen(
        ["node", str(PEER / "server.js"), "--port", str(port), "--pki", str(tmp_path / "pki")],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PEER_OPCUA_PASSWORD": PASSWORD},
        start_new_session=True,
    )
    log.close()

    def listening() -> bool:
        assert proc.poll() is None, (tmp_path / "node-opcua.log").read_text(errors="replace")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_until(listening, 60, "node-opcua listening")
        yield f"opc.tcp://127.0.0.1:{port}/peer"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _config(tmp_path: Path, opcua: dict[str, Any], name: str = "edge") -> Path:
    doc = {
        "edge_id": "peer-edge",
        "buffer": {"path": str(tmp_path / f"{name}-buffer.db")},
        "metrics": {"port": free_port()},
        # nothing listens there: the buffer is where readings are stored
        "output": {"kind": "http", "url": "http://127.0.0.1:9/x", "api_key_env": "PATH"},
        "inputs": {"opcua": [opcua]},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _edge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_psi_node_mapped_to_the_bar_sensor_stores_bar(node_opcua: str, tmp_path: Path) -> None:
    """Browsing finds PascalCase Pressure/Temperature/BearingTemp/RPM; their EngineeringUnits
    (psi, °C, °F, r/min) are converted to the catalog units (bar, °F, °F, RPM) before the
    readings are committed; SerialNumber is skipped and said so."""
    cfg = _config(
        tmp_path,
        {
            "name": "peer",
            "endpoint": node_opcua,
            "publishing_interval_ms": 100,
            "sampling_interval_ms": 0,
            "machines": [{"machine_id": "P", "browse_root": f"{NS}P"}],
        },
    )
    edge = start_edge(cfg, tmp_path)
    try:
        wait_until(
            lambda: len(buffered_documents(tmp_path / "edge-buffer.db")) >= 10,
            90,
            "ten readings stored",
            services=[edge],
        )
    finally:
        edge.stop()
    readings = buffered_documents(tmp_path / "edge-buffer.db")
    pressures = set()
    for reading in readings:
        values = reading["values"]
        assert set(values) == {"pressure", "temperature", "bearing_temp", "rpm"}, values
        assert not reading.get("quality"), reading
        psi = values["pressure"] * PSI_PER_BAR
        assert 150 - 1e-6 <= psi <= 154 + 1e-6 and abs(psi - round(psi)) < 1e-6, values
        pressures.add(round(values["pressure"], 4))
        assert abs(values["temperature"] - 70.7) < 1e-9  # 21.5 °C
        assert values["bearing_temp"] == 145.0 and values["rpm"] == 3200.0
    assert len(pressures) > 1  # every sample converted, not one value repeated
    log = (tmp_path / "rig-edge.log").read_text(errors="replace")
    assert "SerialNumber (no sensor of that name)" in log
    assert "unit mismatch" not in log


def test_probe_names_converted_and_mismatched_units(node_opcua: str, tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        {
            "name": "peer",
            "endpoint": node_opcua,
            "machines": [
                # declared and EngineeringUnits agree: converted
                {
                    "machine_id": "P",
                    "nodes": {"pressure": {"node": f"{NS}P/Pressure", "unit": "psi"}},
                },
                # EngineeringUnits says °C for the pressure sensor
                {"machine_id": "Q", "browse_root": f"{NS}Q"},
                # the config says bar, the node says psi
                {
                    "machine_id": "R",
                    "nodes": {"pressure": {"node": f"{NS}P/Pressure", "unit": "bar"}},
                },
            ],
        },
    )
    probed = _edge("check-config", "-c", str(cfg), "--probe")
    assert probed.returncode == 1, probed.stdout + probed.stderr
    lines = {
        line.split(":")[1].strip(): line for line in probed.stdout.splitlines() if ": " in line
    }
    assert lines["P"].startswith("ok   peer: P: 1 nodes read; converted: pressure from psi")
    assert lines["Q"].startswith("FAIL peer: Q:")
    assert (
        "pressure: the node's EngineeringUnits: unit '°C' (temperature) does not fit" in lines["Q"]
    )
    assert lines["R"].startswith("FAIL peer: R:")
    assert "EngineeringUnits is psi but the config says unit bar" in lines["R"]


def test_wrong_declared_unit_is_refused_by_check_config(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        {
            "endpoint": "opc.tcp://127.0.0.1:4840/",
            "machines": [
                {"machine_id": "P", "nodes": {"pressure": {"node": "ns=2;s=x", "unit": "degC"}}}
            ],
        },
    )
    checked = _edge("check-config", "-c", str(cfg))
    assert checked.returncode == 2
    assert "inputs.opcua[0].machines[0]" in checked.stderr
    assert (
        "nodes.pressure: unit 'degC' (temperature) does not fit sensor 'pressure'" in checked.stderr
    )


def _readme_openssl(tmp_path: Path, uri: str) -> tuple[Path, Path]:
    """The certificate commands of edge/inputs/opcua/README.md, run as written there."""
    readme = (Path(__file__).parents[2] / "edge/inputs/opcua/README.md").read_text()
    block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    env = {**os.environ, "EDGE_URI": uri, "DIR": str(tmp_path)}
    subprocess.run(["bash", "-euc", block], env=env, check=True, capture_output=True)
    return tmp_path / "opcua-client-cert.der", tmp_path / "opcua-client-key.pem"


def test_certificate_made_as_the_readme_says_is_accepted(node_opcua: str, tmp_path: Path) -> None:
    """Basic256Sha256 Sign & Encrypt with a user: the certificate the README's openssl
    commands make for urn:rig-alpha:edge:<edge_id> is the one the client presents; one made
    for another URI is refused before connecting, saying why."""
    cert, key = _readme_openssl(tmp_path, "urn:rig-alpha:edge:peer-edge")
    (tmp_path / "password").write_text(PASSWORD)
    secure = {
        "name": "peer",
        "endpoint": node_opcua,
        "security": "basic256sha256_sign_encrypt",
        "certificate": str(cert),
        "private_key": str(key),
        "username": "rig-edge",
        "password_file": str(tmp_path / "password"),
        "machines": [{"machine_id": "P", "browse_root": f"{NS}P"}],
    }
    probed = _edge("check-config", "-c", str(_config(tmp_path, secure)), "--probe", "--inputs-only")
    assert probed.returncode == 0, probed.stdout + probed.stderr
    assert "ok   peer: P: 4 nodes read" in probed.stdout

    # The server itself refuses a certificate whose URI is not the client's (what the edge's
    # check before connecting spares the technician from decoding).
    async def connect_as(uri: str) -> None:
        from asyncua import Client

        client = Client(node_opcua, timeout=10)
        client.application_uri = uri
        await client.set_security_string(f"Basic256Sha256,SignAndEncrypt,{cert},{key}")
        client.set_user("rig-edge")
        client.set_password(PASSWORD)
        await client.connect()
        await client.disconnect()

    with pytest.raises(Exception, match="BadCertificateUriInvalid"):
        asyncio.run(connect_as("urn:plant:somewhere-else"))

    other = {**secure, "application_uri": "urn:plant:somewhere-else"}
    probed = _edge("check-config", "-c", str(_config(tmp_path, other, "other")), "--probe")
    assert probed.returncode == 1
    assert "BadCertificateUriInvalid" in probed.stdout
    assert "the client's application URI is urn:plant:somewhere-else" in probed.stdout


def test_scan_shows_engineering_units_and_the_sensor_browsing_picks(node_opcua: str) -> None:
    from edge.inputs.opcua.scan import scan_opcua

    text = "\n".join(asyncio.run(scan_opcua(node_opcua)))
    assert "Pressure = " in text and " psi   [nsu=urn:rig-alpha:peer;s=P/Pressure]" in text
    assert "(browse_root maps it to pressure)" in text
    assert "BearingTemp = 145.0 °F" in text and "(browse_root maps it to bearing_temp)" in text
    assert "SerialNumber = 'SN-4711'   [nsu=urn:rig-alpha:peer;s=P/SerialNumber]\n" in text + "\n"
