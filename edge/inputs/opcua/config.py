"""Typed configuration of the OPC-UA input."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edge.inputs.base import InputConfig
from shared.configtypes import ENV_NAME_RE, MachineId, SecretRef, SensorName, StrictModel


class OpcUaMachine(StrictModel):
    """Which nodes make up one machine's reading.

    ``nodes`` maps sensor names to node ids (``ns=2;s=...`` or, robust against namespace
    renumbering, ``nsu=<namespace uri>;s=...``). ``browse_root`` instead maps every variable
    below that object whose browse name is a sensor name (core or snake_case custom).
    """

    machine_id: MachineId
    nodes: dict[SensorName, str] = Field(default_factory=dict)
    browse_root: str | None = Field(default=None, description="e.g. nsu=urn:x;s=Rig/A")
    sample_counter: str | None = Field(
        default=None, description="node the device bumps per sample; a reading per change"
    )

    @model_validator(mode="after")
    def _something_to_read(self) -> OpcUaMachine:
        if not self.nodes and not self.browse_root:
            raise ValueError("set nodes: {sensor: node id} or browse_root")
        return self


class OpcUaInputConfig(InputConfig):
    """One OPC-UA server and the machines whose nodes it serves."""

    name: str = Field(default="opcua", min_length=1, max_length=64)
    endpoint: str = Field(pattern=r"^opc\.tcp://")
    security: Literal["none", "basic256sha256_sign", "basic256sha256_sign_encrypt"] = "none"
    certificate: Path | None = Field(default=None, description="client certificate (DER/PEM)")
    private_key: Path | None = None
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

    @property
    def password_ref(self) -> SecretRef | None:
        return SecretRef.of(self, "password")

    def password(self) -> str | None:
        ref = self.password_ref
        return None if ref is None else ref.read()
