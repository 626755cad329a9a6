"""Modbus TCP and RTU serving of the simulated machines (register map: simulator.register_map).

Built on pymodbus 3.16's device model (``pymodbus.simulator.SimDevice``/``SimData``), which is
what its deprecated ``ModbusDeviceContext``/``ModbusSequentialDataBlock`` are converted to
internally. One ``SimDevice`` per machine (unit id) with separate blocks: holding registers
0..109 and input registers 0..49, read-only, everything else invalid, so pymodbus itself
answers exception 2 (illegal data address) outside the map and to writes. A catch-all device
0 answers exception 11 (gateway target failed to respond) for unit ids nobody serves.

Consistency: the tick loop swaps one sample reference per unit (one synchronous step), and a
device's ``action`` (which pymodbus calls on every access, before it slices the registers)
encodes that sample into the register block if it changed. The action never awaits, so a
block read always sees one whole sample. Encoding on read costs per request instead of per
tick: 100 machines at 100 Hz would otherwise encode 10,000 register images a second that
nobody reads.
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
from pathlib import Path

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

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

_READ_HOLDING, _READ_INPUT = 3, 4


class SimulatorError(RuntimeError):
    pass


def holding_registers(sample: Sample) -> list[int]:
    """The 110 holding registers of one sample (see simulator.register_map)."""
    registers = [0] * HOLDING_REGISTERS
    registers[COUNTER_ADDRESS : COUNTER_ADDRESS + 2] = uint32_words(sample.counter)
    registers[STATE_ADDRESS] = sample.state
    registers[TIMESTAMP_ADDRESS : TIMESTAMP_ADDRESS + 4] = uint64_words(sample.device_ts_ms)
    registers[FIRST_SENSOR_ADDRESS:] = encode_float32_be(sample.values)
    return registers


class UnitRegisters:
    """The latest sample of one unit and the pymodbus device serving it."""

    __slots__ = ("_holding_of", "_input_of", "device", "sample")

    def __init__(self, unit_id: int) -> None:
        self.sample: Sample | None = None
        self._holding_of: Sample | None = None
        self._input_of: Sample | None = None
        self.device = SimDevice(
            unit_id,
            simdata=(
                # Coils and discrete inputs: pymodbus needs a block; the action refuses them.
                [SimData(0, datatype=DataType.BITS, values=False, readonly=True)],
                [SimData(0, datatype=DataType.BITS, values=False, readonly=True)],
                [SimData(0, count=HOLDING_REGISTERS, datatype=DataType.REGISTERS, readonly=True)],
                [SimData(0, count=INPUT_REGISTERS, datatype=DataType.REGISTERS, readonly=True)],
            ),
            action=self._action,
        )

    async def _action(
        self,
        function_code: int,
        _start_address: int,
        _address: int,
        _count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        # No await in here: the registers pymodbus slices right after this are one sample.
        if set_values is not None or function_code not in (_READ_HOLDING, _READ_INPUT):
            return ExcCodes.ILLEGAL_FUNCTION
        sample = self.sample
        if sample is None:  # before the first tick: all zeros, counter 0
            return None
        if function_code == _READ_HOLDING:
            if self._holding_of is not sample:
                registers[:HOLDING_REGISTERS] = holding_registers(sample)
                self._holding_of = sample
        elif self._input_of is not sample:
            registers[:INPUT_REGISTERS] = encode_int16_scaled(sample.values)
            self._input_of = sample
        return None


async def _no_such_unit(
    _function_code: int,
    _start_address: int,
    _address: int,
    _count: int,
    _registers: list[int],
    _set_values: list[int] | list[bool] | None,
) -> ExcCodes:
    return ExcCodes.GATEWAY_NO_RESPONSE


class ModbusImage:
    """The register image of every unit; a sink the engine publishes samples to."""

    def __init__(self, unit_ids: list[int]) -> None:
        self.units = {u: UnitRegisters(u) for u in unit_ids}
        # pymodbus routes unknown unit ids to device 0; every address of it is valid so that
        # its action (exception 11) answers, not the address check.
        catch_all = SimDevice(
            0,
            simdata=[SimData(0, count=65536, datatype=DataType.REGISTERS, readonly=True)],
            action=_no_such_unit,
        )
        self.devices: list[SimDevice] = [catch_all, *(u.device for u in self.units.values())]

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
    server = ModbusTcpServer(image.devices, address=(host, port))
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
        image.devices, framer=FramerType.RTU, port=pair.server_path, baudrate=baudrate
    )
    await server.serve_forever(background=True)
    task = server.serving
    return server, task, pair
