"""The OPC-UA input against the simulator's real OPC-UA server, through a server restart."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.inputs.opcua.config import OpcUaInputConfig
from edge.inputs.opcua.input import OpcUaInput
from edge.metrics import EdgeMetrics
from shared.catalog import CORE_SENSOR_NAMES
from shared.message import Reading
from simulator.config import SimConfig
from simulator.server import run_simulator
from tests.support.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_subscription_readings_match_the_simulator_and_survive_a_restart(tmp_path: Path) -> None:
    port = free_port()
    sim_config = SimConfig.model_validate(
        {
            "machines": ["A", "B"],
            "rate_hz": 5,
            "modbus": {"enabled": False},
            "opcua": {
                "enabled": True,
                "port": port,
                "security": ["none"],
                "cert_dir": str(tmp_path / "pki"),
            },
        }
    )
    source = OpcUaInputConfig.model_validate(
        {
            "name": "plc",
            "endpoint": f"opc.tcp://127.0.0.1:{port}/rig-alpha/",
            "publishing_interval_ms": 50,
            "sampling_interval_ms": 0,
            "reconnect_max_s": 1,
            "machines": [
                {"machine_id": "A", "browse_root": "nsu=urn:rig-alpha:simulator;s=Rig/A"},
                {
                    "machine_id": "B",
                    "nodes": {
                        "rpm": "nsu=urn:rig-alpha:simulator;s=Rig/B/mechanical/rpm",
                        "vibration": "nsu=urn:rig-alpha:simulator;s=Rig/B/mechanical/vibration",
                    },
                    "sample_counter": "nsu=urn:rig-alpha:simulator;s=Rig/B/SampleCounter",
                },
            ],
        }
    )
    readings: list[Reading] = []
    connector = OpcUaInput(source, "edge-1", lambda r, *a, **k: readings.append(r), EdgeMetrics())

    async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        edge_stop = asyncio.Event()
        edge = asyncio.create_task(connector.run(edge_stop))
        for run in range(2):  # the server restarts in the middle
            stop, started = asyncio.Event(), asyncio.Event()
            config = sim_config.model_copy(update={"record_path": tmp_path / f"rec{run}.db"})
            sim = asyncio.create_task(run_simulator(config, stop, started=started))
            await asyncio.wait_for(started.wait(), 30)
            before = {m: sum(r.machine_id == m for r in readings) for m in ("A", "B")}
            await until(
                lambda before=before: (
                    all(sum(r.machine_id == m for r in readings) >= before[m] + 10 for m in before)
                    and all(connector.health().values())
                ),
                60,
                f"ten readings of each machine from server run {run}",
            )
            stop.set()
            await sim
            await until(lambda: not any(connector.health().values()), 30, "the loss noticed")
        edge_stop.set()
        await edge

    asyncio.run(scenario())
    served: dict[tuple[str, int], tuple[int, int, list[float | None]]] = {}
    for run in range(2):
        conn = sqlite3.connect(tmp_path / f"rec{run}.db")
        served.update(
            {
                (m, t): (run, n, json.loads(v))
                for m, n, t, v in conn.execute(
                    'SELECT machine_id, sample, ts_ms, "values" FROM samples'
                )
            }
        )
        conn.close()
    seen: set[tuple[int, str, int]] = set()
    for reading in readings:
        key = (reading.machine_id, round(reading.ts.timestamp() * 1000))
        assert key in served, f"{key}: a reading whose timestamp the simulator never served"
        run, sample, values = served[key]
        expected = dict(zip(CORE_SENSOR_NAMES, values, strict=True))
        # One consistent sample: every value is the one served with that sample's counter
        # (A maps every sensor by browsing, B two nodes by id).
        wanted = set(CORE_SENSOR_NAMES) if reading.machine_id == "A" else {"rpm", "vibration"}
        assert set(reading.values) == wanted
        assert reading.values == {n: expected[n] for n in wanted}, key
        assert (run, reading.machine_id, sample) not in seen, f"sample {key} read twice"
        seen.add((run, reading.machine_id, sample))
