"""The Modbus input: register decoding, read planning, and polling the simulator's real
server (plus a dead device beside it)."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest

from edge.inputs.modbus.config import ModbusDevice, ModbusSource
from edge.inputs.modbus.connector import ModbusConnector, decode_registers, plan_reads
from edge.metrics import EdgeMetrics
from shared.message import Reading
from simulator.config import SimConfig
from simulator.edge_config import simulator_edge_config
from simulator.server import run_simulator
from tests.support.processes import free_port


def _words(fmt: str, value: float | int) -> list[int]:
    raw = struct.pack(">" + fmt, value)
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


@pytest.mark.parametrize(
    ("fmt", "dtype", "value"),
    [
        ("f", "float32", 72.5),
        ("d", "float64", -1.25e-3),
        ("i", "int32", -123456),
        ("I", "uint32", 4_000_000_000),
        ("h", "int16", -2),
        ("Q", "uint64", 2**60 + 5),
    ],
)
def test_decode_every_type_and_order(fmt: str, dtype: str, value: float) -> None:
    words = _words(fmt, value)
    assert decode_registers(words, dtype) == value
    assert decode_registers(list(reversed(words)), dtype, word_order="little") == value
    swapped = [int.from_bytes(w.to_bytes(2, "big")[::-1], "big") for w in words]
    assert decode_registers(swapped, dtype, byte_order="little") == value


def test_fields_are_grouped_into_block_reads() -> None:
    device = ModbusDevice.model_validate(
        {
            "machine_id": "A",
            "fields": [
                {"name": "temperature", "address": 10},
                {"name": "pressure", "address": 12},
                {"name": "rpm", "address": 40},
                {"name": "vibration", "address": 300},
                {"name": "voltage", "address": 0, "register": "input", "type": "int16"},
            ],
            "sample_counter": {"address": 0},
        }
    )
    plans = [(p.register, p.start, p.count) for p in plan_reads(device)]
    assert plans == [("holding", 0, 14), ("holding", 40, 2), ("holding", 300, 2), ("input", 0, 1)]


def test_reads_never_exceed_125_registers() -> None:
    fields = [{"name": f"c{i}", "address": 2 * i} for i in range(100)]
    device = ModbusDevice.model_validate({"machine_id": "A", "fields": fields})
    assert all(p.count <= 125 for p in plan_reads(device))
    assert len(plan_reads(device)) == 2


@pytest.mark.integration
def test_polls_the_simulator_and_survives_a_dead_device(tmp_path: Path) -> None:
    port = free_port()
    dead_port = free_port()  # nothing listens here
    config = simulator_edge_config(
        sim_host="127.0.0.1",
        sim_port=port,
        machines=["A", "B"],
        output={},
        buffer_path=tmp_path / "b.db",
        poll_interval_s=0.05,
    )
    live = ModbusSource.model_validate(config["sources"]["modbus"][0])
    dead = ModbusSource.model_validate(
        {
            "name": "dead",
            "host": "127.0.0.1",
            "port": dead_port,
            "timeout_s": 0.2,
            "devices": [
                {
                    "machine_id": "Z",
                    "poll_interval_s": 0.05,
                    "fields": [{"name": "temperature", "address": 10}],
                }
            ],
        }
    )
    readings: list[Reading] = []
    metrics = EdgeMetrics()

    async def scenario() -> None:
        stop_sim, stop_edge = asyncio.Event(), asyncio.Event()
        sim = asyncio.create_task(
            run_simulator(SimConfig(machines=["A", "B"], rate_hz=10, modbus_port=port), stop_sim)
        )
        await asyncio.sleep(0.2)
        connectors = [ModbusConnector(s, "e1", readings.append, metrics) for s in (live, dead)]
        tasks = [asyncio.create_task(c.run(stop_edge)) for c in connectors]
        await asyncio.sleep(1.5)
        assert connectors[0].health() == {"A": True, "B": True}
        assert connectors[1].health() == {"Z": False}
        stop_edge.set()
        stop_sim.set()
        await asyncio.gather(*tasks, sim)

    asyncio.run(scenario())
    per_machine = {m: [r for r in readings if r.machine_id == m] for m in ("A", "B", "Z")}
    # 10 Hz for ~1.5 s: about 15 samples each, none recorded twice although polled at 20 Hz.
    assert 10 <= len(per_machine["A"]) <= 17
    assert len({r.ts for r in per_machine["A"]}) == len(per_machine["A"])
    assert per_machine["Z"] == []
    assert len(per_machine["A"][0].values) == 50
    errors = metrics.source_errors.labels("dead", "Z")._value.get()
    assert errors >= 3


@pytest.mark.integration
def test_recovers_after_the_modbus_server_restarts(tmp_path: Path) -> None:
    port = free_port()
    config = simulator_edge_config(
        sim_host="127.0.0.1",
        sim_port=port,
        machines=["A"],
        output={},
        buffer_path=tmp_path / "b.db",
        poll_interval_s=0.05,
    )
    source = ModbusSource.model_validate({**config["sources"]["modbus"][0], "timeout_s": 0.3})
    readings: list[Reading] = []
    connector = ModbusConnector(source, "e1", readings.append, EdgeMetrics())

    async def scenario() -> None:
        stop_edge = asyncio.Event()
        edge = asyncio.create_task(connector.run(stop_edge))
        for _ in range(2):
            stop_sim = asyncio.Event()
            sim = asyncio.create_task(
                run_simulator(SimConfig(machines=["A"], rate_hz=10, modbus_port=port), stop_sim)
            )
            before = len(readings)
            for _ in range(80):
                await asyncio.sleep(0.1)
                if len(readings) >= before + 5:
                    break
            assert len(readings) >= before + 5, "no readings after the server (re)started"
            assert connector.health() == {"A": True}
            stop_sim.set()
            await sim
            await asyncio.sleep(1.0)
            assert connector.health() == {"A": False}
        stop_edge.set()
        await edge

    asyncio.run(scenario())


@pytest.mark.integration
def test_modbus_rtu_source_reads_the_simulator_over_a_serial_line(tmp_path: Path) -> None:
    link = tmp_path / "ttyRIG"
    config = simulator_edge_config(
        sim_host="127.0.0.1",
        sim_port=1,
        machines=["A", "B"],
        output={},
        buffer_path=tmp_path / "b.db",
        poll_interval_s=0.2,
    )
    doc = config["sources"]["modbus"][0]
    doc.update(transport="rtu", serial_port=str(link), baudrate=115200, timeout_s=1.0)
    doc.pop("host")
    source = ModbusSource.model_validate(doc)
    readings: list[Reading] = []

    async def scenario() -> None:
        stop_sim, stop_edge = asyncio.Event(), asyncio.Event()
        sim_config = SimConfig.model_validate(
            {
                "machines": ["A", "B"],
                "rate_hz": 5,
                "modbus": {"enabled": False},
                "modbus_rtu": {"enabled": True, "link": str(link), "baudrate": 115200},
            }
        )
        sim = asyncio.create_task(run_simulator(sim_config, stop_sim))
        await asyncio.sleep(0.3)
        connector = ModbusConnector(source, "e1", readings.append, EdgeMetrics())
        task = asyncio.create_task(connector.run(stop_edge))
        await asyncio.sleep(2.0)
        stop_edge.set()
        await task
        stop_sim.set()
        await sim

    asyncio.run(scenario())
    machines = {r.machine_id for r in readings}
    assert machines == {"A", "B"}
    assert all(len(r.values) == 50 and not r.quality for r in readings)
