"""The edge computes remaining useful life beside the detector: the estimate rides in the
detection of the reading that closed a step, in a shape the cloud accepts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from detector.rul import RulBundle, RulTracker
from edge.detection import CombinedDetector
from shared.message import Reading, check_reading
from tests.support.rul_bundle import write_test_rul_bundle

pytest.importorskip("onnx")

HEALTHY = {
    "vibration": 2.2,
    "bearing_temp": 147.0,
    "coupling_temp": 130.0,
    "noise_level": 72.0,
    "rpm": 3250.0,
    "motor_current": 27.5,
}


def test_the_edge_sends_the_estimate_in_a_detection_the_cloud_accepts(tmp_path: Path) -> None:
    combined = CombinedDetector()
    combined.install_rul("A", RulTracker(RulBundle(_dir(tmp_path))))
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    readings = [
        Reading("A", "e", i, t0 + timedelta(seconds=30 * i), {**HEALTHY, "vibration": 4.0})
        for i in range(5)
    ] + [Reading("B", "e", 9, t0, dict(HEALTHY))]
    results = combined.score_batch(readings)
    with_rul = [r for r in results if "rul" in r]
    assert len(with_rul) == 2  # minutes 1 and 2 of A closed; B has no RUL model
    for reading, result in zip(readings, results, strict=True):
        reading.detection = result
        check_reading(reading)  # what the cloud would accept
    assert combined.rul_versions() == {"A": "rul-test-1"}


def _dir(tmp_path: Path) -> Path:
    write_test_rul_bundle(tmp_path / "b")
    return tmp_path / "b"


class _Broken:
    version = "broken"

    def observe(self, items: object) -> dict[int, dict[str, object]]:
        raise RuntimeError("onnxruntime exploded")


def test_a_failing_rul_model_costs_its_estimates_only() -> None:
    combined = CombinedDetector()
    combined.install_rul("A", _Broken())
    reading = Reading("A", "e", 1, datetime.now(UTC), dict(HEALTHY))
    result = combined.score_batch([reading])[0]
    assert "rul" not in result and result["method"] == "thresholds"
    assert "onnxruntime exploded" in combined.rul_failing["A"]
