"""``rig-edge scan``: discover what a device offers, to help write the config.

Modbus: which register addresses answer (per unit id and table), with each pair also shown
as a float32. OPC-UA: the node tree below Objects with node ids, types and values.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

from asyncua import Client, ua
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
    reader = client.read_holding_registers if table == "holding" else client.read_input_registers
    try:
        response = await reader(start, count=count, device_id=unit)
    except Exception:
        return None
    return None if response.isError() else list(response.registers)


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


def describe_ranges(ranges: list[RegisterRange]) -> str:
    lines = []
    for r in ranges:
        lines.append(
            f"unit {r.unit} {r.table} registers {r.start}..{r.start + len(r.values) - 1}"
            f" ({len(r.values)} answer)"
        )
        for i in range(0, len(r.values) - 1, 2):
            words = r.values[i : i + 2]
            as_float = struct.unpack(">f", struct.pack(">HH", *words))[0]
            lines.append(
                f"  {r.start + i:5d}: {words[0]:5d} {words[1]:5d}   float32(ABCD)={as_float:.6g}"
            )
    return "\n".join(lines)


async def scan_opcua(endpoint: str, max_depth: int = 6, timeout: float = 10) -> list[str]:
    lines: list[str] = []
    async with Client(endpoint, timeout=timeout) as client:
        namespaces = await client.get_namespace_array()

        async def walk(node, depth: int) -> None:  # type: ignore[no-untyped-def]
            if depth > max_depth:
                return
            for child in await node.get_children():
                name = (await child.read_browse_name()).Name
                node_class = await child.read_node_class()
                node_id = child.nodeid
                text = node_id.to_string()
                if node_id.NamespaceIndex > 0 and node_id.NamespaceIndex < len(namespaces):
                    text = f"nsu={namespaces[node_id.NamespaceIndex]};" + text.split(";", 1)[1]
                if node_class == ua.NodeClass.Variable:
                    try:
                        value = await child.read_value()
                    except Exception as exc:
                        value = f"<{type(exc).__name__}>"
                    lines.append(f"{'  ' * depth}{name} = {value!r}   [{text}]")
                elif node_class in (ua.NodeClass.Object,):
                    lines.append(f"{'  ' * depth}{name}/   [{text}]")
                    await walk(child, depth + 1)

        await walk(client.nodes.objects, 0)
    return lines


def run_scan_modbus(
    host: str, port: int, units: list[int], start: int, end: int, tables: list[str]
) -> str:
    return describe_ranges(asyncio.run(scan_modbus(host, port, units, start, end, tables)))


def run_scan_opcua(endpoint: str, max_depth: int) -> str:
    return "\n".join(asyncio.run(scan_opcua(endpoint, max_depth)))
