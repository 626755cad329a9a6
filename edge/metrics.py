"""Prometheus metrics of the edge daemon, on a registry of its own so tests can run several
daemons' worth of metrics in one process.

Besides the pipeline's own metrics the registry carries the process (``process_*``: RSS,
CPU, open files), Python (``python_*``) and ``rig_edge_build_info{version,python}``
collectors, so a rig's memory and CPU are on the same scrape. Totals the buffer keeps across
restarts (readings dropped by the disk cap, rejected readings evicted) are counters whose
value is set from the buffer's figure: Prometheus' rate() handles them like any counter.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from shared.version import version


class PersistedTotal(Collector):
    """A counter whose running total lives elsewhere (the buffer file) and is copied in with
    ``set``; exposed as TYPE counter, ``<name>_total``."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name = name.removesuffix("_total")
        self.documentation = documentation
        self._value = 0.0
        registry.register(self)

    def set(self, value: float) -> None:
        self._value = float(value)

    def get(self) -> float:
        return self._value

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation)
        family.add_metric([], self._value)
        yield family


class EdgeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        if registry is None:  # a registry given by the caller may carry these already
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        self.build_info = Gauge(
            "rig_edge_build_info",
            "Always 1; the labels say which version and Python run",
            ["version", "python"],
            registry=r,
        )
        self.build_info.labels(version(), platform.python_version()).set(1)
        self.readings_in = Counter(
            "rig_edge_readings_in", "Readings acquired, per source", ["source"], registry=r
        )
        self.readings_buffered = Counter(
            "rig_edge_readings_buffered", "Readings committed to the buffer", registry=r
        )
        self.readings_out = Counter(
            "rig_edge_readings_forwarded",
            "Readings confirmed by the destination",
            ["output"],
            registry=r,
        )
        self.forward_errors = Counter(
            "rig_edge_forward_errors", "Failed forwarding attempts", ["output"], registry=r
        )
        self.forward_latency = Histogram(
            "rig_edge_forward_batch_seconds",
            "Time to get a batch confirmed",
            ["output"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.buffer_depth = Gauge("rig_edge_buffer_depth", "Readings in the buffer", registry=r)
        self.buffer_bytes = Gauge(
            "rig_edge_buffer_bytes", "Payload bytes in the buffer", registry=r
        )
        self.buffer_dropped = PersistedTotal(
            "rig_edge_buffer_dropped_total",
            "Readings dropped (oldest first) by the disk cap",
            r,
        )
        self.source_up = Gauge(
            "rig_edge_source_up",
            "1 when the device answered its last poll",
            ["source", "machine"],
            registry=r,
        )
        self.source_errors = Counter(
            "rig_edge_source_errors",
            "Failed reads (timeouts, exceptions)",
            ["source", "machine"],
            registry=r,
        )
        self.source_reconnects = Counter(
            "rig_edge_source_connects", "Connections (re)established", ["source"], registry=r
        )
        self.poll_seconds = Histogram(
            "rig_edge_poll_seconds",
            "Time to poll one device",
            ["source"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r,
        )
        self.output_up = Gauge(
            "rig_edge_output_up", "1 when the destination accepts data", ["output"], registry=r
        )
        self.anomalies = Counter(
            "rig_edge_local_alarms", "Readings flagged by local detection", ["machine"], registry=r
        )
        self.model_updates = Counter(
            "rig_edge_model_updates",
            "Model bundle checks by outcome (installed, refused, failed)",
            ["machine", "result"],
            registry=r,
        )
        # Info-style (``rig_edge_model_info{machine,version} 1``): a version is a label, not a
        # number to graph; a swap replaces the machine's series (Info keeps one per machine).
        self.model_info = Info(
            "rig_edge_model",
            "Always 1; the version label names the model bundle in use per machine "
            "(machine:rul for a remaining-life model)",
            ["machine"],
            registry=r,
        )
        # -- the writer (sources -> buffer) ----------------------------------------------
        self.writer_queue = Gauge(
            "rig_edge_writer_queue",
            "Readings acquired and waiting to be committed to the buffer",
            registry=r,
        )
        self.writer_dropped = Counter(
            "rig_edge_writer_dropped",
            "Readings of polled sources dropped because the writer queue was full "
            "(buffer.max_pending_readings reached while commits were failing)",
            ["source"],
            registry=r,
        )
        self.mqtt_refused = Counter(
            "rig_edge_mqtt_refused",
            "MQTT messages left unacknowledged because the writer queue was full; the broker "
            "delivers them again",
            ["source"],
            registry=r,
        )
        self.mqtt_redelivered = Counter(
            "rig_edge_mqtt_redelivered",
            "MQTT messages redelivered by the broker (DUP) that were already committed: "
            "acknowledged and not stored again",
            ["source"],
            registry=r,
        )
        self.set_aside = Counter(
            "rig_edge_readings_set_aside",
            "Readings moved to the rejected table by the writer (stage: validation = the "
            "cloud's rules refuse it; detection = even threshold scoring failed)",
            ["stage"],
            registry=r,
        )
        self.commit_failures = Counter(
            "rig_edge_commit_failures",
            "Buffer commits that failed (disk full, I/O error); the batch is kept and retried",
            registry=r,
        )
        self.commit_consecutive_failures = Gauge(
            "rig_edge_commit_consecutive_failures",
            "Buffer commits failed in a row (0 when the last one succeeded)",
            registry=r,
        )
        self.last_commit = Gauge(
            "rig_edge_last_commit_timestamp_seconds",
            "Unix time of the last successful buffer commit",
            registry=r,
        )
        self.model_errors = Counter(
            "rig_edge_model_errors",
            "Batches scored with thresholds only because the machine's model raised",
            ["machine"],
            registry=r,
        )
        # -- the forwarder and the daemon's own threads ------------------------------------
        self.forwarder_last_round = Gauge(
            "rig_edge_forwarder_last_round_timestamp_seconds",
            "Unix time the forwarding loop last completed a round",
            registry=r,
        )
        self.forwarder_errors = Counter(
            "rig_edge_forwarder_errors",
            "Forwarding rounds that failed inside the edge (buffer read/delete errors), not at "
            "the destination",
            registry=r,
        )
        self.component_restarts = Counter(
            "rig_edge_component_restarts",
            "Writer task or forwarder thread restarted by the daemon after it died",
            ["component"],
            registry=r,
        )
        self.healthy = Gauge(
            "rig_edge_health_status",
            "2 ok, 1 degraded, 0 unhealthy (as /healthz reports)",
            registry=r,
        )
        # -- what the devices say ----------------------------------------------------------
        self.clock_replaced = Counter(
            "rig_edge_device_clock_replaced",
            "Device timestamps outside the acceptance window, replaced by the edge's receive time",
            ["source"],
            registry=r,
        )
        self.values_refused = Counter(
            "rig_edge_values_refused",
            "Values that were not finite or beyond the magnitude limit; the sensor is sent as "
            "null with quality bad",
            ["source"],
            registry=r,
        )
        self.source_last_reading = Gauge(
            "rig_edge_source_last_reading_timestamp_seconds",
            "Unix time of the last reading a source produced",
            ["source"],
            registry=r,
        )
        # -- the buffer file ---------------------------------------------------------------
        self.buffer_rejected = Gauge(
            "rig_edge_buffer_rejected",
            "Readings kept in the rejected table (refused for good, kept for inspection)",
            registry=r,
        )
        self.buffer_rejected_dropped = PersistedTotal(
            "rig_edge_buffer_rejected_dropped_total",
            "Rejected readings deleted by the rejected table's cap",
            r,
        )
        self.buffer_disk_bytes = Gauge(
            "rig_edge_buffer_disk_bytes",
            "Bytes the buffer uses on disk (database, WAL)",
            registry=r,
        )
        self.buffer_free_bytes = Gauge(
            "rig_edge_buffer_free_bytes",
            "Free bytes on the buffer's file system",
            registry=r,
        )
        self.buffer_recovered = Gauge(
            "rig_edge_buffer_recovered",
            "1 when the buffer file was found corrupt at start and moved aside (alarm)",
            registry=r,
        )
