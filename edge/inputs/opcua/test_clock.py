"""OPC-UA source timestamps against the simulator's real server: a server clock a century
ahead is replaced by the receive time and counted, and a clock that was a few minutes ahead
for a while no longer holds every later reading at its maximum (no latch)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.inputs.opcua.config import OpcUaInputConfig
from edge.inputs.opcua.input import OpcUaInput
from edge.metrics import EdgeMetrics
from shared.message import Reading
from simulator.config import SimConfig
from simulator.server import run_simulator
from tests.support.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NODES = {
    "rpm": "nsu=urn:rig-alpha:simulator;s=Rig/A/mechanical/rpm",
    "vibration": "nsu=urn:rig-alpha:simulator;s=Rig/A/mechanical/vibration",
}


def _run(
    tmp_path: Path, sim: dict[str, Any], done: Any
) -> tuple[list[tuple[datetime, Reading]], OpcUaInput]:
    """Subscribe to machine A without a sample counter (readings paced by value changes and
    timed by SourceTimestamps) until ``done(readings)``; each reading with its receive time."""
    port = free_port()
    sim_config = SimConfig.model_validate(
        {
            "machines": ["A"],
            "rate_hz": 10,
            "modbus": {"enabled": False},
            "opcua": {
                "enabled": True,
                "port": port,
                "security": ["none"],
                "cert_dir": str(tmp_path / "pki"),
            },
            **sim,
        }
    )
    source = OpcUaInputConfig.model_validate(
        {
            "name": "plc",
            "endpoint": f"opc.tcp://127.0.0.1:{port}/rig-alpha/",
            "publishing_interval_ms": 50,
            "sampling_interval_ms": 0,
            "machines": [{"machine_id": "A", "nodes": NODES}],
        }
    )
    received: list[tuple[datetime, Reading]] = []
    connector = OpcUaInput(
        source, "e1", lambda r, *a, **k: received.append((datetime.now(UTC), r)), EdgeMetrics()
    )

    async def scenario() -> None:
        stop_sim, stop_edge, started = asyncio.Event(), asyncio.Event(), asyncio.Event()
        server = asyncio.create_task(run_simulator(sim_config, stop_sim, started=started))
        await asyncio.wait_for(started.wait(), 30)
        edge = asyncio.create_task(connector.run(stop_edge))
        for _ in range(1200):
            if done(received):
                break
            await asyncio.sleep(0.05)
        stop_edge.set()
        await edge
        stop_sim.set()
        await server

    asyncio.run(scenario())
    assert done(received), f"only {len(received)} readings"
    return received, connector


def test_a_server_clock_a_century_ahead_is_replaced(tmp_path: Path) -> None:
    century = 100 * 365.25 * 86400
    received, connector = _run(tmp_path, {"clock_offset_s": century}, lambda got: len(got) >= 10)
    for at, reading in received:
        assert abs(reading.ts - at) < timedelta(seconds=5), (reading.ts, at)
    assert connector.sanity.clock_replaced >= len(received)
    assert (
        connector.metrics.registry.get_sample_value(
            "rig_edge_device_clock_replaced_total", {"source": "plc"}
        )
        == connector.sanity.clock_replaced
    )


def test_timestamps_follow_the_clock_back_after_it_ran_ahead(tmp_path: Path) -> None:
    # Five minutes ahead (inside the window: kept as the device's time) for the first two
    # seconds, then right again.
    fault = {"kind": "clock", "machine": "A", "start_s": 0, "duration_s": 2, "offset_s": 300}
    ahead = timedelta(seconds=240)

    def enough(got: list[tuple[datetime, Reading]]) -> bool:
        ran_ahead = any(r.ts - at > ahead for at, r in got)
        after = [r for at, r in got if at - got[0][0] > timedelta(seconds=4)]
        return ran_ahead and len(after) >= 10

    received, _ = _run(tmp_path, {"faults": [fault]}, enough)
    later = [(at, r) for at, r in received if at - received[0][0] > timedelta(seconds=4)]
    assert all(abs(r.ts - at) < timedelta(seconds=5) for at, r in later), [
        (r.ts, at) for at, r in later[:5]
    ]
