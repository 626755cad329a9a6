"""The RUL runtime the edge runs: bundle checks shared with the detectors, one row per step,
a prediction per closed step, the sensors driving the countdown."""

from __future__ import annotations

from pathlib import Path

import pytest

from detector.rul import RulBundle, RulTracker
from shared.model_bundle import BundleError, TamperedBundleError, generate_keypair, pack_bundle
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


def _bundle(tmp_path: Path, **kwargs: object) -> RulBundle:
    private, public = generate_keypair()
    write_test_rul_bundle(tmp_path / "b", private_key=private, **kwargs)  # type: ignore[arg-type]
    archive = pack_bundle(tmp_path / "b", tmp_path / "b.tar.gz")
    return RulBundle(archive, public)


def test_a_signed_tar_loads_and_a_tampered_one_is_refused(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    assert bundle.unit == "hours" and bundle.sensors[0] == "vibration"
    (tmp_path / "b" / "rul.onnx").write_bytes(b"not a model")
    with pytest.raises(TamperedBundleError):
        RulBundle(tmp_path / "b")


def test_a_detector_bundle_is_not_a_rul_bundle(tmp_path: Path) -> None:
    write_test_rul_bundle(tmp_path / "b")
    manifest = (tmp_path / "b" / "manifest.json").read_text()
    (tmp_path / "b" / "manifest.json").write_text(
        manifest.replace("rig-alpha-rul-bundle", "rig-alpha-model-bundle")
    )
    with pytest.raises(BundleError):
        RulBundle(tmp_path / "b")  # the hash list still matches; the format does not


def test_the_tracker_predicts_once_per_step_and_the_countdown_falls(tmp_path: Path) -> None:
    tracker = RulTracker(_bundle(tmp_path))
    found: list[float] = []
    for minute in range(12):
        vibration = 2.2 + 0.5 * max(0, minute - 4)  # wear from minute 5 on
        items = [
            ("A", minute * 60.0 + s, {**HEALTHY, "vibration": vibration}) for s in range(0, 60, 10)
        ]
        out = tracker.observe(items)
        if minute == 0:
            assert out == {}  # the first step has not closed yet
            continue
        assert list(out) == [0]  # the first reading of the new minute closes the step
        found.append(out[0]["rul_hours"])
        doc = out[0]
        assert doc["low_hours"] <= doc["rul_hours"] <= doc["high_hours"]
    assert found[0] == 240.0
    assert found[-1] < found[5] < found[0]
    assert doc["critical_sensors"][0]["sensor"] == "vibration"
    assert doc["critical_sensors"][0]["share"] == pytest.approx(1.0)
    assert not doc["capped"]


def test_a_missing_value_keeps_the_last_one_and_late_readings_are_ignored(
    tmp_path: Path,
) -> None:
    tracker = RulTracker(_bundle(tmp_path))
    tracker.observe([("A", 0.0, {**HEALTHY, "vibration": 6.0})])
    tracker.observe([("A", 61.0, {**HEALTHY, "vibration": None})])
    out = tracker.observe([("A", 30.0, HEALTHY), ("A", 125.0, HEALTHY)])
    assert list(out) == [1]  # the late reading of minute 0 closed nothing
    assert out[1]["rul_hours"] < 240.0  # the gap repeated the worn value


def test_a_bundle_in_cycles_is_refused_at_the_edge(tmp_path: Path) -> None:
    write_test_rul_bundle(tmp_path / "b")
    text = (tmp_path / "b" / "manifest.json").read_text().replace('"hours"', '"cycles"')
    (tmp_path / "b" / "manifest.json").write_text(text)
    with pytest.raises(BundleError, match="unit"):
        RulTracker(RulBundle(tmp_path / "b"))
