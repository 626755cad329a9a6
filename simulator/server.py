"""Running a simulation: the tick loop and every protocol server it feeds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.logs import log_event
from simulator.config import SimConfig
from simulator.engine import Engine, SampleSink
from simulator.faults import ground_truth
from simulator.protocols.modbus import ModbusImage, SimulatorError, start_rtu, start_tcp
from simulator.record import SampleRecorder

__all__ = ["SimulatorError", "SimulatorRun", "run_simulator"]

log = logging.getLogger(__name__)


@dataclass
class SimulatorRun:
    """What a finished (or running) simulation did."""

    engine: Engine
    ticks: int = 0
    skipped_ticks: int = 0
    elapsed_s: float = 0.0
    endpoints: dict[str, str] = field(default_factory=dict)

    @property
    def achieved_rate_hz(self) -> float:
        return self.ticks / self.elapsed_s if self.elapsed_s > 0 else 0.0


async def run_simulator(
    config: SimConfig,
    stop: asyncio.Event,
    *,
    started: asyncio.Event | None = None,
    run: SimulatorRun | None = None,
) -> SimulatorRun:
    engine = Engine(config)
    run = run or SimulatorRun(engine)
    run.engine = engine
    sinks: list[SampleSink] = []
    closers: list[Any] = []
    try:
        image = ModbusImage([m.unit_id for m in engine.machines])
        sinks.append(image)
        if config.modbus.enabled:
            server, task = await start_tcp(image, config.modbus.host, config.modbus.port)
            closers.append((server, task))
            run.endpoints["modbus"] = f"{config.modbus.host}:{config.modbus.port}"
        if config.modbus_rtu.enabled:
            rtu, rtu_task, pair = await start_rtu(
                image, config.modbus_rtu.link, config.modbus_rtu.baudrate
            )
            closers.append((rtu, rtu_task))
            closers.append(pair)
            run.endpoints["modbus_rtu"] = str(config.modbus_rtu.link)
        if config.opcua.enabled:
            from simulator.protocols.opcua import OpcUaPublisher

            opcua = OpcUaPublisher(config.opcua, config.machines)
            await opcua.start()
            sinks.append(opcua)
            closers.append(opcua)
            run.endpoints["opcua"] = opcua.endpoint
        if config.mqtt.enabled:
            from simulator.protocols.mqtt import MqttPublisher

            mqtt = MqttPublisher(config.mqtt)
            await asyncio.to_thread(mqtt.start)
            sinks.append(mqtt)
            closers.append(mqtt)
            run.endpoints["mqtt"] = f"{config.mqtt.host}:{config.mqtt.port}"
        if config.record_path is not None:
            recorder = SampleRecorder(config.record_path)
            sinks.append(recorder)
            closers.append(recorder)
        log_event(
            log,
            logging.INFO,
            "simulator serving",
            machines=len(config.machines),
            rate_hz=config.rate_hz,
            faults=len(config.faults),
            replays=len(config.replay),
            **run.endpoints,
        )
        # Simulation time 0 is the first tick, which comes only now that every server is up
        # (an OPC-UA server takes seconds to start): the fault windows of the ground truth
        # are counted from here, not from when the engine was built.
        engine.started_at = datetime.now(UTC)
        if config.ground_truth_path is not None:
            config.ground_truth_path.parent.mkdir(parents=True, exist_ok=True)
            config.ground_truth_path.write_text(
                "".join(
                    json.dumps(doc) + "\n" for doc in ground_truth(config.faults, engine.started_at)
                )
            )
        if started is not None:
            started.set()
        await _tick_loop(config, engine, sinks, stop, run)
    finally:
        for closer in reversed(closers):
            await _close(closer)
        log_event(
            log,
            logging.INFO,
            "simulator stopped",
            ticks=run.ticks,
            skipped_ticks=run.skipped_ticks,
            rate_hz=round(run.achieved_rate_hz, 2),
        )
    return run


async def _close(closer: Any) -> None:
    if isinstance(closer, tuple):
        server, task = closer
        with contextlib.suppress(Exception):
            await server.shutdown()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return
    result = closer.stop() if hasattr(closer, "stop") else closer.close()
    if asyncio.iscoroutine(result):
        await result


async def _tick_loop(
    config: SimConfig,
    engine: Engine,
    sinks: list[SampleSink],
    stop: asyncio.Event,
    run: SimulatorRun,
) -> None:
    period = 1.0 / config.rate_hz
    start = time.monotonic()
    next_tick = start
    while not stop.is_set():
        # Simulation time advances by exactly one period per tick, so a seeded run produces
        # the same signals however the host's scheduling jitters.
        samples = engine.tick(run.ticks * period, time.time_ns() // 1_000_000)
        for sink in sinks:
            sink.publish(samples)
        run.ticks += 1
        # Absolute deadlines on a fixed grid (start + k * period) keep the long-run rate
        # exact. A tick that runs late but within its period keeps the grid. When the loop
        # has fallen a whole period or more behind (a GC pause, an overloaded host), the
        # missed deadlines are skipped and counted instead of ticking back to back, so
        # clients never see a burst of samples with near-identical timestamps.
        next_tick += period
        now = time.monotonic()
        if now - next_tick >= period:
            missed = int((now - next_tick) / period)
            run.skipped_ticks += missed
            next_tick += missed * period
            log_event(
                log,
                logging.DEBUG,
                "simulator fell behind",
                skipped=missed,
                skipped_total=run.skipped_ticks,
            )
        run.elapsed_s = now - start
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, next_tick - now))
    run.elapsed_s = time.monotonic() - start
