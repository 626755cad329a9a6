from datetime import UTC, datetime

from edge.detection import ThresholdDetector
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
