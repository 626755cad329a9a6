"""The input contract and registry: a fourth input type needs its own code and one
``register`` call, nothing else. A tiny input defined here (constant values for one
machine) goes through the real config loader, ``check-config`` and ``--probe``, ``scan``,
the daemon's build path and a running daemon's buffer and ``/healthz``."""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import yaml
from pydantic import Field

from edge.cli import main as edge_main
from edge.config import load_edge_config
from edge.daemon import EdgeDaemon, build_inputs
from edge.inputs import registry
from edge.inputs.base import Input, InputConfig, ProbeResult
from edge.metrics import EdgeMetrics
from shared.catalog import SENSOR_INDEX
from shared.configfile import ConfigError
from shared.configtypes import MachineId, SensorName
from shared.message import Reading

EDGE = Path(__file__).resolve().parents[1]


class ConstantInputConfig(InputConfig):
    name: str = Field(default="constant", min_length=1, max_length=64)
    machine_id: MachineId
    values: dict[SensorName, float] = Field(min_length=1)
    interval_s: float = Field(default=0.05, gt=0)

    def machine_ids(self) -> list[str]:
        return [self.machine_id]


class ConstantInput(Input[ConstantInputConfig]):
    """The same values for one machine every ``interval_s``."""

    scan_help = "what a constant input would send"

    running = False

    def _reading(self) -> Reading:
        values = self.config.values
        return Reading(
            self.config.machine_id,
            self.edge_id,
            0,
            datetime.now(UTC),
            {k: v for k, v in values.items() if k in SENSOR_INDEX},
            {k: v for k, v in values.items() if k not in SENSOR_INDEX},
        )

    async def run(self, stop: asyncio.Event) -> None:
        self.running = True
        try:
            while not stop.is_set():
                self.metrics.readings_in.labels(self.name).inc()
                self.emit(self._reading())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.config.interval_s)
        finally:
            self.running = False

    def health(self) -> dict[str, bool]:
        return {self.config.machine_id: self.running}

    async def probe(self) -> list[ProbeResult]:
        reading = self._reading()
        detail = f"{len(reading.values) + len(reading.custom)} values"
        return [ProbeResult(self.name, self.config.machine_id, True, detail)]

    @classmethod
    def scan_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--value", type=float, required=True)

    @classmethod
    async def scan(cls, args: argparse.Namespace) -> str:
        return f"constant {args.value}"


@pytest.fixture
def constant_type() -> Iterator[None]:
    registry.register("constant", ConstantInputConfig, ConstantInput)
    try:
        yield
    finally:
        registry.unregister("constant")


def _config(tmp_path: Path, inputs: dict[str, object], key: str = "inputs") -> Path:
    doc = {
        "edge_id": "reg-test",
        "buffer": {"path": str(tmp_path / "buffer.db"), "min_free_bytes": 0},
        "metrics": {"port": 0},
        key: inputs,
        # Nothing listens there: readings stay in the buffer, where the test finds them.
        "output": {"kind": "http", "url": "http://127.0.0.1:1/x", "api_key_env": "PATH"},
        "forwarding": {"shutdown_flush_s": 0},
    }
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


CONSTANT = {"constant": [{"name": "const", "machine_id": "K", "values": {"rpm": 1200.0, "x_y": 2}}]}


def test_a_fourth_input_type_is_configured_checked_and_probed(
    constant_type: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, CONSTANT)
    config = load_edge_config(path)
    (entry,) = config.inputs.of_kind("constant")
    assert isinstance(entry, ConstantInputConfig) and entry.values == {"rpm": 1200.0, "x_y": 2.0}
    assert config.inputs.machines() == [("K", "const")]

    assert edge_main(["check-config", "-c", str(path)]) == 0
    assert "inputs: 1 constant;" in capsys.readouterr().out
    assert edge_main(["check-config", "-c", str(path), "--probe", "--inputs-only"]) == 0
    assert "ok   const: K: 2 values" in capsys.readouterr().out

    assert edge_main(["scan", "constant", "--value", "3.5"]) == 0
    assert capsys.readouterr().out.strip() == "constant 3.5"

    (built,) = build_inputs(config, lambda *a, **k: True, EdgeMetrics())
    assert isinstance(built, ConstantInput) and built.name == "const"


def test_a_fourth_input_type_runs_in_the_daemon(constant_type: None, tmp_path: Path) -> None:
    config = load_edge_config(_config(tmp_path, CONSTANT))

    async def scenario() -> dict[str, object]:
        daemon = EdgeDaemon(config)
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        try:
            deadline = time.monotonic() + 30
            while daemon.buffer.stats().depth < 3:
                assert time.monotonic() < deadline, "no readings of the constant input buffered"
                assert not task.done(), task
                await asyncio.sleep(0.02)
            health = daemon.health()
            stored = daemon.buffer.peek(3)
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)
        return {"health": health, "stored": stored}

    result = asyncio.run(scenario())
    health = result["health"]
    assert isinstance(health, dict)
    doc = health["inputs"]["const"]
    assert doc["healthy"] is True and doc["devices"] == {"K": True}, doc
    assert doc["last_reading_at"] is not None and doc["clock_replaced_total"] == 0
    stored = result["stored"]
    assert isinstance(stored, list)
    for row in stored:
        payload = orjson.loads(row.payload)
        assert row.machine_id == "K" and payload["values"]["rpm"] == 1200.0, payload


def test_old_section_name_is_read_with_a_note(tmp_path: Path) -> None:
    device = {"machine_id": "A", "fields": [{"name": "rpm", "address": 0}]}
    modbus: dict[str, list[dict[str, object]]] = {
        "modbus": [{"host": "127.0.0.1", "devices": [device]}]
    }
    config = load_edge_config(_config(tmp_path, modbus, key="sources"))
    assert [e.name for e in config.inputs.all()] == ["modbus"]
    assert config.deprecations == ["'sources:' is the old name of 'inputs:'; rename the section"]
    # Errors name the section as the file does.
    modbus["modbus"][0]["port"] = 0
    with pytest.raises(ConfigError, match=r"sources\.modbus\[0\]\.port"):
        load_edge_config(_config(tmp_path, modbus, key="sources"))
    with pytest.raises(ConfigError, match=r"inputs\.modbus\[0\]\.port"):
        load_edge_config(_config(tmp_path, modbus))


def test_unknown_and_duplicate_input_types_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown input type.*constant.*registered types are"):
        load_edge_config(_config(tmp_path, CONSTANT))
    with pytest.raises(ValueError, match="already registered"):
        registry.register("modbus", ConstantInputConfig, ConstantInput)
    for bad in ("Modbus", "all", "model_x", "9lives", ""):
        with pytest.raises(ValueError, match="input kind"):
            registry.register(bad, ConstantInputConfig, ConstantInput)
    assert list(registry.input_types()) == ["modbus", "opcua", "mqtt", "sparkplug"]


def test_only_the_registry_names_input_types() -> None:
    """The daemon, the config loader, the CLI, probe and scan import no input type's
    module: what they know of inputs comes through edge.inputs.base and the registry."""
    kinds = tuple(f"edge.inputs.{kind}" for kind in registry.input_types())
    for module in ("daemon.py", "config.py", "cli.py", "probe.py", "scan.py"):
        tree = ast.parse((EDGE / module).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                assert not name.startswith(kinds), f"edge/{module} imports {name}"
