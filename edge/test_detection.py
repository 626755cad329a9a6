from datetime import UTC, datetime

from edge.detection import CombinedDetector, ThresholdDetector
from shared.catalog import CORE_SENSORS, Thresholds, ThresholdState
from shared.message import Reading


def _reading(machine: str = "A", **values: float) -> Reading:
    base = {s.name: s.typical for s in CORE_SENSORS}
    base.update(values)
    return Reading(machine, "e", 1, datetime.now(UTC), base)


def test_typical_reading_is_normal() -> None:
    result = ThresholdDetector().score(_reading())
    assert result == {
        "method": "thresholds",
        "is_anomaly": False,
        "score": 0.0,
        "sensors": [],
        "warnings": [],
        "thresholds_version": "catalog",
    }


def test_critical_and_warning_agree_with_the_catalog_rule() -> None:
    detector = ThresholdDetector()
    result = detector.score(_reading(vibration=9.0, coolant_temp=205.0))
    assert result["is_anomaly"] is True and result["sensors"] == ["vibration"]
    assert result["warnings"] == ["coolant_temp"]
    assert result["score"] == round((9.0 - 7.0) / 7.0, 6)
    for spec in CORE_SENSORS:
        for value in (spec.low - 1, spec.typical, spec.high + 1):
            state = spec.thresholds().classify(value)
            flagged = spec.name in detector.score(_reading(**{spec.name: value}))["sensors"]
            assert flagged == (state is ThresholdState.CRITICAL), spec.name


def test_per_machine_overrides() -> None:
    detector = ThresholdDetector({"B": {"rpm": Thresholds(low=100.0, high=3000.0)}})
    assert detector.score(_reading("A", rpm=3500.0))["is_anomaly"] is False
    assert detector.score(_reading("B", rpm=3500.0))["sensors"] == ["rpm"]


class _Model:
    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def score_batch(self, readings: list[Reading]) -> list[dict[str, object]]:
        if self.fail:
            raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT")
        return [{"method": "hybrid", "is_anomaly": False, "score": 0.1} for _ in readings]


def test_a_failing_model_leaves_the_threshold_verdict_and_is_reported() -> None:
    detector = CombinedDetector()
    calls: list[tuple[str, bool]] = []
    detector.on_model_error = lambda machine, exc, first: calls.append((machine, first))
    detector.install("A", _Model(fail=True), "v1")
    readings = [_reading(), _reading()]
    for _ in range(2):
        results = detector.score_batch(readings)
        assert [r["method"] for r in results] == ["thresholds", "thresholds"]
    assert calls == [("A", True), ("A", False)]  # logged once per burst
    assert "INVALID_ARGUMENT" in detector.failing["A"]
    assert detector.model_errors_total == 2
    detector.install("A", _Model(fail=False), "v2")
    assert [r["method"] for r in detector.score_batch(readings)] == ["hybrid", "hybrid"]
    assert detector.failing == {}


def test_a_reading_thresholds_cannot_score_is_returned_as_its_error() -> None:
    bad = _reading()
    bad.values["rpm"] = "fast"  # type: ignore[assignment]  # deliberately not a number
    results = CombinedDetector().score_batch_checked([_reading(), bad])
    first = results[0]
    assert isinstance(first, dict) and first["method"] == "thresholds"
    assert isinstance(results[1], TypeError)
