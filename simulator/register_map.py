"""The simulator's Modbus register map (one unit id per machine).

Unit ids: machines in the order given, starting at 1 (A=1, B=2, C=3 by default).

Holding registers (function 3), one block of 110 registers per unit, read in one request:

| address | registers | type | content |
|---|---|---|---|
| 0 | 2 | uint32 | sample counter: +1 per new sample, starts at 1 |
| 2 | 1 | uint16 | machine state: 0 stopped, 1 idle, 2 running |
| 3 | 1 | uint16 | reserved (0) |
| 4 | 4 | uint64 | sample timestamp, Unix milliseconds |
| 8 | 2 | — | reserved (0) |
| 10 + 2·i | 2 | float32 | core sensor *i* (catalog order), IEEE-754 |

Byte order big-endian within each register, word order big-endian (high word first): the
Modbus-standard "ABCD" layout, for every multi-register value.

Input registers (function 4): core sensor *i* at address *i* as a scaled int16,
``raw = round(value × 10^scale_exp)`` clamped to ±32767, where ``scale_exp`` is the largest
power of ten (−3 … 3) that keeps the sensor's plausible maximum inside int16 (see
``INT16_SCALE_EXP``); the reader divides by the same factor.

A sensor that dropped out reads NaN (0x7FC00000) in its float32 registers and −32768 (0x8000)
in its int16 register.

Reading outside these addresses answers Modbus exception 2 (illegal data address), and so
does any write (the map is read-only); coils and discrete inputs answer exception 1 (illegal
function); an unknown unit id answers exception 11 (gateway target failed to respond).
"""

from __future__ import annotations

import math
import struct
from typing import Any

from shared.catalog import CORE_SENSORS

COUNTER_ADDRESS = 0
STATE_ADDRESS = 2
TIMESTAMP_ADDRESS = 4
FIRST_SENSOR_ADDRESS = 10
HOLDING_REGISTERS = FIRST_SENSOR_ADDRESS + 2 * len(CORE_SENSORS)  # 110
INPUT_REGISTERS = len(CORE_SENSORS)
SAMPLE_BLOCK = (0, HOLDING_REGISTERS)  # (start, count): one consistent sample per read

_FLOATS = struct.Struct(f">{len(CORE_SENSORS)}f")
_WORDS = struct.Struct(f">{2 * len(CORE_SENSORS)}H")


def _scale_exp(max_abs: float) -> int:
    for exp in range(3, -4, -1):
        if max_abs * 10**exp <= 32767:
            return exp
    return -3


# A dropped-out sensor reads NaN in its float32 registers and this in its int16 register.
INT16_MISSING = 0x8000  # -32768

INT16_SCALE_EXP: dict[str, int] = {
    s.name: _scale_exp(max(abs(s.min_value), abs(s.max_value))) for s in CORE_SENSORS
}


def sensor_address(index: int) -> int:
    return FIRST_SENSOR_ADDRESS + 2 * index


def encode_float32_be(values: Any) -> list[int]:
    """50 floats -> 100 registers (ABCD)."""
    return list(_WORDS.unpack(_FLOATS.pack(*values)))


def decode_float32_be(registers: list[int]) -> list[float]:
    return list(_FLOATS.unpack(_WORDS.pack(*registers)))


def float32(values: Any) -> list[float]:
    """The values exactly as they travel in float32 registers."""
    return list(_FLOATS.unpack(_FLOATS.pack(*values)))


def encode_int16_scaled(values: Any) -> list[int]:
    out = []
    for spec, value in zip(CORE_SENSORS, values, strict=True):
        if math.isnan(value):  # a dropped-out sensor
            out.append(INT16_MISSING)
            continue
        raw = round(value * 10 ** INT16_SCALE_EXP[spec.name])
        raw = max(-32767, min(32767, raw))
        out.append(raw & 0xFFFF)  # two's complement in a 16-bit register
    return out


def uint32_words(value: int) -> list[int]:
    return [(value >> 16) & 0xFFFF, value & 0xFFFF]


def uint64_words(value: int) -> list[int]:
    return [(value >> 48) & 0xFFFF, (value >> 32) & 0xFFFF, (value >> 16) & 0xFFFF, value & 0xFFFF]


def unit_id_for(machine_id: str, machines: list[str]) -> int:
    return machines.index(machine_id) + 1


def edge_modbus_source_config(host: str, port: int, machines: list[str]) -> dict[str, Any]:
    """A plain description of the map per machine, from which edge configs are built."""
    devices = []
    for machine in machines:
        devices.append(
            {
                "machine_id": machine,
                "unit_id": unit_id_for(machine, machines),
                "block": {"start": SAMPLE_BLOCK[0], "count": SAMPLE_BLOCK[1]},
                "sample_counter": {"address": COUNTER_ADDRESS, "type": "uint32"},
                "state": {"address": STATE_ADDRESS, "type": "uint16"},
                "timestamp": {"address": TIMESTAMP_ADDRESS, "type": "uint64"},
                "fields": [
                    {
                        "name": s.name,
                        "address": sensor_address(i),
                        "type": "float32",
                        "byte_order": "big",
                        "word_order": "big",
                    }
                    for i, s in enumerate(CORE_SENSORS)
                ],
                "input_fields": [
                    {
                        "name": s.name,
                        "address": i,
                        "type": "int16",
                        "register": "input",
                        "scale": 10.0 ** -INT16_SCALE_EXP[s.name],
                    }
                    for i, s in enumerate(CORE_SENSORS)
                ],
            }
        )
    return {"host": host, "port": port, "devices": devices}


def markdown_table() -> str:
    lines = [
        "| unit register | type | sensor | unit | int16 input reg (scale) |",
        "|---|---|---|---|---|",
    ]
    for i, s in enumerate(CORE_SENSORS):
        exp = INT16_SCALE_EXP[s.name]
        lines.append(f"| {sensor_address(i)} | float32 | {s.name} | {s.unit} | {i} (×10^{exp}) |")
    return "\n".join(lines)
