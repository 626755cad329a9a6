"""Prometheus metrics of the edge daemon, on a registry of its own so tests can run several
daemons' worth of metrics in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class EdgeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
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
        self.buffer_dropped = Gauge(
            "rig_edge_buffer_dropped_total",
            "Readings dropped (oldest first) by the disk cap",
            registry=r,
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
        self.model_version = Gauge(
            "rig_edge_model_version", "Registry id of the model in use", ["machine"], registry=r
        )
