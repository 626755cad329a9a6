"""OPC-UA serving of the simulated machines (asyncua).

Address space: ``Objects/Rig/<machine>/<category>/<sensor>`` (Double, with EngineeringUnits
and EURange properties) plus ``Rig/<machine>/SampleCounter`` (UInt32, written last in each
update) and ``Rig/<machine>/State`` (UInt16). Node ids are strings in the simulator's
namespace: ``ns=<idx>;s=Rig/A/thermal/coolant_temp``. Security policies None and
Basic256Sha256 (Sign & Encrypt) with a generated self-signed certificate; anonymous and
username/password logins.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asyncua import Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography.x509.oid import ExtendedKeyUsageOID

from shared.catalog import CORE_SENSORS
from simulator.config import OpcUaSettings
from simulator.engine import Sample
from simulator.protocols.modbus import check_port_free

if TYPE_CHECKING:
    from asyncua.server.internal_server import InternalServer

log = logging.getLogger(__name__)

NAMESPACE_URI = "urn:rig-alpha:simulator"
APPLICATION_URI = "urn:rig-alpha:simulator:opcua"


def sensor_node_id(namespace: int, machine: str, category: str, sensor: str) -> ua.NodeId:
    return ua.NodeId(f"Rig/{machine}/{category}/{sensor}", namespace)


class _PasswordUsers(UserManager):
    def __init__(self, settings: OpcUaSettings) -> None:
        self.allow_anonymous = settings.allow_anonymous
        self.passwords: dict[str, str] = {}
        for user in settings.users:
            password = user.password or os.environ.get(user.password_env or "", "")
            if not password:
                raise ValueError(f"OPC-UA user {user.username}: ${user.password_env} is not set")
            self.passwords[user.username] = password

    def get_user(
        self,
        iserver: InternalServer,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is None:
            return User(role=UserRole.User) if self.allow_anonymous else None
        expected = self.passwords.get(username)
        if expected is not None and password == expected:
            return User(role=UserRole.User, name=username)
        return None


class OpcUaPublisher:
    def __init__(self, settings: OpcUaSettings, machines: list[str]) -> None:
        self.settings = settings
        self.machines = machines
        self.server = Server(user_manager=_PasswordUsers(settings))
        self.namespace = 0
        self._latest: dict[str, Sample] = {}
        self._pending = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._nodes: dict[str, tuple[list[ua.NodeId], ua.NodeId, ua.NodeId]] = {}
        self.endpoint = f"opc.tcp://{settings.host}:{settings.port}/rig-alpha/"

    async def start(self) -> None:
        check_port_free(self.settings.host, self.settings.port, "OPC-UA")
        server = self.server
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("Rig Alpha simulator")
        await server.set_application_uri(APPLICATION_URI)
        policies = []
        if "none" in self.settings.security:
            policies.append(ua.SecurityPolicyType.NoSecurity)
        if "basic256sha256" in self.settings.security:
            policies.append(ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt)
            await self._certificate(self.settings.cert_dir)
        server.set_security_policy(policies)
        tokens: list[type] = [ua.UserNameIdentityToken]
        if self.settings.allow_anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        server.set_identity_tokens(tokens)
        self.namespace = await server.register_namespace(NAMESPACE_URI)
        await self._build_address_space()
        await server.start()
        self._writer = asyncio.create_task(self._write_loop())

    async def _certificate(self, cert_dir: Path) -> None:
        cert_dir.mkdir(parents=True, exist_ok=True)
        key, cert = cert_dir / "server-key.pem", cert_dir / "server-cert.der"
        await setup_self_signed_certificate(
            key,
            cert,
            APPLICATION_URI,
            self.settings.host,
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            {"countryName": "US", "organizationName": "Rig Alpha", "commonName": "rig-sim"},
        )
        await self.server.load_certificate(str(cert))
        await self.server.load_private_key(str(key))

    async def _build_address_space(self) -> None:
        ns = self.namespace
        objects = self.server.nodes.objects
        rig = await objects.add_object(ua.NodeId("Rig", ns), ua.QualifiedName("Rig", ns))
        for machine in self.machines:
            node = await rig.add_object(
                ua.NodeId(f"Rig/{machine}", ns), ua.QualifiedName(machine, ns)
            )
            categories = {}
            sensor_ids = []
            for spec in CORE_SENSORS:
                category = spec.category.value
                if category not in categories:
                    categories[category] = await node.add_folder(
                        ua.NodeId(f"Rig/{machine}/{category}", ns), ua.QualifiedName(category, ns)
                    )
                node_id = sensor_node_id(ns, machine, category, spec.name)
                variable = await categories[category].add_variable(
                    node_id, ua.QualifiedName(spec.name, ns), spec.typical, ua.VariantType.Double
                )
                await variable.add_property(
                    ua.NodeId(f"Rig/{machine}/{category}/{spec.name}/EngineeringUnits", ns),
                    "EngineeringUnits",
                    ua.EUInformation(
                        NamespaceUri="urn:rig-alpha:units",
                        DisplayName=ua.LocalizedText(spec.unit),
                        Description=ua.LocalizedText(spec.unit),
                    ),
                )
                await variable.add_property(
                    ua.NodeId(f"Rig/{machine}/{category}/{spec.name}/EURange", ns),
                    "EURange",
                    ua.Range(Low=spec.min_value, High=spec.max_value),
                )
                sensor_ids.append(node_id)
            counter = await node.add_variable(
                ua.NodeId(f"Rig/{machine}/SampleCounter", ns),
                ua.QualifiedName("SampleCounter", ns),
                0,
                ua.VariantType.UInt32,
            )
            state = await node.add_variable(
                ua.NodeId(f"Rig/{machine}/State", ns),
                ua.QualifiedName("State", ns),
                0,
                ua.VariantType.UInt16,
            )
            self._nodes[machine] = (sensor_ids, counter.nodeid, state.nodeid)

    def publish(self, samples: list[Sample]) -> None:
        for sample in samples:
            self._latest[sample.machine_id] = sample
        self._pending.set()

    async def _write_loop(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            latest, self._latest = self._latest, {}
            for machine, sample in latest.items():
                await self._write(machine, sample)

    async def _write(self, machine: str, sample: Sample) -> None:
        sensor_ids, counter_id, state_id = self._nodes[machine]
        when = datetime.fromtimestamp(sample.device_ts_ms / 1000.0, UTC)
        write = self.server.write_attribute_value
        for node_id, value in zip(sensor_ids, sample.values, strict=True):
            if math.isnan(value):
                data = ua.DataValue(
                    StatusCode=ua.StatusCode(ua.StatusCodes.BadNoCommunication),
                    SourceTimestamp=when,
                )
            else:
                data = ua.DataValue(ua.Variant(value, ua.VariantType.Double), SourceTimestamp=when)
            await write(node_id, data)
        await write(
            state_id,
            ua.DataValue(ua.Variant(sample.state, ua.VariantType.UInt16), SourceTimestamp=when),
        )
        # Counter last: a client that sees a new counter has every value of that sample.
        await write(
            counter_id,
            ua.DataValue(ua.Variant(sample.counter, ua.VariantType.UInt32), SourceTimestamp=when),
        )

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        await self.server.stop()
