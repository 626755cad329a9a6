"""What a Prometheus scrape of the edge gets: counters typed as counters (the persisted
drop totals too), process and Python metrics, and build info."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edge.metrics import EdgeMetrics
from shared.version import version


def _families(metrics: EdgeMetrics) -> dict[str, object]:
    text = generate_latest(metrics.registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_persisted_totals_are_counters() -> None:
    metrics = EdgeMetrics()
    metrics.buffer_dropped.set(7)
    metrics.buffer_rejected_dropped.set(2)
    families = _families(metrics)
    dropped = families["rig_edge_buffer_dropped"]
    assert dropped.type == "counter"  # type: ignore[attr-defined]
    assert [s.value for s in dropped.samples] == [7.0]  # type: ignore[attr-defined]
    assert families["rig_edge_buffer_rejected_dropped"].type == "counter"  # type: ignore[attr-defined]
    text = generate_latest(metrics.registry).decode()
    assert "# TYPE rig_edge_buffer_dropped_total counter" in text
    assert "rig_edge_buffer_dropped_total 7.0" in text


def test_every_total_is_a_counter() -> None:
    text = generate_latest(EdgeMetrics().registry).decode()
    for line in text.splitlines():
        if line.startswith("# TYPE ") and line.split()[2].endswith("_total"):
            assert line.split()[3] == "counter", line


def test_process_metrics_and_build_info() -> None:
    metrics = EdgeMetrics()
    families = _families(metrics)
    assert "process_resident_memory_bytes" in families
    assert "process_cpu_seconds" in families
    assert "python_info" in families
    info = families["rig_edge_build_info"]
    (sample,) = info.samples  # type: ignore[attr-defined]
    assert sample.labels["version"] == version() and sample.value == 1
