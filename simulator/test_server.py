"""The simulator's real Modbus TCP server, read by a real pymodbus client."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from simulator.config import SimConfig
from simulator.register_map import decode_float32_be, encode_int16_scaled
from simulator.server import SimulatorError, SimulatorRun, run_simulator
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


def _record_row(conn: sqlite3.Connection, machine: str, counter: int) -> tuple[int, int, list]:
    row = conn.execute(
        'SELECT ts_ms, state, "values" FROM samples WHERE machine_id = ? AND sample = ?',
        (machine, counter),
    ).fetchone()
    assert row is not None, (machine, counter)
    return row[0], row[1], json.loads(row[2])


def test_block_reads_match_the_record_and_bad_addresses_raise(tmp_path: Path) -> None:
    port = free_port()
    record = tmp_path / "rec.db"
    # Fast ticks against back-to-back reads: a torn (half-updated) block would not match the
    # record's row for its counter.
    config = SimConfig(rate_hz=200, modbus_port=port, record_path=record)
    seen: list[tuple[str, int, int, int, list[float]]] = []
    seen_int16: list[tuple[str, int, list[int]]] = []

    async def body() -> None:
        client = AsyncModbusTcpClient("127.0.0.1", port=port)
        await client.connect()
        for i in range(60):
            for unit, machine in enumerate(config.machines, start=1):
                response = await client.read_holding_registers(0, count=110, device_id=unit)
                assert not response.isError()
                regs = response.registers
                counter = (regs[0] << 16) | regs[1]
                ts_ms = (regs[4] << 48) | (regs[5] << 32) | (regs[6] << 16) | regs[7]
                seen.append((machine, counter, regs[2], ts_ms, decode_float32_be(regs[10:110])))
                assert regs[3] == regs[8] == regs[9] == 0
            if i % 10 == 0:
                # Input registers carry no counter: read them with the counter in between
                # and keep the reading only if no tick happened meanwhile.
                before = await client.read_holding_registers(0, count=2, device_id=2)
                ints = await client.read_input_registers(0, count=50, device_id=2)
                after = await client.read_holding_registers(0, count=2, device_id=2)
                assert not ints.isError()
                if before.registers == after.registers:
                    counter = (before.registers[0] << 16) | before.registers[1]
                    seen_int16.append(("B", counter, ints.registers))
            await asyncio.sleep(0.002)
        bad = await client.read_holding_registers(100, count=20, device_id=1)
        assert bad.isError() and bad.exception_code == 2
        bad = await client.read_holding_registers(110, count=1, device_id=3)
        assert bad.isError() and bad.exception_code == 2
        bad = await client.read_input_registers(49, count=2, device_id=1)
        assert bad.isError() and bad.exception_code == 2
        missing = await client.read_holding_registers(0, count=2, device_id=99)
        assert missing.isError() and missing.exception_code == 11
        write = await client.write_registers(10, [1, 2], device_id=1)
        assert write.isError() and write.exception_code == 2  # the map is read-only
        coils = await client.read_coils(0, count=1, device_id=1)
        assert coils.isError() and coils.exception_code == 1
        client.close()

    asyncio.run(_with_sim(config, body))
    assert len({(m, c) for m, c, *_ in seen}) > 30  # many different samples were read
    conn = sqlite3.connect(record)
    for machine, counter, state, ts_ms, values in seen:
        assert _record_row(conn, machine, counter) == (ts_ms, state, values)
        assert state == 2
    for machine, counter, ints in seen_int16:
        _, _, values = _record_row(conn, machine, counter)
        assert ints == encode_int16_scaled(values)


def test_counters_start_at_one_and_have_no_gaps(tmp_path: Path) -> None:
    record = tmp_path / "rec.db"
    config = SimConfig(rate_hz=50, modbus_port=free_port(), record_path=record)

    async def body() -> None:
        await asyncio.sleep(0.5)

    asyncio.run(_with_sim(config, body))
    conn = sqlite3.connect(record)
    for machine in config.machines:
        counters = [
            c
            for (c,) in conn.execute(
                "SELECT sample FROM samples WHERE machine_id = ? ORDER BY sample", (machine,)
            )
        ]
        assert counters == list(range(1, len(counters) + 1)) and len(counters) > 20


def test_falling_behind_skips_ticks_instead_of_bursting(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from simulator.engine import Engine

    tick_times: list[float] = []
    original = Engine.tick

    def slow_tick(self: Engine, t: float, now_ms: int) -> list:  # type: ignore[type-arg]
        tick_times.append(time.monotonic())
        if len(tick_times) == 10:
            time.sleep(0.2)  # ten periods at 50 Hz
        return original(self, t, now_ms)

    monkeypatch.setattr(Engine, "tick", slow_tick)
    config = SimConfig(rate_hz=50, modbus_port=free_port(), machines=["A"])

    async def run() -> SimulatorRun:
        stop = asyncio.Event()
        task = asyncio.create_task(run_simulator(config, stop))
        await asyncio.sleep(0.8)
        stop.set()
        return await task

    sim = asyncio.run(run())
    assert 8 <= sim.skipped_ticks <= 11, sim.skipped_ticks
    after_stall = [t for t in tick_times if tick_times[9] < t <= tick_times[9] + 0.2 + 0.06]
    assert len(after_stall) <= 4, after_stall  # no catch-up burst


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
