"""What a Modbus device says is checked against the real simulator: a clock register a
century ahead is replaced by the receive time and counted (a few minutes off is kept), and a
value past the magnitude limit (a wrong scale) makes that sensor bad, not the reading."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.inputs.modbus.config import ModbusInputConfig
from edge.inputs.modbus.input import ModbusInput
from edge.metrics import EdgeMetrics
from shared.message import Reading, check_reading
from simulator.config import SimConfig
from simulator.edge_config import simulator_edge_config
from simulator.server import run_simulator
from tests.support.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CENTURY_S = 100 * 365.25 * 86400


@dataclass
class Polled:
    readings: list[Reading]
    start: datetime
    end: datetime
    replaced: float  # rig_edge_device_clock_replaced_total
    refused: float  # rig_edge_values_refused_total
    connector: ModbusInput


def _poll(tmp_path: Path, clock_offset_s: float, count: int = 5) -> Polled:
    port = free_port()
    config = simulator_edge_config(
        sim_host="127.0.0.1",
        sim_port=port,
        machines=["A"],
        output={},
        buffer_path=tmp_path / "b.db",
        poll_interval_s=0.05,
    )
    doc = config["inputs"]["modbus"][0]
    for field in doc["devices"][0]["fields"]:
        if field["name"] == "temperature":
            field["scale"] = 1e11  # a mis-set scale: ~70 degrees read as ~7e12
    source = ModbusInputConfig.model_validate(doc)
    readings: list[Reading] = []
    metrics = EdgeMetrics()
    connector = ModbusInput(source, "e1", lambda r, *a, **k: readings.append(r), metrics)
    window: list[datetime] = []

    async def scenario() -> None:
        stop_sim, stop_edge, started = asyncio.Event(), asyncio.Event(), asyncio.Event()
        sim_config = SimConfig(
            machines=["A"], rate_hz=10, modbus_port=port, clock_offset_s=clock_offset_s
        )
        sim = asyncio.create_task(run_simulator(sim_config, stop_sim, started=started))
        await asyncio.wait_for(started.wait(), 30)
        window.append(datetime.now(UTC))
        edge = asyncio.create_task(connector.run(stop_edge))
        for _ in range(600):
            if len(readings) >= count:
                break
            await asyncio.sleep(0.05)
        stop_edge.set()
        await edge
        window.append(datetime.now(UTC))
        stop_sim.set()
        await sim

    asyncio.run(scenario())
    assert len(readings) >= count, "no readings from the simulator"
    replaced = metrics.registry.get_sample_value(
        "rig_edge_device_clock_replaced_total", {"source": source.name}
    )
    refused = metrics.registry.get_sample_value(
        "rig_edge_values_refused_total", {"source": source.name}
    )
    return Polled(readings, window[0], window[1], replaced or 0.0, refused or 0.0, connector)


def test_a_clock_a_century_ahead_is_replaced_by_the_receive_time(tmp_path: Path) -> None:
    polled = _poll(tmp_path, CENTURY_S)
    readings = polled.readings
    assert all(polled.start <= r.ts <= polled.end for r in readings), [r.ts for r in readings]
    assert polled.replaced == polled.connector.sanity.clock_replaced >= len(readings)
    # The mis-scaled sensor is bad in every reading; the other 49 values are there.
    for reading in readings:
        assert reading.values["temperature"] is None
        assert reading.quality["temperature"] == "bad"
        assert sum(v is not None for v in reading.values.values()) >= 40
        check_reading(reading)  # the cloud takes it
    assert polled.refused >= len(readings)


def test_a_clock_a_minute_ahead_is_kept(tmp_path: Path) -> None:
    polled = _poll(tmp_path, 60.0)
    low = polled.start + timedelta(seconds=58)
    high = polled.end + timedelta(seconds=62)
    assert all(low <= r.ts <= high for r in polled.readings), [r.ts for r in polled.readings]
    assert polled.replaced == 0
