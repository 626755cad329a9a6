"""The simulator's Modbus TCP server and tick loop.

All machines are served from one pymodbus TCP server, one unit id each. The tick loop writes
a machine's counter, state, timestamp and values in one synchronous step (no await between
them), and pymodbus answers requests on the same event loop, so a block read always sees one
whole sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Sequence

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer

from shared.logs import log_event
from simulator.config import SimConfig
from simulator.record import SampleRecorder
from simulator.register_map import (
    COUNTER_ADDRESS,
    FIRST_SENSOR_ADDRESS,
    HOLDING_REGISTERS,
    INPUT_REGISTERS,
    STATE_ADDRESS,
    TIMESTAMP_ADDRESS,
    encode_float32_be,
    encode_int16_scaled,
    float32,
    uint32_words,
    uint64_words,
)
from simulator.signals import MachineSignals

log = logging.getLogger(__name__)


class SimulatorError(RuntimeError):
    pass


class UnitRegisters:
    __slots__ = ("holding", "input")

    def __init__(self) -> None:
        self.holding = [0] * HOLDING_REGISTERS
        self.input = [0] * INPUT_REGISTERS


class RigContext(ModbusServerContext):
    """A read-only register image per unit id, updated in place by the tick loop.

    pymodbus 3.16 deprecates its datastore classes; it still serves any context that
    implements ``async_getValues``/``async_setValues`` (its "old simulator" path), which
    gives us exact control of consistency and of exception responses.
    """

    def __init__(self, units: dict[int, UnitRegisters]) -> None:  # no super(): see above
        self.units = units
        self.old_simulator = True
        self.simdevices = []
        self._devices = units  # type: ignore[assignment]

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        unit = self.units.get(device_id)
        if unit is None:
            raise NoSuchIdException(f"unit id {device_id} is not served")
        if func_code == 3:
            table = unit.holding
        elif func_code == 4:
            table = unit.input
        else:
            return ExcCodes.ILLEGAL_FUNCTION
        if address < 0 or count < 1 or address + count > len(table):
            return ExcCodes.ILLEGAL_ADDRESS
        return table[address : address + count]

    async def async_setValues(
        self,
        device_id: int,
        func_code: int,
        address: int,
        values: Sequence[int] | Sequence[bool],
    ) -> ExcCodes | None:
        if device_id not in self.units:
            raise NoSuchIdException(f"unit id {device_id} is not served")
        return ExcCodes.ILLEGAL_FUNCTION  # a rig's sensor block is read-only

    def device_ids(self) -> list[int]:
        return list(self.units)


def check_port_free(host: str, port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SimulatorError(f"Modbus port {host}:{port} is already in use") from None
            raise SimulatorError(f"cannot listen on Modbus {host}:{port}: {exc}") from None


class Simulator:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.signals = [MachineSignals(m, config.seed) for m in config.machines]
        self.units = {i + 1: UnitRegisters() for i in range(len(config.machines))}
        self.counters = [0] * len(config.machines)
        self.recorder = SampleRecorder(config.record_path) if config.record_path else None
        self.ticks = 0
        self.skipped_ticks = 0
        self.started_at: float | None = None

    def tick(self, t: float, now_ms: int) -> None:
        for index, (machine, signals) in enumerate(
            zip(self.config.machines, self.signals, strict=True)
        ):
            values = float32(signals.step(t))
            self.counters[index] += 1
            counter = self.counters[index]
            unit = self.units[index + 1]
            holding = unit.holding
            # One synchronous update per sample: readers never see a mix of two samples.
            holding[COUNTER_ADDRESS : COUNTER_ADDRESS + 2] = uint32_words(counter)
            holding[STATE_ADDRESS] = int(signals.state)
            holding[TIMESTAMP_ADDRESS : TIMESTAMP_ADDRESS + 4] = uint64_words(now_ms)
            holding[FIRST_SENSOR_ADDRESS:] = encode_float32_be(values)
            unit.input[:] = encode_int16_scaled(values)
            if self.recorder is not None:
                self.recorder.add(machine, counter, now_ms, int(signals.state), values)
        self.ticks += 1

    async def run_ticks(self, stop: asyncio.Event) -> None:
        period = 1.0 / self.config.rate_hz
        start = time.monotonic()
        self.started_at = start
        next_tick = start
        while not stop.is_set():
            now = time.monotonic()
            self.tick(now - start, time.time_ns() // 1_000_000)
            # Absolute deadlines keep the long-run rate exact; when behind, skip whole
            # periods (and count them) rather than bursting to catch up.
            next_tick += period
            now = time.monotonic()
            if now > next_tick:
                missed = int((now - next_tick) / period) + 1
                self.skipped_ticks += missed
                next_tick += missed * period
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, next_tick - now))

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()


async def run_simulator(config: SimConfig, stop: asyncio.Event) -> Simulator:
    check_port_free(config.modbus_host, config.modbus_port)
    sim = Simulator(config)
    sim.tick(0.0, time.time_ns() // 1_000_000)  # registers hold a sample before any read
    server = ModbusTcpServer(
        RigContext(sim.units), address=(config.modbus_host, config.modbus_port)
    )
    server_task = asyncio.create_task(server.serve_forever())
    log_event(
        log,
        logging.INFO,
        "simulator serving",
        machines=config.machines,
        rate_hz=config.rate_hz,
        modbus=f"{config.modbus_host}:{config.modbus_port}",
    )
    try:
        await sim.run_ticks(stop)
    finally:
        await server.shutdown()
        server_task.cancel()
        await asyncio.gather(server_task, return_exceptions=True)
        sim.close()
        log_event(
            log, logging.INFO, "simulator stopped", ticks=sim.ticks, skipped_ticks=sim.skipped_ticks
        )
    return sim
