"""OPC-UA security: Basic256Sha256 (sign & encrypt) with the generated certificate, username
and password login, and refusal of wrong passwords and of anonymous users when disabled."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID

from simulator.config import SimConfig
from simulator.protocols.opcua import NAMESPACE_URI
from simulator.server import run_simulator
from tests.support.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_encrypted_session_with_username_and_refusals(tmp_path: Path) -> None:
    port = free_port()
    config = SimConfig.model_validate(
        {
            "machines": ["A"],
            "rate_hz": 5,
            "modbus": {"enabled": False},
            "opcua": {
                "enabled": True,
                "port": port,
                "security": ["basic256sha256"],
                "allow_anonymous": False,
                "cert_dir": str(tmp_path / "pki"),
                "users": [{"username": "operator", "password": "s3cret-pw"}],
            },
        }
    )
    url = f"opc.tcp://127.0.0.1:{port}/rig-alpha/"
    client_key, client_cert = tmp_path / "client-key.pem", tmp_path / "client-cert.der"

    async def connect(user: str | None, password: str | None) -> float:
        client = Client(url, timeout=10)
        client.application_uri = "urn:rig-alpha:test-client"
        await client.set_security_string(
            f"Basic256Sha256,SignAndEncrypt,{client_cert},{client_key}"
        )
        if user is not None:
            client.set_user(user)
            client.set_password(password or "")
        async with client:
            ns = await client.get_namespace_index(NAMESPACE_URI)
            node = client.get_node(ua.NodeId("Rig/A/mechanical/rpm", ns))
            return float(await node.read_value())

    async def scenario() -> None:
        await setup_self_signed_certificate(
            client_key,
            client_cert,
            "urn:rig-alpha:test-client",
            "localhost",
            [ExtendedKeyUsageOID.CLIENT_AUTH],
            {"commonName": "test-client"},
        )
        stop, started = asyncio.Event(), asyncio.Event()
        sim = asyncio.create_task(run_simulator(config, stop, started=started))
        await asyncio.wait_for(started.wait(), 30)
        try:
            assert await connect("operator", "s3cret-pw") > 1000
            with pytest.raises(ua.UaError):
                await connect("operator", "wrong")
            with pytest.raises(ua.UaError):
                await connect(None, None)
            # No unencrypted endpoint is offered when only basic256sha256 is configured.
            plain = Client(url, timeout=5)
            endpoints = await plain.connect_and_get_server_endpoints()
            assert {e.SecurityPolicyUri.rsplit("#", 1)[-1] for e in endpoints} == {"Basic256Sha256"}
        finally:
            stop.set()
            await sim

    asyncio.run(scenario())
    assert (tmp_path / "pki" / "server-cert.der").exists()
