"""The Modbus input against uModbus, a Modbus TCP server not built on pymodbus, serving a PLC
map with what the simulator lacks: 4xxxx/3xxxx/0xxxx/1xxxx addresses, units to convert, bits
of a status word, BCD, an ASCII number, coils and discrete inputs."""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.inputs.modbus.config import ModbusInputConfig
from edge.inputs.modbus.input import ModbusInput
from edge.metrics import EdgeMetrics
from shared.message import Reading
from tests.peers.modbus_server import EXPECTED, PEER_CONFIG
from tests.support.processes import Service, free_port, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def umodbus_port(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    server = Service("umodbus", ["tests.peers.modbus_server", "--port", str(port)], tmp_path)
    server.start()

    def listening() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_until(listening, 30, "uModbus listening", services=[server])
        yield port
    finally:
        server.stop()


def _config(port: int, **device: object) -> ModbusInputConfig:
    return ModbusInputConfig.model_validate(
        {
            "name": "plc",
            "host": "127.0.0.1",
            "port": port,
            "timeout_s": 2.0,
            "devices": [{**PEER_CONFIG, **device}],
        }
    )


async def _first_reading(connector: ModbusInput, readings: list[Reading]) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(connector.run(stop))
    deadline = time.monotonic() + 30
    while not readings:
        assert time.monotonic() < deadline, "no reading from the uModbus server"
        await asyncio.sleep(0.02)
    stop.set()
    await task


def test_plc_map_read_from_umodbus_in_catalog_units(umodbus_port: int) -> None:
    readings: list[Reading] = []
    connector = ModbusInput(
        _config(umodbus_port), "e1", lambda r, *a, **k: readings.append(r), EdgeMetrics()
    )
    asyncio.run(_first_reading(connector, readings))
    reading = readings[0]
    assert not reading.quality, reading.quality
    got = {**reading.values, **reading.custom}
    assert set(got) == set(EXPECTED)
    for name, value in EXPECTED.items():
        # float32 on the wire: psi 150 is exact, the rest are integers or decimal text
        assert got[name] is not None and math.isclose(got[name], value, rel_tol=1e-6), name
    # the psi register lands in the bar sensor as bar: 150 psi = 10.342 bar
    assert round(got["pressure"], 3) == 10.342
    assert round(got["temperature"], 2) == 70.7  # 21.5 °C in °F

    results = asyncio.run(connector.probe())
    assert [r.ok for r in results] == [True], results


def test_repeated_exception_is_logged_once(
    umodbus_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A register the PLC does not serve answers an exception on every poll: the log says it
    once (the metrics count each), the other fields keep being read."""
    fields = [*PEER_CONFIG["fields"], {"name": "missing_register", "address": "40201"}]
    metrics = EdgeMetrics()
    readings: list[Reading] = []
    connector = ModbusInput(
        _config(umodbus_port, fields=fields),
        "e1",
        lambda r, *a, **k: readings.append(r),
        metrics,
    )

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(connector.run(stop))
        deadline = time.monotonic() + 30
        while metrics.source_errors.labels("plc", "P")._value.get() < 10:
            assert time.monotonic() < deadline, "exceptions not counted"
            await asyncio.sleep(0.02)
        stop.set()
        await task

    with caplog.at_level(logging.WARNING, logger="edge.inputs.modbus.input"):
        asyncio.run(scenario())
    lines = [r for r in caplog.records if r.getMessage() == "modbus exception response"]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert len(readings) >= 10
    assert all(r.values["pressure"] is not None for r in readings)
    assert "missing_register" not in readings[-1].custom


def test_scan_finds_every_table_of_umodbus(umodbus_port: int) -> None:
    from edge.inputs.modbus.scan import describe_ranges, scan_modbus

    tables = ["holding", "input", "coil", "discrete_input"]
    ranges = asyncio.run(scan_modbus("127.0.0.1", umodbus_port, [1], 0, 40, tables))
    spans = {(r.table, r.start, len(r.values)) for r in ranges}
    assert spans == {
        ("holding", 0, 32),
        ("input", 0, 8),
        ("coil", 0, 16),
        ("discrete_input", 0, 16),
    }
    text = describe_ranges(ranges)
    assert "unit 1 coils 0..15 (16 answer), Modicon 00001..00016" in text
    assert "      0: 1000010000000000" in text  # coils 0 and 5
    assert "unit 1 holding registers 0..31 (32 answer), Modicon 40001..40032" in text
