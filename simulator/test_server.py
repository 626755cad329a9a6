"""The simulator's real Modbus TCP server, read by a real pymodbus client."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from simulator.config import SimConfig
from simulator.register_map import decode_float32_be, encode_int16_scaled
from simulator.server import SimulatorError, SimulatorRun, run_simulator
from tests.support.processes import free_port

pytestmark = pytest.mark.integration


async def _with_sim(config: SimConfig, body) -> object:
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_simulator(config, stop, started=started))
    await asyncio.wait_for(started.wait(), 30)
    try:
        return await body()
    finally:
        stop.set()
        await task


async def _until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def _recorded(record: Path, machine: str) -> list[int]:
    if not record.exists():
        return []
    conn = sqlite3.connect(f"file:{record}?mode=ro", uri=True)
    try:
        return [
            c
            for (c,) in conn.execute(
                "SELECT sample FROM samples WHERE machine_id = ? ORDER BY sample", (machine,)
            )
        ]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


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
        await _until(
            lambda: all(len(_recorded(record, m)) > 20 for m in config.machines),
            30,
            "more than 20 samples of each machine recorded",
        )

    asyncio.run(_with_sim(config, body))
    for machine in config.machines:
        counters = _recorded(record, machine)
        assert counters == list(range(1, len(counters) + 1)) and len(counters) > 20


def _recording_ticks(monkeypatch: pytest.MonkeyPatch, stall_at: int | None = None) -> list[float]:
    """Record the monotonic time each tick starts; optionally stall one tick for ten
    periods (at 50 Hz) inside the project's own code."""
    from simulator.engine import Engine

    tick_times: list[float] = []
    original = Engine.tick

    def tick(self: Engine, t: float, now_ms: int) -> list:
        tick_times.append(time.monotonic())
        if len(tick_times) == stall_at:
            time.sleep(0.2)
        return original(self, t, now_ms)

    monkeypatch.setattr(Engine, "tick", tick)
    return tick_times


def _run_until_ticks(config: SimConfig, ticks: list[float], count: int) -> SimulatorRun:
    async def run() -> SimulatorRun:
        stop = asyncio.Event()
        task = asyncio.create_task(run_simulator(config, stop))
        try:
            await _until(lambda: len(ticks) >= count, 60, f"{count} ticks")
        finally:
            stop.set()
        return await task

    return asyncio.run(run())


def test_falling_behind_skips_ticks_instead_of_bursting(monkeypatch: pytest.MonkeyPatch) -> None:
    tick_times = _recording_ticks(monkeypatch, stall_at=10)
    config = SimConfig(rate_hz=50, modbus_port=free_port(), machines=["A"])
    sim = _run_until_ticks(config, tick_times, 25)
    # The stall covered ten periods: the nine deadlines after the late tick were skipped and
    # counted (eight if the stall ended a hair early; a loaded machine may skip more).
    assert sim.skipped_ticks >= 8, sim.skipped_ticks
    # No catch-up burst: in the three periods after the stall at most the late tick and the
    # next grid ticks run (a burst would run the ten missed ones back to back). Slowness
    # only lowers this count.
    stalled = tick_times[9]
    after_stall = [t for t in tick_times if stalled < t <= stalled + 0.2 + 0.06]
    assert len(after_stall) <= 4, after_stall


def test_ticks_never_run_ahead_of_their_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop keeps absolute deadlines (start + k * period): tick k never starts before
    its deadline, so the long-run rate can never exceed the set rate. (How close it gets to
    the rate on a given machine is measured by bench-sim, not asserted here.)"""
    tick_times = _recording_ticks(monkeypatch)
    config = SimConfig(rate_hz=50, modbus_port=free_port(), machines=["A"])
    _run_until_ticks(config, tick_times, 60)
    start, period = tick_times[0], 1 / 50
    early = [k for k, t in enumerate(tick_times) if t < start + k * period - 0.001]
    assert not early, [(k, tick_times[k] - start - k * period) for k in early[:5]]


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
