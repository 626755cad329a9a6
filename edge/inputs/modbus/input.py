"""Modbus input (TCP or RTU serial): polls each device on its own schedule with block reads.

Fields are grouped into as few requests as possible (contiguous registers of one kind, gaps up
to ``max_gap`` read through, at most 125 registers a request). A timeout or exception response
marks the affected values ``bad`` and is counted; it never raises out of the poll loop, and each
device polls in its own task so one dead device never delays another.

What a device says is checked (``edge.inputs.common``): a decoded value that is not finite or
beyond ``MAX_ABS_VALUE`` (a register holding garbage, a wrong scale) makes that sensor ``bad``
instead of costing the whole reading; a clock register outside the acceptance window is
replaced by the edge's receive time and counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient, ModbusBaseClient
from pymodbus.exceptions import ModbusException

from edge.inputs.base import Emit, Input, ProbeResult
from edge.inputs.modbus.config import (
    BIT_TABLES,
    MAX_BITS_PER_READ,
    MAX_REGISTERS_PER_READ,
    CounterField,
    ModbusDevice,
    ModbusInputConfig,
    RegisterField,
    TimestampField,
)
from edge.metrics import EdgeMetrics
from shared.catalog import SENSOR_INDEX
from shared.logs import log_event
from shared.message import Reading, TimeWindow
from shared.units import sensor_converter

log = logging.getLogger(__name__)

_STRUCT_CODES = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "float32": "f",
    "int64": "q",
    "uint64": "Q",
    "float64": "d",
}

Decodable = RegisterField | CounterField | TimestampField


def decode_registers(
    registers: list[int], data_type: str, byte_order: str = "big", word_order: str = "big"
) -> float | int:
    """Decode 1-4 16-bit registers. ``word_order`` orders the registers, ``byte_order`` the
    two bytes inside each register (big/big is the Modbus-standard ABCD layout)."""
    raw = _bytes(registers, byte_order, word_order)
    return struct.unpack(">" + _STRUCT_CODES[data_type], raw)[0]


def _bytes(registers: list[int], byte_order: str, word_order: str) -> bytes:
    words = registers if word_order == "big" else list(reversed(registers))
    return b"".join(
        w.to_bytes(2, "big") if byte_order == "big" else w.to_bytes(2, "little") for w in words
    )


class DecodeError(ValueError):
    """Registers that do not hold what the field says (a BCD nibble above 9, a string that
    is not a number)."""


def decode_bcd(registers: list[int], byte_order: str = "big", word_order: str = "big") -> int:
    """Packed BCD, four decimal digits per register (0x1234 is 1234)."""
    digits = _bytes(registers, byte_order, word_order).hex()
    if not digits.isdigit():
        raise DecodeError(f"not BCD: 0x{digits}")
    return int(digits)


def decode_string(registers: list[int], byte_order: str = "big") -> str:
    """ASCII, two characters per register (the first in the high byte unless byte_order is
    little), padded with NULs or spaces."""
    raw = _bytes(registers, byte_order, "big")
    return raw.split(b"\x00", 1)[0].decode("ascii", errors="replace").strip()


def decode_field(item: RegisterField, words: list[int] | list[bool]) -> float | str:
    """The raw value of one field from its registers (or bits): a number before scale, offset
    and unit; a string field's text when it is not a number (the caller marks it bad)."""
    data_type = item.data_type
    if item.register_kind in BIT_TABLES:
        return 1.0 if words[0] else 0.0
    registers = [int(w) for w in words]
    if item.bit is not None:
        return float((registers[0] >> item.bit) & ((1 << item.bits) - 1))
    if data_type in ("bcd16", "bcd32"):
        return float(decode_bcd(registers, item.byte_order, item.word_order))
    if data_type == "string":
        text = decode_string(registers, item.byte_order)
        try:
            return float(text)
        except ValueError:
            return text
    return float(decode_registers(registers, data_type, item.byte_order, item.word_order))


class RepeatedLog:
    """Identical device errors logged once, then at most once per ``every_s`` with how often
    they repeated meanwhile: a misconfigured register answers the same exception on every
    poll, and a journal full of one line hides everything else. The metrics still count each
    one. ``clear`` forgets a key once its request succeeds, so a new failure is logged at once.
    """

    def __init__(self, every_s: float = 300.0) -> None:
        self.every_s = every_s
        self._seen: dict[tuple[object, ...], list[float]] = {}  # key -> [logged at, repeats]

    def warning(self, key: tuple[object, ...], event: str, **fields: object) -> bool:
        now = time.monotonic()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.every_s:
            entry[1] += 1
            return False
        if entry is not None:
            fields["repeated"] = int(entry[1])
            fields["repeated_within_s"] = self.every_s
        self._seen[key] = [now, 0]
        log_event(log, logging.WARNING, event, **fields)
        return True

    def clear(self, prefix: tuple[object, ...]) -> None:
        for key in [k for k in self._seen if k[: len(prefix)] == prefix]:
            repeats = self._seen.pop(key)[1]
            log_event(
                log,
                logging.INFO,
                "modbus error cleared",
                key=" ".join(str(k) for k in key[: len(prefix) + 1]),
                repeated=int(repeats),
            )


@dataclass(slots=True)
class ReadRequest:
    register: str
    start: int
    count: int
    items: list[tuple[str, Decodable]] = field(default_factory=list)


def plan_reads(device: ModbusDevice) -> list[ReadRequest]:
    """Group the device's registers (and bits) into block reads, per table."""
    wanted: list[tuple[str, Decodable]] = [(f.name, f) for f in device.fields]
    if device.sample_counter is not None:
        wanted.append(("__counter__", device.sample_counter))
    if device.timestamp is not None:
        wanted.append(("__timestamp__", device.timestamp))
    requests: list[ReadRequest] = []
    for register in ("holding", "input", "coil", "discrete_input"):
        items = sorted(
            (w for w in wanted if w[1].register_kind == register), key=lambda w: w[1].address
        )
        bits = register in BIT_TABLES
        # A gap of max_gap registers costs as much as 16 times as many bits.
        max_gap = device.max_gap * 16 if bits else device.max_gap
        limit = MAX_BITS_PER_READ if bits else MAX_REGISTERS_PER_READ
        current: ReadRequest | None = None
        for key, item in items:
            width = item.width
            end = item.address + width
            if current is not None:
                gap = item.address - (current.start + current.count)
                new_count = max(current.count, end - current.start)
                if gap <= max_gap and new_count <= limit:
                    current.count = new_count
                    current.items.append((key, item))
                    continue
            current = ReadRequest(register, item.address, width, [(key, item)])
            requests.append(current)
    return requests


@dataclass(slots=True)
class DeviceState:
    last_counter: int | None = None
    consecutive_failures: int = 0
    healthy: bool = False


class ModbusInput(Input[ModbusInputConfig]):
    """Runs the polling tasks of one Modbus endpoint (one or more unit ids)."""

    scan_help = "which register addresses answer, per unit id and table (Modbus TCP)"

    def __init__(
        self,
        config: ModbusInputConfig,
        edge_id: str,
        emit: Emit,
        metrics: EdgeMetrics,
        *,
        window: TimeWindow | None = None,
    ) -> None:
        super().__init__(config, edge_id, emit, metrics, window=window)
        self._plans = {id(d): plan_reads(d) for d in config.devices}
        # Device unit -> catalog unit, per field (checked at config load already).
        self._convert = {
            (d.machine_id, f.name): sensor_converter(f.name, f.unit)
            for d in config.devices
            for f in d.fields
        }
        self._errors = RepeatedLog()
        self._states = {d.machine_id: DeviceState() for d in config.devices}
        self._client: ModbusBaseClient | None = None
        # pymodbus matches responses by transaction id, but serialising requests per TCP
        # connection keeps slow gateways (which often handle one request at a time) happy.
        self._lock = asyncio.Lock()

    def _make_client(self) -> ModbusBaseClient:
        # Created inside run(): pymodbus binds its client to the running event loop.
        source = self.config
        if source.transport == "rtu":
            return AsyncModbusSerialClient(
                str(source.serial_port),
                framer=FramerType.RTU,
                baudrate=source.baudrate,
                parity=source.parity,
                stopbits=source.stopbits,
                timeout=source.timeout_s,
                retries=source.retries,
                reconnect_delay=0.5,
                reconnect_delay_max=10.0,
                name=source.name,
            )
        return AsyncModbusTcpClient(
            source.host or "",
            port=source.port,
            timeout=source.timeout_s,
            retries=source.retries,
            reconnect_delay=0.5,
            reconnect_delay_max=10.0,
            name=source.name,
        )

    def health(self) -> dict[str, bool]:
        return {m: s.healthy for m, s in self._states.items()}

    def resume(self, samples: Mapping[str, int]) -> None:
        for machine, state in self._states.items():
            if machine in samples:
                state.last_counter = samples[machine]

    def adopt(self, previous: object) -> None:
        """Take over the sample counters the input of the same name had seen (a reload
        replaces inputs): the sample it recorded last is not recorded again."""
        if not isinstance(previous, ModbusInput):
            return
        for machine, state in self._states.items():
            old = previous._states.get(machine)
            if old is not None:
                state.last_counter = old.last_counter

    async def run(self, stop: asyncio.Event) -> None:
        self._client = self._make_client()
        tasks = [asyncio.create_task(self._poll_device(d, stop)) for d in self.config.devices]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._client.close()
            self._client = None

    async def _ensure_connected(self) -> bool:
        assert self._client is not None
        if self._client.connected:
            return True
        ok = await self._client.connect()
        if ok:
            self.metrics.source_reconnects.labels(self.config.name).inc()
            log_event(
                log,
                logging.INFO,
                "modbus connected",
                source=self.config.name,
                endpoint=f"{self.config.host}:{self.config.port}",
            )
        return bool(ok)

    async def _poll_device(self, device: ModbusDevice, stop: asyncio.Event) -> None:
        interval = device.poll_interval_s
        deadline = time.monotonic()
        while not stop.is_set():
            try:
                await self._poll_once(device)
            except asyncio.CancelledError:
                raise
            except Exception:  # a poll must never take the daemon down
                log.exception(
                    "modbus poll failed", extra={"fields": {"machine": device.machine_id}}
                )
            deadline += interval
            delay = deadline - time.monotonic()
            if delay < 0:
                # Behind schedule (slow device): skip the missed slots instead of bursting.
                missed = int(-delay // interval) + 1
                deadline += missed * interval
                delay = deadline - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, delay))

    async def _read(
        self, device: ModbusDevice, request: ReadRequest
    ) -> list[int] | list[bool] | None:
        async with self._lock:
            if not await self._ensure_connected():
                return None
            assert self._client is not None
            read = {
                "holding": self._client.read_holding_registers,
                "input": self._client.read_input_registers,
                "coil": self._client.read_coils,
                "discrete_input": self._client.read_discrete_inputs,
            }[request.register]
            response = await read(request.start, count=request.count, device_id=device.unit_id)
        if response.isError():
            self._errors.warning(
                (device.machine_id, request.register, request.start, str(response)),
                "modbus exception response",
                source=self.config.name,
                machine=device.machine_id,
                unit=device.unit_id,
                register=request.register,
                start=request.start,
                count=request.count,
                response=str(response),
            )
            return None
        self._errors.clear((device.machine_id, request.register, request.start))
        if request.register in BIT_TABLES:
            return list(response.bits[: request.count])
        return list(response.registers)

    async def _poll_once(self, device: ModbusDevice) -> None:
        reading = await self._read_device(device)
        if reading is not None:
            self.metrics.readings_in.labels(self.config.name).inc()
            sample = (
                self._states[device.machine_id].last_counter
                if device.sample_counter is not None
                else None
            )
            self.emit(reading, sample=sample)

    async def _read_device(self, device: ModbusDevice) -> Reading | None:
        """One poll of ``device``: its reading, or None when it did not answer at all or
        its sample counter shows no new sample since the last poll."""
        state = self._states[device.machine_id]
        sensors: dict[str, float | None] = {}
        quality: dict[str, str] = {}
        counter: int | None = None
        device_ts: int | None = None
        any_ok = False
        started = time.perf_counter()
        for request in self._plans[id(device)]:
            try:
                registers = await self._read(device, request)
            except (ModbusException, OSError, TimeoutError) as exc:
                self._errors.warning(
                    (device.machine_id, request.register, request.start, str(exc)),
                    "modbus read failed",
                    source=self.config.name,
                    machine=device.machine_id,
                    error=str(exc),
                )
                registers = None
            if registers is None:
                self.metrics.source_errors.labels(self.config.name, device.machine_id).inc()
                for key, _item in request.items:
                    if not key.startswith("__"):
                        sensors[key] = None
                        quality[key] = "bad"
                continue
            any_ok = True
            for key, item in request.items:
                offset = item.address - request.start
                words = registers[offset : offset + item.width]
                if key in ("__counter__", "__timestamp__"):
                    number = int(
                        decode_registers(
                            [int(w) for w in words],
                            item.data_type,
                            item.byte_order,
                            item.word_order,
                        )
                    )
                    if key == "__counter__":
                        counter = number
                    else:
                        device_ts = number
                    continue
                assert isinstance(item, RegisterField)
                value = self._value(device, item, words)
                sensors[key] = value
                if value is None:
                    quality[key] = "bad"
        self.metrics.poll_seconds.labels(self.config.name).observe(time.perf_counter() - started)

        if not any_ok:
            state.consecutive_failures += 1
            if state.healthy:
                log_event(
                    log,
                    logging.WARNING,
                    "modbus device unreachable",
                    source=self.config.name,
                    machine=device.machine_id,
                )
            state.healthy = False
            self.metrics.source_up.labels(self.config.name, device.machine_id).set(0)
            return None
        if not state.healthy:
            log_event(
                log,
                logging.INFO,
                "modbus device healthy",
                source=self.config.name,
                machine=device.machine_id,
            )
        state.healthy = True
        state.consecutive_failures = 0
        self.metrics.source_up.labels(self.config.name, device.machine_id).set(1)

        if counter is not None:
            if counter == state.last_counter:
                return None  # the device has not produced a new sample since the last poll
            state.last_counter = counter

        ts = (
            self.sanity.timestamp(_from_unix_ms(device_ts), device.machine_id)
            if device_ts is not None
            else datetime.now(UTC)
        )
        core = {k: v for k, v in sensors.items() if k in SENSOR_INDEX}
        # A custom sensor has no quality of its own in a reading: one that could not be read
        # is left out.
        custom = {k: v for k, v in sensors.items() if k not in SENSOR_INDEX and v is not None}
        quality = {k: q for k, q in quality.items() if k in core}
        reading = Reading(
            machine_id=device.machine_id,
            edge_id=self.edge_id,
            seq=0,  # assigned by the buffer at commit
            ts=ts,
            values=core,
            custom=custom,
            quality=quality,
        )
        return reading

    def _value(
        self, device: ModbusDevice, item: RegisterField, words: list[int] | list[bool]
    ) -> float | None:
        """A field's stored value: decoded, scaled, converted to the sensor's catalog unit and
        checked; None (bad) when the registers do not hold what the field says."""
        try:
            raw = decode_field(item, words)
        except DecodeError as exc:
            return self.sanity.value(str(exc), device.machine_id, item.name)
        if isinstance(raw, str):  # a string field whose text is no number
            return self.sanity.value(raw, device.machine_id, item.name)
        scaled = raw * item.scale + item.offset
        try:
            converted = self._convert[(device.machine_id, item.name)](scaled)
        except OverflowError:
            return self.sanity.value(scaled, device.machine_id, item.name)
        return self.sanity.value(converted, device.machine_id, item.name)

    async def probe(self) -> list[ProbeResult]:
        """Polls every device once on a connection of its own; a device answers when at
        least one of its requests does, and every sensor it served must read good."""
        results: list[ProbeResult] = []
        self._client = self._make_client()
        try:
            for device in self.config.devices:
                target = f"unit {device.unit_id} ({device.machine_id})"
                try:
                    reading = await self._read_device(device)
                except Exception as exc:  # a probe reports, it never raises
                    results.append(ProbeResult(self.name, target, False, _describe(exc)))
                    continue
                if reading is None:
                    detail = f"no answer from {self.config.endpoint}"
                    results.append(ProbeResult(self.name, target, False, detail))
                    continue
                bad = sorted(reading.quality)
                values = len(reading.values) + len(reading.custom)
                detail = f"{values} values read" + (f"; bad: {', '.join(bad)}" if bad else "")
                results.append(ProbeResult(self.name, target, not bad, detail))
        finally:
            self._client.close()
            self._client = None
        return results

    @classmethod
    def scan_arguments(cls, parser: argparse.ArgumentParser) -> None:
        from edge.inputs.modbus.scan import add_arguments

        add_arguments(parser)

    @classmethod
    async def scan(cls, args: argparse.Namespace) -> str:
        from edge.inputs.modbus.scan import scan_from_args

        return await scan_from_args(args)

    #: ``rig-edge import-map`` (found through the registry, like scan): a register map
    #: exported as CSV becomes this input's YAML.
    import_map_help: ClassVar[str] = "a PLC's register map (CSV) as the YAML of a Modbus input"

    @classmethod
    def import_map_arguments(cls, parser: argparse.ArgumentParser) -> None:
        from edge.inputs.modbus.import_map import add_arguments

        add_arguments(parser)

    @classmethod
    def import_map(cls, args: argparse.Namespace) -> str:
        """The YAML text; ``ValueError`` naming the CSV line when the map cannot be used."""
        from edge.inputs.modbus.import_map import from_args

        return from_args(args)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _from_unix_ms(ms: int) -> datetime:
    """The clock register's time; a value no date can hold is as wrong as a far-off one."""
    try:
        return datetime.fromtimestamp(ms / 1000.0, UTC)
    except (OverflowError, OSError, ValueError):
        return datetime.max.replace(tzinfo=UTC)
