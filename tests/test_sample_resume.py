"""A polled device keeps showing its newest sample until it makes the next one. A rig-edge
killed and started again must not record the sample still on show a second time: it would
get a new seq, so the cloud's (edge_id, seq) key could not recognise the repeat.

Real servers (pymodbus, asyncua) whose sample counter the test moves by hand, a real
``rig-edge`` process killed with SIGKILL, and the buffer file read after each step.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import Server, ua

from shared.catalog import CORE_SENSOR_NAMES
from simulator.edge_config import simulator_edge_config
from simulator.engine import Sample
from simulator.protocols.modbus import ModbusImage, start_tcp
from tests.support.pipeline import buffered_documents, kafka_output, start_edge, wait_health
from tests.support.processes import free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


class _LoopThread:
    """An asyncio loop in a thread, for a server the test drives from outside."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@contextmanager
def _modbus_device(port: int) -> Iterator[Callable[[int, float], None]]:
    """The simulator's register image of machine A (unit 1) on a real Modbus TCP server;
    yields ``show(counter, temperature)``, which puts up one sample."""
    image = ModbusImage([1])
    runner = _LoopThread()
    server, _ = runner.run(start_tcp(image, "127.0.0.1", port))

    def show(counter: int, temperature: float) -> None:
        values = [1.0] * len(CORE_SENSOR_NAMES)
        values[CORE_SENSOR_NAMES.index("temperature")] = temperature
        now_ms = int(time.time() * 1000)
        image.publish([Sample("A", 1, counter, now_ms, 0, values, [], None)])

    try:
        yield show
    finally:
        runner.run(server.shutdown())
        runner.close()


@contextmanager
def _opcua_device(port: int) -> Iterator[Callable[[int, float], None]]:
    """An OPC-UA server with ``Rig/A/SampleCounter`` and ``Rig/A/temperature``; yields
    ``show(counter, temperature)`` (temperature first, then the counter, as a device that
    publishes a complete sample does)."""
    runner = _LoopThread()
    server = Server()
    nodes: dict[str, Any] = {}

    async def start() -> None:
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/resume/")
        idx = await server.register_namespace("urn:rig-alpha:test-resume")
        machine = await server.nodes.objects.add_object(
            ua.NodeId("Rig/A", idx), ua.QualifiedName("A", idx)
        )
        nodes["counter"] = await machine.add_variable(
            ua.NodeId("Rig/A/SampleCounter", idx),
            "SampleCounter",
            ua.Variant(0, ua.VariantType.UInt32),
        )
        nodes["temperature"] = await machine.add_variable(
            ua.NodeId("Rig/A/temperature", idx), "temperature", 0.0
        )
        await server.start()

    async def write(counter: int, temperature: float) -> None:
        await nodes["temperature"].write_value(temperature)
        await nodes["counter"].write_value(ua.Variant(counter, ua.VariantType.UInt32))

    runner.run(start())
    try:
        yield lambda counter, temperature: runner.run(write(counter, temperature))
    finally:
        runner.run(server.stop())
        runner.close()


def _config(tmp: Path, inputs: dict[str, Any]) -> Path:
    doc = {
        "edge_id": "edge-resume",
        "log_level": "INFO",
        "buffer": {"path": str(tmp / "buffer.db")},
        "metrics": {"host": "127.0.0.1", "port": free_port()},
        "inputs": inputs,
        # Nothing listens there: every reading stays in the buffer, where the test reads it.
        "output": kafka_output(f"127.0.0.1:{free_port()}", "resume"),
        "forwarding": {"retry_initial_s": 0.2, "retry_max_s": 2.0, "shutdown_flush_s": 1},
    }
    path = tmp / "edge.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _buffered_temperatures(tmp: Path) -> list[float]:
    return [doc["values"]["temperature"] for doc in buffered_documents(tmp / "buffer.db")]


def _device_answers(doc: dict[str, Any]) -> bool:
    return doc["inputs"]["dev"]["devices"]["A"] is True


def _kill_restart_and_check(
    tmp: Path, log_dir: Path, cfg: Path, show: Callable[[int, float], None]
) -> None:
    show(1, 20.5)
    edge = start_edge(cfg, log_dir)
    try:
        wait_until(
            lambda: _buffered_temperatures(tmp) == [20.5], 60, "sample 1 buffered", services=[edge]
        )
        edge.kill()
        # The new run answers /healthz and has read the device (it shows sample 1 still)
        # before the device moves on.
        edge = start_edge(cfg, log_dir)
        wait_health(cfg, _device_answers, "the device read again", services=[edge])
        show(2, 21.5)
        wait_until(
            lambda: 21.5 in _buffered_temperatures(tmp), 60, "sample 2 buffered", services=[edge]
        )
        assert _buffered_temperatures(tmp) == [20.5, 21.5]
    finally:
        edge.stop()


def test_modbus_sample_on_show_is_not_recorded_again_after_a_kill(
    tmp_path: Path, log_dir: Path
) -> None:
    port = free_port()
    inputs = simulator_edge_config(
        sim_host="127.0.0.1",
        sim_port=port,
        machines=["A"],
        output={},
        buffer_path=tmp_path / "unused.db",
        poll_interval_s=0.05,
    )["inputs"]
    inputs["modbus"][0]["name"] = "dev"
    cfg = _config(tmp_path, inputs)
    with _modbus_device(port) as show:
        _kill_restart_and_check(tmp_path, log_dir, cfg, show)


def test_opcua_sample_on_show_is_not_recorded_again_after_a_kill(
    tmp_path: Path, log_dir: Path
) -> None:
    port = free_port()
    ns = "nsu=urn:rig-alpha:test-resume"
    cfg = _config(
        tmp_path,
        {
            "opcua": [
                {
                    "name": "dev",
                    "endpoint": f"opc.tcp://127.0.0.1:{port}/resume/",
                    "sampling_interval_ms": 50,
                    "publishing_interval_ms": 100,
                    "machines": [
                        {
                            "machine_id": "A",
                            "sample_counter": f"{ns};s=Rig/A/SampleCounter",
                            "nodes": {"temperature": f"{ns};s=Rig/A/temperature"},
                        }
                    ],
                }
            ]
        },
    )
    with _opcua_device(port) as show:
        _kill_restart_and_check(tmp_path, log_dir, cfg, show)
