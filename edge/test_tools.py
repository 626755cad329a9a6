"""Field tools against the simulator's real servers: check-config --probe and scan."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from edge.cli import main as edge_main
from edge.inputs.modbus.scan import scan_modbus
from edge.inputs.opcua.scan import scan_opcua
from simulator.config import SimConfig
from simulator.server import run_simulator
from tests.support.pipeline import edge_config
from tests.support.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


class _SimThread:
    """The simulator on its own event loop thread, so CLI code can run asyncio.run."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.stop_event = asyncio.Event()
        ready = asyncio.Event()

        async def main() -> None:
            task = asyncio.create_task(run_simulator(self.config, self.stop_event, started=ready))
            await ready.wait()
            self.started.set()
            await task

        self.loop.run_until_complete(main())

    def __enter__(self) -> _SimThread:
        self.thread.start()
        assert self.started.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(30)


def test_probe_reports_live_and_dead_sources(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    with _SimThread(SimConfig(machines=["A", "B"], rate_hz=5, modbus_port=port)):
        cfg = edge_config(
            tmp_path,
            sim_port=port,
            machines=["A", "B"],
            poll_interval_s=1,
            output={"kind": "http", "url": "http://127.0.0.1:1/x", "api_key_env": "PATH"},
        )
        # The inputs answer; the output (nothing listens on port 1) does not: exit 1.
        assert edge_main(["check-config", "-c", str(cfg), "--probe"]) == 1
        out = capsys.readouterr().out
        assert "ok   simulator: unit 1 (A): 50 values read" in out
        assert "FAIL output http: http://127.0.0.1:1/x: not reachable: ConnectError" in out
        dead = edge_config(
            tmp_path,
            sim_port=free_port(),
            machines=["A"],
            poll_interval_s=1,
            output={"kind": "http", "url": "http://127.0.0.1:1/x", "api_key_env": "PATH"},
            edge_id="dead",
        )
        assert edge_main(["check-config", "-c", str(dead), "--probe"]) == 1
        assert "FAIL simulator: unit 1 (A): no answer" in capsys.readouterr().out


def test_scan_finds_the_register_map_and_the_node_tree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port, opcua_port = free_port(), free_port()
    config = SimConfig.model_validate(
        {
            "machines": ["A", "B"],
            "rate_hz": 5,
            "modbus": {"port": port},
            "opcua": {
                "enabled": True,
                "port": opcua_port,
                "security": ["none"],
                "cert_dir": str(tmp_path / "pki"),
            },
        }
    )
    with _SimThread(config):
        ranges = asyncio.run(scan_modbus("127.0.0.1", port, [1, 2], 0, 200, ["holding", "input"]))
        lines = asyncio.run(scan_opcua(f"opc.tcp://127.0.0.1:{opcua_port}/rig-alpha/"))
        # The same through the CLI, which finds each scan through the input registry.
        argv = ["scan", "modbus", "--host", "127.0.0.1", "--port", str(port), "--units", "2"]
        assert edge_main([*argv, "--table", "input", "--end", "60"]) == 0
        assert "unit 2 input registers 0..49 (50 answer)" in capsys.readouterr().out
        assert edge_main(["scan", "mqtt"]) == 2
        assert "has no scan; scan works for: modbus, opcua" in capsys.readouterr().err
    spans = {(r.unit, r.table, r.start, len(r.values)) for r in ranges}
    assert spans == {
        (1, "holding", 0, 110),
        (1, "input", 0, 50),
        (2, "holding", 0, 110),
        (2, "input", 0, 50),
    }
    text = "\n".join(lines)
    assert "nsu=urn:rig-alpha:simulator;s=Rig/A/thermal/coolant_temp" in text
    assert "SampleCounter" in text
