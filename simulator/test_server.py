"""The simulator's real Modbus TCP server, read by a real pymodbus client."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from simulator.config import SimConfig
from simulator.register_map import decode_float32_be
from simulator.server import SimulatorError, run_simulator
from tests.support.processes import free_port

pytestmark = pytest.mark.integration


async def _with_sim(config: SimConfig, body) -> object:  # type: ignore[no-untyped-def]
    stop = asyncio.Event()
    task = asyncio.create_task(run_simulator(config, stop))
    await asyncio.sleep(0.3)
    try:
        return await body()
    finally:
        stop.set()
        await task


def test_block_reads_match_the_record_and_bad_addresses_raise(tmp_path: Path) -> None:
    port = free_port()
    record = tmp_path / "rec.db"
    config = SimConfig(rate_hz=20, modbus_port=port, record_path=record)
    seen: list[tuple[str, int, list[float]]] = []

    async def body() -> None:
        client = AsyncModbusTcpClient("127.0.0.1", port=port)
        await client.connect()
        for _ in range(10):
            for unit, machine in enumerate(config.machines, start=1):
                response = await client.read_holding_registers(0, count=110, device_id=unit)
                assert not response.isError()
                regs = response.registers
                counter = (regs[0] << 16) | regs[1]
                seen.append((machine, counter, decode_float32_be(regs[10:110])))
            await asyncio.sleep(0.03)
        bad = await client.read_holding_registers(100, count=20, device_id=1)
        assert bad.isError() and bad.exception_code == 2
        missing = await client.read_holding_registers(0, count=2, device_id=99)
        assert missing.isError()
        client.close()

    asyncio.run(_with_sim(config, body))
    conn = sqlite3.connect(record)
    for machine, counter, values in seen:
        row = conn.execute(
            'SELECT "values" FROM samples WHERE machine_id = ? AND sample = ?', (machine, counter)
        ).fetchone()
        assert row is not None
        assert json.loads(row[0]) == values


def test_rate_is_kept(tmp_path: Path) -> None:
    config = SimConfig(rate_hz=50, modbus_port=free_port(), machines=["A"])

    async def body() -> None:
        await asyncio.sleep(2.0)

    async def run() -> int:
        stop = asyncio.Event()
        task = asyncio.create_task(run_simulator(config, stop))
        await body()
        stop.set()
        sim = await task
        return sim.ticks

    ticks = asyncio.run(run())
    assert abs(ticks - 100) <= 6  # within 5 % of 50 Hz over 2 s (plus start/stop ticks)


def test_port_in_use_is_named(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(SimulatorError, match=f"127.0.0.1:{port} is already in use"):
            asyncio.run(run_simulator(SimConfig(modbus_port=port), asyncio.Event()))


def test_modbus_rtu_over_a_pty_pair(tmp_path: Path) -> None:
    from pymodbus import FramerType
    from pymodbus.client import AsyncModbusSerialClient

    link = tmp_path / "ttyRIG"
    record = tmp_path / "rec.db"
    config = SimConfig.model_validate(
        {
            "rate_hz": 5,
            "record_path": record,
            "modbus": {"enabled": False},
            "modbus_rtu": {"enabled": True, "link": str(link), "baudrate": 115200},
        }
    )
    seen: list[tuple[int, list[float]]] = []

    async def body() -> None:
        client = AsyncModbusSerialClient(
            str(link), framer=FramerType.RTU, baudrate=115200, timeout=2
        )
        assert await client.connect()
        for _ in range(3):
            response = await client.read_holding_registers(0, count=110, device_id=2)
            assert not response.isError(), response
            regs = response.registers
            seen.append(((regs[0] << 16) | regs[1], decode_float32_be(regs[10:110])))
            await asyncio.sleep(0.2)
        client.close()

    asyncio.run(_with_sim(config, body))
    conn = sqlite3.connect(record)
    for counter, values in seen:
        row = conn.execute(
            "SELECT \"values\" FROM samples WHERE machine_id = 'B' AND sample = ?", (counter,)
        ).fetchone()
        assert json.loads(row[0]) == values
    assert not link.exists()  # the pty link is removed when the simulator stops
