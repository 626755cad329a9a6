"""Typed configuration of the OPC-UA input."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edge.inputs.base import InputConfig
from shared.configtypes import ENV_NAME_RE, MachineId, SecretRef, SensorName, StrictModel
from shared.units import UnitError, normalise_unit, sensor_converter

# The client's application URI when the config sets none: the URI in the client
# certificate's subjectAltName must be this one (servers refuse a mismatch with
# BadCertificateUriInvalid), for the daemon and check-config --probe alike.
DEFAULT_APPLICATION_URI = "urn:rig-alpha:edge:{edge_id}"


class NodeMapping(StrictModel):
    """One node of a machine with what the value needs: ``value = raw * scale + offset`` in
    ``unit``, converted to the sensor's catalog unit. Without ``unit`` the node's
    EngineeringUnits property says it; when both are there they must agree."""

    node: str = Field(min_length=1, description="ns=2;s=... or nsu=<uri>;s=...")
    unit: str | None = None
    scale: float = 1.0
    offset: float = 0.0


class OpcUaMachine(StrictModel):
    """Which nodes make up one machine's reading.

    ``nodes`` maps sensor names to node ids (``ns=2;s=...`` or, robust against namespace
    renumbering, ``nsu=<namespace uri>;s=...``), or to ``{node, unit, scale, offset}``.
    ``browse_root`` instead maps every variable below that object whose browse name is a
    sensor name: a core sensor in any case (``Temperature``, ``BearingTemp``, ``RPM``) or a
    snake_case custom name; what it skips is reported.
    """

    machine_id: MachineId
    nodes: dict[SensorName, str | NodeMapping] = Field(default_factory=dict)
    browse_root: str | None = Field(default=None, description="e.g. nsu=urn:x;s=Rig/A")
    sample_counter: str | None = Field(
        default=None, description="node the device bumps per sample; a reading per change"
    )

    @model_validator(mode="after")
    def _something_to_read(self) -> OpcUaMachine:
        if not self.nodes and not self.browse_root:
            raise ValueError("set nodes: {sensor: node id} or browse_root")
        for sensor, mapping in self.nodes.items():
            if isinstance(mapping, NodeMapping) and mapping.unit is not None:
                try:
                    sensor_converter(sensor, mapping.unit)  # names the unit as written
                    mapping.unit = normalise_unit(mapping.unit)
                except UnitError as exc:
                    raise ValueError(f"nodes.{sensor}: {exc}") from None
        return self

    def node_mappings(self) -> dict[str, NodeMapping]:
        """Every listed node as a ``NodeMapping`` (a plain node id has no unit of its own)."""
        return {
            sensor: m if isinstance(m, NodeMapping) else NodeMapping(node=m)
            for sensor, m in self.nodes.items()
        }


class OpcUaInputConfig(InputConfig):
    """One OPC-UA server and the machines whose nodes it serves."""

    name: str = Field(default="opcua", min_length=1, max_length=64)
    endpoint: str = Field(pattern=r"^opc\.tcp://")
    security: Literal["none", "basic256sha256_sign", "basic256sha256_sign_encrypt"] = "none"
    certificate: Path | None = Field(default=None, description="client certificate (DER/PEM)")
    private_key: Path | None = None
    application_uri: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$",
        description="the client's URI; default urn:rig-alpha:edge:<edge_id>. The client "
        "certificate's subjectAltName URI must be the same",
    )
    username: str | None = None
    password_env: str | None = Field(default=None, pattern=ENV_NAME_RE.pattern)
    password_file: Path | None = None
    sampling_interval_ms: float = Field(default=100.0, ge=0, le=3_600_000)
    publishing_interval_ms: float = Field(default=100.0, gt=0, le=3_600_000)
    timeout_s: float = Field(default=5.0, gt=0, le=120)
    reconnect_max_s: float = Field(default=10.0, gt=0, le=600)
    machines: list[OpcUaMachine] = Field(min_length=1)

    @model_validator(mode="after")
    def _security_complete(self) -> OpcUaInputConfig:
        if self.security != "none" and not (self.certificate and self.private_key):
            raise ValueError(f"security {self.security} needs certificate and private_key")
        if self.username and not (self.password_env or self.password_file):
            raise ValueError("username needs password_env or password_file")
        return self

    def machine_ids(self) -> list[str]:
        return [m.machine_id for m in self.machines]

    def client_uri(self, edge_id: str) -> str:
        """The application URI the client presents (daemon and probe alike)."""
        return self.application_uri or DEFAULT_APPLICATION_URI.format(edge_id=edge_id)

    @property
    def password_ref(self) -> SecretRef | None:
        return SecretRef.of(self, "password")

    def password(self) -> str | None:
        ref = self.password_ref
        return None if ref is None else ref.read()
