"""The edge daemon: sources -> detection -> buffer (commit) -> forwarder.

Nothing leaves the edge before it is committed to the buffer. Readings produced in the same
moment are group-committed in one transaction, so fsync cost is per batch, not per reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edge.buffer import StoreAndForwardBuffer
from edge.config import EdgeConfig, load_edge_config
from edge.detection import CombinedDetector, Detector
from edge.forwarding import Forwarder
from edge.health import HealthServer
from edge.inputs.modbus.connector import ModbusConnector
from edge.metrics import EdgeMetrics
from edge.outputs.base import Output
from edge.systemd import notify, watchdog_interval_s
from shared.configfile import ConfigError
from shared.logs import log_event
from shared.message import Reading

if TYPE_CHECKING:
    from edge.model_sync import ModelSync

log = logging.getLogger(__name__)


class Connector(Protocol):
    source: Any

    def health(self) -> dict[str, bool]: ...

    async def run(self, stop: asyncio.Event) -> None: ...


def build_connectors(
    config: EdgeConfig, emit: Callable[..., None], metrics: EdgeMetrics
) -> list[Connector]:
    connectors: list[Connector] = [
        ModbusConnector(source, config.edge_id, emit, metrics) for source in config.sources.modbus
    ]
    if config.sources.opcua:
        from edge.inputs.opcua.connector import OpcUaConnector

        connectors += [
            OpcUaConnector(s, config.edge_id, emit, metrics) for s in config.sources.opcua
        ]
    if config.sources.mqtt:
        from edge.inputs.mqtt.connector import MqttConnector

        connectors += [MqttConnector(s, config.edge_id, emit, metrics) for s in config.sources.mqtt]
    return connectors


def build_output(config: EdgeConfig) -> tuple[Output, int]:
    if config.output.kind == "kafka":
        from edge.outputs.kafka.output import KafkaOutput

        return KafkaOutput(config.output), config.output.batch_readings
    from edge.outputs.http.output import HttpOutput

    return HttpOutput(config.output), config.output.batch_readings


class EdgeDaemon:
    def __init__(self, config: EdgeConfig, detector: Detector | None = None) -> None:
        self.config = config
        self.metrics = EdgeMetrics()
        self.detector = detector or CombinedDetector()
        self.buffer = StoreAndForwardBuffer(
            config.buffer.path,
            max_bytes=config.buffer.max_bytes,
            synchronous=config.buffer.synchronous,
        )
        output, batch = build_output(config)
        self.forwarder = Forwarder(self.buffer, output, batch, config.forwarding, self.metrics)
        self._output = output
        self._pending: list[Reading] = []
        self._pending_acks: list[Callable[[], None]] = []
        self._pending_event = asyncio.Event()
        self.connectors = build_connectors(config, self._accept, self.metrics)
        self.started_at = time.time()
        self._health_server: HealthServer | None = None
        self.model_sync: ModelSync | None = None
        if config.models is not None and isinstance(self.detector, CombinedDetector):
            # Imported here: onnxruntime loads only on edges that run ML models.
            from edge.model_sync import ModelSync

            machines = [machine for machine, _ in config.sources.machines()]
            self.model_sync = ModelSync(config.models, machines, self.detector, self.metrics)

    def _accept(self, reading: Reading, on_commit: Callable[[], None] | None = None) -> None:
        """Sources hand readings over here; ``on_commit`` runs once the reading is durable
        (an MQTT source acknowledges the message to its broker then)."""
        self._pending.append(reading)
        if on_commit is not None:
            self._pending_acks.append(on_commit)
        self._pending_event.set()

    def health(self) -> dict[str, Any]:
        stats = self.buffer.stats()
        sources = {c.source.name: c.health() for c in self.connectors}
        return {
            "status": "ok",
            "edge_id": self.config.edge_id,
            "uptime_s": round(time.time() - self.started_at, 1),
            "output": {
                "kind": self.config.output.kind,
                "healthy": self.forwarder.healthy,
                "last_error": self.forwarder.last_error,
            },
            "buffer": {
                "depth": stats.depth,
                "bytes": stats.bytes,
                "dropped_total": stats.dropped_total,
                "next_seq": stats.next_seq,
            },
            "sources": sources,
            "models": self.detector.versions()
            if isinstance(self.detector, CombinedDetector)
            else {},
        }

    async def _writer(self, stop: asyncio.Event) -> None:
        while True:
            if not self._pending:
                if stop.is_set():
                    return
                self._pending_event.clear()
                waiter = asyncio.create_task(self._pending_event.wait())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                continue
            batch, self._pending = self._pending, []
            acks, self._pending_acks = self._pending_acks, []
            if isinstance(self.detector, CombinedDetector):
                # One model call per machine per batch: the per-reading ML cost stays small.
                results = self.detector.score_batch(batch)
            else:
                results = [self.detector.score(reading) for reading in batch]
            for reading, detection in zip(batch, results, strict=True):
                reading.detection = detection
                if detection.get("is_anomaly"):
                    self.metrics.anomalies.labels(reading.machine_id).inc()
            # The commit (with fsync) runs off the event loop so polling keeps its schedule.
            await asyncio.to_thread(self.buffer.append_many, batch)
            self.metrics.readings_buffered.inc(len(batch))
            for ack in acks:
                ack()

    async def _watchdog(self, stop: asyncio.Event) -> None:
        interval = watchdog_interval_s()
        if interval is None:
            return
        while not stop.is_set():
            notify("WATCHDOG=1")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    def _start_connectors(self) -> tuple[asyncio.Event, list[asyncio.Task[None]]]:
        connector_stop = asyncio.Event()
        tasks = [asyncio.create_task(c.run(connector_stop)) for c in self.connectors]
        return connector_stop, tasks

    async def _apply_reload(
        self, new: EdgeConfig, connector_stop: asyncio.Event, tasks: list[asyncio.Task[None]]
    ) -> bool:
        """Swap sources (and the output if it changed) without touching the buffer."""
        fixed = {"edge_id": "edge_id", "buffer": "buffer", "metrics": "metrics"}
        changed = [
            name for name, attr in fixed.items() if getattr(new, attr) != getattr(self.config, attr)
        ]
        if changed:
            log_event(
                log,
                logging.ERROR,
                "reload refused: these settings need a restart",
                settings=changed,
            )
            return False
        connector_stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        if new.output != self.config.output or new.forwarding != self.config.forwarding:
            await asyncio.to_thread(self.forwarder.stop, 0.0)
            self._output.close()
            output, batch = build_output(new)
            self.forwarder = Forwarder(self.buffer, output, batch, new.forwarding, self.metrics)
            self._output = output
            self.forwarder.start()
        self.config = new
        self.connectors = build_connectors(new, self._accept, self.metrics)
        return True

    async def run(
        self,
        stop: asyncio.Event,
        reload: asyncio.Event | None = None,
        load_config: Callable[[], EdgeConfig] | None = None,
    ) -> None:
        """Run until ``stop``. Each time ``reload`` is set (SIGHUP), ``load_config`` is
        called: a valid config replaces the sources and output in place, keeping the buffer
        and everything in it; an invalid one is logged and the running config stays."""
        if self.config.metrics.port:
            self._health_server = HealthServer(
                self.config.metrics.host,
                self.config.metrics.port,
                self.metrics.registry,
                self.health,
            )
            self._health_server.start()
        stats = self.buffer.stats()
        log_event(
            log,
            logging.INFO,
            "edge starting",
            edge_id=self.config.edge_id,
            buffered=stats.depth,
            next_seq=stats.next_seq,
            output=self.config.output.kind,
        )
        if self.model_sync is not None:
            await asyncio.to_thread(self.model_sync.load_installed)
            self.model_sync.start()
        self.forwarder.start()
        writer_stop = asyncio.Event()
        writer = asyncio.create_task(self._writer(writer_stop))
        connector_stop, tasks = self._start_connectors()
        watchdog = asyncio.create_task(self._watchdog(stop))
        reload = reload or asyncio.Event()
        notify("READY=1")
        try:
            while True:
                stopper = asyncio.create_task(stop.wait())
                reloader = asyncio.create_task(reload.wait())
                await asyncio.wait({stopper, reloader}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                reloader.cancel()
                if stop.is_set():
                    break
                reload.clear()
                if load_config is None:
                    continue
                notify("RELOADING=1")
                try:
                    new = load_config()
                except ConfigError as exc:
                    log_event(
                        log,
                        logging.ERROR,
                        "reload refused; the running config stays",
                        error=str(exc),
                    )
                    notify("READY=1")
                    continue
                if await self._apply_reload(new, connector_stop, tasks):
                    connector_stop, tasks = self._start_connectors()
                    log_event(
                        log,
                        logging.INFO,
                        "config reloaded",
                        sources=len(new.sources.all()),
                        output=new.output.kind,
                    )
                notify("READY=1")
        finally:
            notify("STOPPING=1")
            log_event(log, logging.INFO, "edge stopping")
            connector_stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            writer_stop.set()
            await writer  # commits whatever the sources produced up to now
            watchdog.cancel()
            if self.model_sync is not None:
                await asyncio.to_thread(self.model_sync.stop)
            await asyncio.to_thread(self.forwarder.stop, self.config.forwarding.shutdown_flush_s)
            self._output.close()
            if self._health_server is not None:
                self._health_server.stop()
            stats = self.buffer.stats()
            self.buffer.close()
            log_event(log, logging.INFO, "edge stopped", left_buffered=stats.depth)


def run_daemon(config: EdgeConfig, config_path: Path | None = None) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        reload = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload.set)
        daemon = EdgeDaemon(config)
        loader = (lambda: load_edge_config(config_path)) if config_path is not None else None
        await daemon.run(stop, reload, loader)

    asyncio.run(main())
