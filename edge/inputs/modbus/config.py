"""Typed configuration of the Modbus TCP input."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from edge.inputs.base import InputConfig
from shared.configtypes import MachineId, SensorName, StrictModel

DataType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64", "uint64", "int64"]
REGISTER_WIDTH: dict[str, int] = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}
# Modbus allows at most 125 registers in one read-holding/input-registers response.
MAX_REGISTERS_PER_READ = 125


class _Strict(StrictModel):
    # "register" is the natural YAML key but shadows ABC.register, hence the alias.
    model_config = ConfigDict(populate_by_name=True)


class RegisterField(_Strict):
    """One value in a device's register map."""

    name: SensorName = Field(description="Core sensor name or a snake_case custom sensor name")
    address: int = Field(ge=0, le=65535)
    type: DataType = "float32"
    register_kind: Literal["holding", "input"] = Field(default="holding", alias="register")
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0

    @property
    def width(self) -> int:
        return REGISTER_WIDTH[self.type]


class CounterField(_Strict):
    """A register the device increments with every new sample (a heartbeat/sample counter).
    When set, a poll that sees an unchanged counter is not recorded again."""

    address: int = Field(ge=0, le=65535)
    type: Literal["uint16", "uint32", "uint64"] = "uint32"
    register_kind: Literal["holding", "input"] = Field(default="holding", alias="register")
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"


class TimestampField(_Strict):
    """A register pair/quad holding the sample time as Unix milliseconds."""

    address: int = Field(ge=0, le=65535)
    type: Literal["uint64", "int64"] = "uint64"
    register_kind: Literal["holding", "input"] = Field(default="holding", alias="register")
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"


class ModbusDevice(_Strict):
    machine_id: MachineId
    unit_id: int = Field(default=1, ge=0, le=255)
    poll_interval_s: float = Field(default=1.0, gt=0.0, le=3600.0)
    fields: list[RegisterField] = Field(min_length=1)
    sample_counter: CounterField | None = None
    timestamp: TimestampField | None = None
    # Registers of no interest between two fields are read anyway when the gap is at most
    # this many: one longer request is cheaper than two round trips.
    max_gap: int = Field(default=16, ge=0, le=100)

    @model_validator(mode="after")
    def _unique_names(self) -> ModbusDevice:
        seen: set[str] = set()
        for f in self.fields:
            if f.name in seen:
                raise ValueError(f"field {f.name!r} is mapped twice")
            seen.add(f.name)
        return self


class ModbusInputConfig(InputConfig):
    """One Modbus endpoint: a TCP host:port or an RTU serial line, with its devices."""

    name: str = Field(default="modbus", min_length=1, max_length=64)
    transport: Literal["tcp", "rtu"] = "tcp"
    host: str | None = Field(default=None, min_length=1)
    port: int = Field(default=502, ge=1, le=65535)
    serial_port: str | None = Field(default=None, description="e.g. /dev/ttyUSB0 (rtu)")
    baudrate: int = Field(default=19200, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    timeout_s: float = Field(default=1.0, gt=0.0, le=60.0)
    retries: int = Field(default=1, ge=0, le=10)
    devices: list[ModbusDevice] = Field(min_length=1)

    @model_validator(mode="after")
    def _endpoint(self) -> ModbusInputConfig:
        if self.transport == "tcp" and not self.host:
            raise ValueError("transport tcp needs host")
        if self.transport == "rtu" and not self.serial_port:
            raise ValueError("transport rtu needs serial_port")
        return self

    def machine_ids(self) -> list[str]:
        return [d.machine_id for d in self.devices]

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}" if self.transport == "tcp" else str(self.serial_port)
