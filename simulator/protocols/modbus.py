"""Modbus TCP and RTU serving of the simulated machines (register map: simulator.register_map).

pymodbus answers requests on the event loop that also runs the tick loop, and a tick updates
a unit's registers in one synchronous step, so a block read always sees one whole sample.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import select
import socket
import threading
import tty
from collections.abc import Sequence
from pathlib import Path

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from simulator.engine import Sample
from simulator.register_map import (
    COUNTER_ADDRESS,
    FIRST_SENSOR_ADDRESS,
    HOLDING_REGISTERS,
    INPUT_REGISTERS,
    STATE_ADDRESS,
    TIMESTAMP_ADDRESS,
    encode_float32_be,
    encode_int16_scaled,
    uint32_words,
    uint64_words,
)

log = logging.getLogger(__name__)


class SimulatorError(RuntimeError):
    pass


class UnitRegisters:
    """The latest sample of one unit; its registers are encoded when a client reads them.

    Encoding on read costs per request instead of per tick (100 machines at 100 Hz would
    otherwise encode 10,000 register images a second that nobody reads), and swapping one
    reference per tick keeps every read consistent with a single sample.
    """

    __slots__ = ("_holding", "_input", "sample")

    def __init__(self) -> None:
        self.sample: Sample | None = None
        self._holding: tuple[Sample | None, list[int]] = (None, [0] * HOLDING_REGISTERS)
        self._input: tuple[Sample | None, list[int]] = (None, [0] * INPUT_REGISTERS)

    @property
    def holding(self) -> list[int]:
        sample = self.sample
        cached, registers = self._holding
        if sample is not None and cached is not sample:
            registers = [0] * HOLDING_REGISTERS
            registers[COUNTER_ADDRESS : COUNTER_ADDRESS + 2] = uint32_words(sample.counter)
            registers[STATE_ADDRESS] = sample.state
            registers[TIMESTAMP_ADDRESS : TIMESTAMP_ADDRESS + 4] = uint64_words(sample.ts_ms)
            registers[FIRST_SENSOR_ADDRESS:] = encode_float32_be(sample.values)
            self._holding = (sample, registers)
        return registers

    @property
    def input(self) -> list[int]:
        sample = self.sample
        cached, registers = self._input
        if sample is not None and cached is not sample:
            registers = encode_int16_scaled(sample.values)
            self._input = (sample, registers)
        return registers


class RigContext(ModbusServerContext):
    """A read-only register image per unit id, updated in place by the tick loop.

    pymodbus 3.16 deprecates its datastore classes; it still serves any context that
    implements ``async_getValues``/``async_setValues`` (its "old simulator" path), which
    gives exact control of consistency and of exception responses.
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


class ModbusImage:
    """The register image of every unit; a sink the engine publishes samples to."""

    def __init__(self, unit_ids: list[int]) -> None:
        self.units = {u: UnitRegisters() for u in unit_ids}
        self.context = RigContext(self.units)

    def publish(self, samples: list[Sample]) -> None:
        for sample in samples:
            self.units[sample.unit_id].sample = sample


def check_port_free(host: str, port: int, what: str = "Modbus") -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SimulatorError(f"{what} port {host}:{port} is already in use") from None
            raise SimulatorError(f"cannot listen on {what} {host}:{port}: {exc}") from None


async def start_tcp(
    image: ModbusImage, host: str, port: int
) -> tuple[ModbusTcpServer, asyncio.Future[bool]]:
    check_port_free(host, port)
    server = ModbusTcpServer(image.context, address=(host, port))
    # Listening before we return: callers announce readiness right after.
    await server.serve_forever(background=True)
    task = server.serving
    return server, task


class PtyPair:
    """Two pseudo-terminals joined back to back, like a null-modem cable: bytes written to
    one end's device come out of the other's. The simulator's RTU server opens ``server_path``;
    clients open ``link`` (a symlink to the other end)."""

    def __init__(self, link: Path) -> None:
        self._a_master, a_slave = os.openpty()
        self._b_master, b_slave = os.openpty()
        for fd in (a_slave, b_slave):
            tty.setraw(fd)
        self.server_path = os.ttyname(a_slave)
        self.client_path = os.ttyname(b_slave)
        # Keep the slave fds open so the masters never see EOF between client sessions.
        self._slaves = (a_slave, b_slave)
        self.link = link
        link.unlink(missing_ok=True)
        link.symlink_to(self.client_path)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._relay, name="pty-relay", daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        peers = {self._a_master: self._b_master, self._b_master: self._a_master}
        while not self._stop.is_set():
            ready, _, _ = select.select(list(peers), [], [], 0.2)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                if data:
                    os.write(peers[fd], data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.link.unlink(missing_ok=True)
        for fd in (self._a_master, self._b_master, *self._slaves):
            os.close(fd)


async def start_rtu(
    image: ModbusImage, link: Path, baudrate: int
) -> tuple[ModbusSerialServer, asyncio.Future[bool], PtyPair]:
    pair = PtyPair(link)
    server = ModbusSerialServer(
        image.context, framer=FramerType.RTU, port=pair.server_path, baudrate=baudrate
    )
    await server.serve_forever(background=True)
    task = server.serving
    return server, task, pair
