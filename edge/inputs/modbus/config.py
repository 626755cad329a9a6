"""Typed configuration of the Modbus input (TCP or RTU).

A field is read from one of the four Modbus tables: holding registers (function 3), input
registers (4), coils (1) or discrete inputs (2). Register fields are numbers of 1-4 registers,
one bit (or a run of bits) of a register, BCD digits or an ASCII string holding a number; coil
and discrete-input fields are one bit each.

Addresses are 0-based protocol offsets unless the device says ``address_notation: modicon``:
then ``"40011"`` is holding register offset 10, ``"30001"`` input register 0, ``"00001"`` coil
0 and ``"10001"`` discrete input 0 (five or six digits), and the table follows from the
address. An offset that looks like that numbering (holding 40001-49999, input 30001-39999) is
accepted, because it is a valid offset, but ``check-config`` warns about it.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from edge.inputs.base import InputConfig
from shared.configtypes import MachineId, SensorName, StrictModel
from shared.units import UnitError, normalise_unit, sensor_converter

DataType = Literal[
    "int16",
    "uint16",
    "int32",
    "uint32",
    "float32",
    "float64",
    "uint64",
    "int64",
    "bcd16",
    "bcd32",
    "string",
    "bool",
]
RegisterKind = Literal["holding", "input", "coil", "discrete_input"]
BIT_TABLES = ("coil", "discrete_input")
REGISTER_WIDTH: dict[str, int] = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
    "bcd16": 1,
    "bcd32": 2,
    "bool": 1,
}
# Modbus allows at most 125 registers in one read-holding/input-registers response, and 2000
# bits in one read-coils/discrete-inputs response.
MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000

# Modicon numbering: leading digit -> table.
_MODICON_TABLE: dict[str, RegisterKind] = {
    "0": "coil",
    "1": "discrete_input",
    "3": "input",
    "4": "holding",
}
_MODICON_RE = re.compile(r"^([0134])(\d{4,5})$")


class _Strict(StrictModel):
    # "register" is the natural YAML key but shadows ABC.register, hence the alias.
    model_config = ConfigDict(populate_by_name=True)


def modicon_address(text: str | int) -> tuple[RegisterKind, int]:
    """``"40011"`` -> ("holding", 10): the table and 0-based offset of a Modicon-numbered
    address (five digits up to 9999 per table, six digits up to 65536)."""
    digits = str(text).strip()
    if isinstance(text, int):
        digits = digits.zfill(5)  # 1 is coil 00001
    match = _MODICON_RE.fullmatch(digits)
    number = int(match.group(2)) if match else 0
    if match is None or not 1 <= number <= 65536:
        raise ValueError(
            f"address {text!r} is not Modicon numbering (0xxxx coil, 1xxxx discrete input, "
            "3xxxx input register, 4xxxx holding register; 1-based)"
        )
    return _MODICON_TABLE[match.group(1)], number - 1


def looks_modicon(kind: str, address: int) -> bool:
    """An offset in the range a 4xxxx/3xxxx number of the same table would have."""
    return (kind == "holding" and 40001 <= address <= 49999) or (
        kind == "input" and 30001 <= address <= 39999
    )


class RegisterField(_Strict):
    """One value in a device's register map."""

    name: SensorName = Field(description="Core sensor name or a snake_case custom sensor name")
    address: int = Field(ge=0, le=65535)
    type: DataType | None = Field(
        default=None, description="float32 for registers, bool for coils/discrete inputs"
    )
    register_kind: RegisterKind = Field(default="holding", alias="register")
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    bit: int | None = Field(default=None, ge=0, le=15, description="0 = least significant")
    bits: int = Field(default=1, ge=1, le=16, description="with bit: how many bits")
    length: int | None = Field(default=None, ge=1, le=123, description="string: registers")
    unit: str | None = Field(default=None, description="the device's unit; converted at read")

    @model_validator(mode="after")
    def _coherent(self) -> RegisterField:
        where = f"field {self.name!r}"
        if self.register_kind in BIT_TABLES:
            if self.type not in (None, "bool"):
                raise ValueError(f"{where}: a {self.register_kind} is one bit; type must be bool")
            if self.bit is not None or self.length is not None:
                raise ValueError(
                    f"{where}: bit/length apply to registers, not a {self.register_kind}"
                )
        elif self.type == "bool" and self.bit is None:
            raise ValueError(f"{where}: type bool needs register coil/discrete_input or a bit")
        if self.bit is not None:
            if self.type not in (None, "uint16", "int16", "bool"):
                raise ValueError(f"{where}: bit reads one 16-bit register (type uint16)")
            if self.bit + self.bits > 16:
                raise ValueError(f"{where}: bit {self.bit} + bits {self.bits} exceeds 16")
        elif self.bits != 1:
            raise ValueError(f"{where}: bits needs bit (the lowest bit of the run)")
        if (self.type == "string") != (self.length is not None):
            raise ValueError(f"{where}: type string and length (registers) go together")
        if self.unit is not None:
            try:
                sensor_converter(self.name, self.unit)  # names the unit as written
                self.unit = normalise_unit(self.unit)
            except UnitError as exc:
                raise ValueError(f"{where}: {exc}") from None
        return self

    @property
    def data_type(self) -> str:
        if self.type is not None:
            return self.type
        if self.register_kind in BIT_TABLES:
            return "bool"
        return "uint16" if self.bit is not None else "float32"

    @property
    def width(self) -> int:
        """Registers (or bits, in a coil/discrete-input table) the field spans."""
        if self.data_type == "string":
            return self.length or 1
        if self.bit is not None:
            return 1
        return REGISTER_WIDTH[self.data_type]


class _FixedWidth:
    """Counter and timestamp: numbers in holding or input registers."""

    type: str

    @property
    def data_type(self) -> str:
        return self.type

    @property
    def width(self) -> int:
        return REGISTER_WIDTH[self.type]


class CounterField(_FixedWidth, _Strict):
    """A register the device increments with every new sample (a heartbeat/sample counter).
    When set, a poll that sees an unchanged counter is not recorded again."""

    address: int = Field(ge=0, le=65535)
    type: Literal["uint16", "uint32", "uint64"] = "uint32"
    register_kind: Literal["holding", "input"] = Field(default="holding", alias="register")
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"


class TimestampField(_FixedWidth, _Strict):
    """A register pair/quad holding the sample time as Unix milliseconds."""

    address: int = Field(ge=0, le=65535)
    type: Literal["uint64", "int64"] = "uint64"
    register_kind: Literal["holding", "input"] = Field(default="holding", alias="register")
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"


class ModbusDevice(_Strict):
    machine_id: MachineId
    unit_id: int = Field(default=1, ge=0, le=255)
    address_notation: Literal["offset", "modicon"] = Field(
        default="offset", description='offset: 0-based; modicon: "40011" is holding 10'
    )
    poll_interval_s: float = Field(default=1.0, gt=0.0, le=3600.0)
    fields: list[RegisterField] = Field(min_length=1)
    sample_counter: CounterField | None = None
    timestamp: TimestampField | None = None
    # Registers of no interest between two fields are read anyway when the gap is at most
    # this many: one longer request is cheaper than two round trips.
    max_gap: int = Field(default=16, ge=0, le=100)

    @model_validator(mode="before")
    @classmethod
    def _notation(cls, data: Any) -> Any:
        """Modicon addresses become (table, offset) here, before the fields are validated, so
        the rest of the input knows one kind of address; text addresses with the default
        notation are refused rather than read as numbers."""
        if not isinstance(data, dict):
            return data
        modicon = data.get("address_notation", "offset") == "modicon"
        data = dict(data)
        for key in ("fields", "sample_counter", "timestamp"):
            if data.get(key) is None:
                continue
            value = data[key]
            entries = value if isinstance(value, list) else [value]
            converted = []
            for i, entry in enumerate(entries):
                if not isinstance(entry, dict) or "address" not in entry:
                    converted.append(entry)
                    continue
                where = f"{key}[{i}] ({entry.get('name')})" if key == "fields" else key
                address = entry["address"]
                if not modicon:
                    if not isinstance(address, int) or isinstance(address, bool):
                        raise ValueError(
                            f"{where}: address {address!r} is not a number; 0-based offsets are "
                            "numbers, or set address_notation: modicon for 4xxxx numbering"
                        )
                    converted.append(entry)
                    continue
                try:
                    table, offset = modicon_address(address)
                except ValueError as exc:
                    raise ValueError(f"{where}: {exc}") from None
                given = entry.get("register", entry.get("register_kind"))
                if given is not None and given != table:
                    raise ValueError(
                        f"{where}: address {address!r} is a {table} address but register "
                        f"says {given!r}"
                    )
                if key != "fields" and table in BIT_TABLES:
                    raise ValueError(f"{where}: address {address!r} is not a register")
                rest = {k: v for k, v in entry.items() if k not in ("register", "register_kind")}
                converted.append({**rest, "address": offset, "register": table})
            data[key] = converted if isinstance(value, list) else converted[0]
        return data

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

    def warnings(self) -> list[str]:
        """What is valid but probably not meant (``check-config`` prints it, the daemon logs
        it at load): offsets that look like 4xxxx/3xxxx numbering."""
        found = []
        for i, device in enumerate(self.devices):
            if device.address_notation == "modicon":
                continue
            for j, f in enumerate(device.fields):
                if looks_modicon(f.register_kind, f.address):
                    table, offset = modicon_address(f.address)
                    found.append(
                        f"devices[{i}].fields[{j}] ({f.name}): address {f.address} is read as "
                        f"{f.register_kind} register offset {f.address}; if it is Modicon "
                        f"numbering ({table} register {f.address} = offset {offset}), set "
                        "address_notation: modicon on the device (or write the offset)"
                    )
        return found

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}" if self.transport == "tcp" else str(self.serial_port)
