"""The simulator's scenario: machines, rate, protocols, operating states, faults, replays.

Loaded from YAML (``rig-sim run --scenario FILE``) or built from command-line flags; every
error names the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from shared.configfile import load_yaml_model
from shared.configtypes import CoreSensorName, StrictModel
from shared.message import MACHINE_ID_RE


class ModbusSettings(StrictModel):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=5020, ge=1, le=65535)


class ModbusRtuSettings(StrictModel):
    """Modbus RTU over a pseudo-terminal pair: the simulator serves one end, and ``link`` is
    a symlink to the other end for the client (e.g. rig-edge with an RTU source)."""

    enabled: bool = False
    link: Path = Path("/tmp/rig-sim-rtu")
    baudrate: int = Field(default=19200, gt=0)


class OpcUaUser(StrictModel):
    username: str = Field(min_length=1)
    password_env: str | None = None
    password: str | None = Field(default=None, description="for tests and demos only")

    @model_validator(mode="after")
    def _password_source(self) -> OpcUaUser:
        if not (self.password_env or self.password):
            raise ValueError("set password_env (or password, for demos)")
        return self


class OpcUaSettings(StrictModel):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=4840, ge=1, le=65535)
    security: list[Literal["none", "basic256sha256"]] = Field(
        default_factory=lambda: ["none", "basic256sha256"], min_length=1
    )
    allow_anonymous: bool = True
    users: list[OpcUaUser] = Field(default_factory=list)
    cert_dir: Path = Path("var/sim-opcua-pki")


class MqttSettings(StrictModel):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    topic_prefix: str = Field(default="rig", pattern=r"^[A-Za-z0-9_/-]+$")
    # The "plant device" style: one topic per sensor with a different payload shape.
    plant_prefix: str = Field(default="plant", pattern=r"^[A-Za-z0-9_/-]+$")
    plant_sensors: list[CoreSensorName] | Literal["all"] = Field(default_factory=list)
    qos: Literal[0, 1] = 1
    username: str | None = None
    password_env: str | None = None


FaultKind = Literal["bearing_wear", "spike", "stuck", "drift", "dropout", "cavitation", "clock"]

# A device clock may be off by as much as the span a uint64 millisecond register, an OPC-UA
# DateTime and an ISO 8601 string can all carry (1970 to the end of year 9999); the served
# time is clamped into that span (simulator.engine.Sample.device_ts_ms).
MAX_CLOCK_OFFSET_S = 253_402_300_800.0


class FaultSpec(StrictModel):
    kind: FaultKind
    machine: str
    start_s: float = Field(ge=0)
    duration_s: float = Field(gt=0)
    sensors: list[CoreSensorName] = Field(default_factory=list)
    magnitude: float = Field(default=1.0, gt=0, description="kind-specific strength")
    # clock: how far the device's clock runs ahead (negative: behind) while the fault lasts.
    # Only the timestamps the device serves change; the record keeps the true time.
    offset_s: float = Field(default=0.0, ge=-MAX_CLOCK_OFFSET_S, le=MAX_CLOCK_OFFSET_S)

    @model_validator(mode="after")
    def _needs_sensors(self) -> FaultSpec:
        if self.kind in ("spike", "stuck", "drift", "dropout") and not self.sensors:
            raise ValueError(f"a {self.kind} fault needs sensors: [...]")
        if self.kind == "clock" and self.offset_s == 0:
            raise ValueError("a clock fault needs offset_s (seconds the device clock is off)")
        if self.kind != "clock" and self.offset_s != 0:
            raise ValueError(f"offset_s applies to clock faults, not {self.kind}")
        return self


class StateChange(StrictModel):
    machine: str
    at_s: float = Field(ge=0)
    state: Literal["running", "idle", "stopped"]


class ReplaySpec(StrictModel):
    """Play a CSV data set as one machine: each row is one sample, in order."""

    machine: str
    file: Path
    format: Literal["skab", "cmapss", "csv"] = "csv"
    # CSV column -> core sensor. Unmapped sensors keep the machine's simulated values.
    columns: dict[str, CoreSensorName] = Field(min_length=1)
    cmapss_unit: int | None = Field(default=None, ge=1, description="C-MAPSS engine to play")
    loop: bool = False


class SimConfig(StrictModel):
    machines: list[str] = Field(
        default_factory=lambda: ["A", "B", "C"], min_length=1, max_length=247
    )
    rate_hz: float = Field(default=1.0, gt=0.0, le=1000.0)
    seed: int = 42
    modbus: ModbusSettings = Field(default_factory=ModbusSettings)
    modbus_rtu: ModbusRtuSettings = Field(default_factory=ModbusRtuSettings)
    opcua: OpcUaSettings = Field(default_factory=OpcUaSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    states: list[StateChange] = Field(default_factory=list)
    faults: list[FaultSpec] = Field(default_factory=list)
    replay: list[ReplaySpec] = Field(default_factory=list)
    record_path: Path | None = None
    ground_truth_path: Path | None = None
    # Every machine's clock off by this much from the start (``--clock-offset-s``); clock
    # faults add to it while they last.
    clock_offset_s: float = Field(default=0.0, ge=-MAX_CLOCK_OFFSET_S, le=MAX_CLOCK_OFFSET_S)

    @model_validator(mode="before")
    @classmethod
    def _flat_modbus(cls, data: object) -> object:
        """``modbus_host``/``modbus_port`` (CLI flags) are shorthands for ``modbus.*``."""
        if isinstance(data, dict) and ("modbus_host" in data or "modbus_port" in data):
            data = dict(data)
            modbus = dict(data.get("modbus") or {})
            for flat, key in (("modbus_host", "host"), ("modbus_port", "port")):
                if flat in data:
                    modbus[key] = data.pop(flat)
            data["modbus"] = modbus
        return data

    @field_validator("machines")
    @classmethod
    def _valid_ids(cls, machines: list[str]) -> list[str]:
        for machine in machines:
            if not MACHINE_ID_RE.match(machine):
                raise ValueError(
                    f"machine id {machine!r} must be 1-32 characters of letters, digits, "
                    "'_', '.', '-' starting with a letter or digit"
                )
        if len(set(machines)) != len(machines):
            raise ValueError("machine ids must be unique")
        return machines

    @model_validator(mode="after")
    def _known_machines(self) -> SimConfig:
        known = set(self.machines)
        for group, items in (
            ("states", self.states),
            ("faults", self.faults),
            ("replay", self.replay),
        ):
            for i, item in enumerate(items):
                if item.machine not in known:
                    raise ValueError(
                        f"{group}[{i}].machine: {item.machine!r} is not one of "
                        f"the machines {sorted(known)}"
                    )
        return self

    # Flat aliases used by the CLI flags and older call sites.
    @property
    def modbus_host(self) -> str:
        return self.modbus.host

    @property
    def modbus_port(self) -> int:
        return self.modbus.port


def load_scenario(path: Path) -> SimConfig:
    return load_yaml_model(path, SimConfig)
