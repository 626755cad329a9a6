"""``rig-edge scan modbus``: which addresses answer (per unit id and table: holding and input
registers, coils, discrete inputs), each register pair also shown as a float32 and in Modicon
numbering, to help write a device's register map."""

from __future__ import annotations

import argparse
import struct
from dataclasses import dataclass

from pymodbus.client import AsyncModbusTcpClient


@dataclass
class RegisterRange:
    unit: int
    table: str
    start: int
    values: list[int]


async def _read(
    client: AsyncModbusTcpClient, table: str, unit: int, start: int, count: int
) -> list[int] | None:
    reader = {
        "holding": client.read_holding_registers,
        "input": client.read_input_registers,
        "coil": client.read_coils,
        "discrete_input": client.read_discrete_inputs,
    }[table]
    try:
        response = await reader(start, count=count, device_id=unit)
    except Exception:
        return None
    if response.isError():
        return None
    if table in ("coil", "discrete_input"):
        return [int(bool(b)) for b in response.bits[:count]]
    return list(response.registers)


async def scan_modbus(
    host: str,
    port: int,
    units: list[int],
    start: int,
    end: int,
    tables: list[str],
    timeout: float = 1.0,
) -> list[RegisterRange]:
    """Answering addresses in [start, end), found with blocks of 100 narrowed down to single
    registers where a block is refused."""
    client = AsyncModbusTcpClient(host, port=port, timeout=timeout, retries=0)
    if not await client.connect():
        raise ConnectionError(f"no Modbus TCP server at {host}:{port}")
    found: list[RegisterRange] = []
    try:
        for unit in units:
            for table in tables:
                answering: dict[int, int] = {}

                async def probe(
                    lo: int,
                    hi: int,
                    table: str = table,
                    unit: int = unit,
                    answering: dict[int, int] = answering,
                ) -> None:
                    values = await _read(client, table, unit, lo, hi - lo)
                    if values is not None:
                        answering.update(zip(range(lo, hi), values, strict=True))
                    elif hi - lo > 1:
                        step = 10 if hi - lo > 10 else 1
                        for sub in range(lo, hi, step):
                            await probe(sub, min(hi, sub + step))

                for block in range(start, end, 100):
                    await probe(block, min(end, block + 100))
                current: RegisterRange | None = None
                for address in sorted(answering):
                    if current is None or address != current.start + len(current.values):
                        current = RegisterRange(unit, table, address, [])
                        found.append(current)
                    current.values.append(answering[address])
    finally:
        client.close()
    return found


_MODICON = {"holding": 40001, "input": 30001, "coil": 1, "discrete_input": 10001}


def describe_ranges(ranges: list[RegisterRange]) -> str:
    lines = []
    for r in ranges:
        first = _MODICON[r.table] + r.start
        what = {"holding": "holding registers", "input": "input registers"}.get(
            r.table, r.table.replace("_", " ") + "s"
        )
        lines.append(
            f"unit {r.unit} {what} {r.start}..{r.start + len(r.values) - 1}"
            f" ({len(r.values)} answer), Modicon {first:05d}..{first + len(r.values) - 1:05d}"
        )
        if r.table in ("coil", "discrete_input"):
            for i in range(0, len(r.values), 16):
                bits = "".join(str(b) for b in r.values[i : i + 16])
                lines.append(f"  {r.start + i:5d}: {bits}")
            continue
        for i in range(0, len(r.values) - 1, 2):
            words = r.values[i : i + 2]
            as_float = struct.unpack(">f", struct.pack(">HH", *words))[0]
            lines.append(
                f"  {r.start + i:5d}: {words[0]:5d} {words[1]:5d}   float32(ABCD)={as_float:.6g}"
            )
    return "\n".join(lines)


def _units(text: str) -> list[int]:
    try:
        units = [int(u) for u in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated numbers") from None
    if not all(0 <= u <= 255 for u in units):
        raise argparse.ArgumentTypeError(f"{text!r}: unit ids are 0-255")
    return units


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", required=True, help="the device's or gateway's address")
    parser.add_argument("--port", type=int, default=502, help="Modbus TCP port (default 502)")
    parser.add_argument(
        "--units", type=_units, default=[1], help="comma-separated unit ids (default 1)"
    )
    parser.add_argument(
        "--start", type=int, default=0, help="first register address, 0-based (default 0)"
    )
    parser.add_argument("--end", type=int, default=200, help="last address + 1 (default 200)")
    parser.add_argument(
        "--table",
        choices=["holding", "input", "both", "coil", "discrete_input", "all"],
        default="both",
        help="both: holding and input registers (default); all: also coils, discrete inputs",
    )


async def scan_from_args(args: argparse.Namespace) -> str:
    tables = {
        "both": ["holding", "input"],
        "all": ["holding", "input", "coil", "discrete_input"],
    }.get(args.table, [args.table])
    ranges = await scan_modbus(args.host, args.port, args.units, args.start, args.end, tables)
    return describe_ranges(ranges) or "no register answered"
