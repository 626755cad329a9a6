"""The OPC-UA input against the simulator's real OPC-UA server, through a server restart."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from edge.inputs.opcua.config import OpcUaSource
from edge.inputs.opcua.connector import OpcUaConnector
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
    source = OpcUaSource.model_validate(
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
    connector = OpcUaConnector(source, "edge-1", lambda r, *a: readings.append(r), EdgeMetrics())

    async def scenario() -> None:
        edge_stop = asyncio.Event()
        edge = asyncio.create_task(connector.run(edge_stop))
        for run in range(2):  # the server restarts in the middle
            stop, started = asyncio.Event(), asyncio.Event()
            config = sim_config.model_copy(update={"record_path": tmp_path / f"rec{run}.db"})
            sim = asyncio.create_task(run_simulator(config, stop, started=started))
            await asyncio.wait_for(started.wait(), 30)
            before = len(readings)
            for _ in range(100):
                if len(readings) >= before + 10 and all(connector.health().values()):
                    break
                await asyncio.sleep(0.1)
            assert len(readings) >= before + 10, "no readings after (re)start"
            stop.set()
            await sim
            await asyncio.sleep(0.5)
        edge_stop.set()
        await edge

    asyncio.run(scenario())
    served = {}
    for run in range(2):
        conn = sqlite3.connect(tmp_path / f"rec{run}.db")
        served.update(
            {
                (m, t): json.loads(v)
                for m, t, v in conn.execute('SELECT machine_id, ts_ms, "values" FROM samples')
            }
        )
        conn.close()
    a = [r for r in readings if r.machine_id == "A"]
    b = [r for r in readings if r.machine_id == "B"]
    assert len(a) >= 10 and len(b) >= 10
    matched = 0
    for reading in a:
        key = ("A", round(reading.ts.timestamp() * 1000))
        assert key in served, "a reading whose timestamp the simulator never served"
        expected = dict(zip(CORE_SENSOR_NAMES, served[key], strict=True))
        # A snapshot: every value was served in this or an earlier sample of A.
        assert set(reading.values) == set(CORE_SENSOR_NAMES)
        matched += reading.values == expected
    assert matched >= len(a) // 2
    assert all(set(r.values) == {"rpm", "vibration"} for r in b)
    assert len({r.ts for r in b}) == len(b)  # one reading per sample counter change
