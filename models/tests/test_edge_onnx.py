from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from models.tests.conftest import ANOMALY, ANOMALY_SENSOR, SENSORS, TRAIN_ROWS, Trained
from shared.message import Reading
from shared.model_bundle import TamperedBundleError, WrongKeyError, generate_keypair

ROOT = Path(__file__).resolve().parents[2]


def readings(X: np.ndarray, machine: str = "M1") -> list[Reading]:
    now = datetime.now(UTC)
    return [
        Reading(machine, "edge-1", i, now, {s: float(v) for s, v in zip(SENSORS, row, strict=True)})
        for i, row in enumerate(X)
    ]


def test_edge_detector_imports_neither_tensorflow_nor_sklearn() -> None:
    code = (
        "import sys, edge.onnx_detector\n"
        "bad = [m for m in sys.modules\n"
        "       if m.split('.')[0] in ('tensorflow', 'sklearn', 'keras', 'onnx', 'models')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_bundle_scorer_rows_equal_the_edge_readings(trained: Trained) -> None:
    """The trainer's validation scores rows, the edge scores readings: one runtime, one
    answer, including the gap filling of a missing value."""
    from detector.bundle import BundleScorer
    from edge.onnx_detector import OnnxDetector

    rows = trained.faulty.copy()
    rows[300, 1] = np.nan
    stream = readings(rows)
    stream[300].values.pop(SENSORS[1])
    edge = OnnxDetector(trained.bundle, trained.public_pem).score_batch(stream)
    scorer = BundleScorer(trained.bundle, trained.public_pem)
    first, rest = scorer.score_rows(rows[:300], "M1"), scorer.score_rows(rows[300:], "M1")
    score = np.concatenate([first.score, rest.score])
    assert np.allclose(score, [r["score"] for r in edge], atol=1e-6)
    assert np.concatenate([first.is_anomaly, rest.is_anomaly]).tolist() == [
        r["is_anomaly"] for r in edge
    ]
    assert rest.missing == {0: [SENSORS[1]]} and edge[300]["missing_sensors"] == [SENSORS[1]]
    hit = ANOMALY.start + 10 - 300
    assert rest.contributions[hit] == edge[ANOMALY.start + 10]["contributions"]
    with pytest.raises(ValueError, match="rows: expected shape"):
        scorer.score_rows(rows[:, :3], "M1")


def test_edge_scores_equal_native_scores(trained: Trained) -> None:
    from edge.onnx_detector import OnnxDetector

    detector = OnnxDetector(trained.bundle, trained.public_pem)
    stream = readings(trained.faulty)
    # Mixed batch sizes, including single readings, must give the same stream of decisions.
    results = detector.score_batch(stream[:250])
    results += [detector.score(r) for r in stream[250:260]]
    results += detector.score_batch(stream[260:])
    edge = np.array([r["score"] for r in results])
    native = np.nan_to_num(trained.detector.anomaly_score(trained.faulty))
    assert np.abs(edge - native).max() < 1e-4
    hit = results[ANOMALY.start + 10]
    assert hit["is_anomaly"] and hit["method"] == "hybrid_smart"
    assert hit["sensors"][0] == SENSORS[ANOMALY_SENSOR]
    assert hit["contributions"][0]["share"] > 0.3
    assert 0.0 <= hit["probability_ahead"] <= 1.0
    assert not any(r["is_anomaly"] for r in results[TRAIN_ROWS:500])


def test_a_stuck_sensor_is_flagged_and_named_alike_at_the_edge(trained: Trained) -> None:
    """The stuck check's limits travel in the manifest: the edge flags the frozen sensor on
    the same reading as the training side, and names it."""
    from edge.onnx_detector import OnnxDetector

    manifest = json.loads((trained.bundle / "manifest.json").read_text())
    assert len(manifest["fault_checks"]["stuck"]["run_limit"]) == len(manifest["sensors"])
    frozen = trained.normal.copy()
    frozen[450:, 0] = frozen[450, 0]
    results = OnnxDetector(trained.bundle, trained.public_pem).score_batch(readings(frozen))
    edge = np.array([r["score"] for r in results])
    native = np.nan_to_num(trained.detector.anomaly_score(frozen))
    assert np.abs(edge - native).max() < 1e-4
    first = next(i for i, r in enumerate(results) if r["is_anomaly"])
    assert 450 < first <= 450 + 30
    assert results[first]["contributions"][0]["sensor"] == SENSORS[0]


@pytest.mark.parametrize("strategy", ["isolation_forest", "lstm", "hybrid_or", "hybrid_and"])
def test_edge_strategies_match_native(trained: Trained, strategy: str) -> None:
    from edge.onnx_detector import OnnxDetector

    detector = OnnxDetector(trained.bundle, strategy=strategy)
    results = detector.score_batch(readings(trained.faulty))
    edge = np.array([r["score"] for r in results])
    native = np.nan_to_num(trained.detector.anomaly_score(trained.faulty, strategy))
    assert np.abs(edge - native).max() < 1e-4
    if strategy == "lstm":
        assert results[0].get("warming_up") and not results[0]["is_anomaly"]


def test_machines_keep_separate_windows(trained: Trained) -> None:
    from edge.onnx_detector import OnnxDetector

    detector = OnnxDetector(trained.bundle)
    a, b = readings(trained.faulty, "A"), readings(trained.normal, "B")
    mixed = [r for pair in zip(a, b, strict=True) for r in pair]
    results = detector.score_batch(mixed)
    assert results[2 * (ANOMALY.start + 10)]["is_anomaly"]
    assert not any(r["is_anomaly"] for r in results[1::2][TRAIN_ROWS:])


def test_missing_sensors_are_filled_and_reported(trained: Trained) -> None:
    from edge.onnx_detector import OnnxDetector

    detector = OnnxDetector(trained.bundle)
    stream = readings(trained.normal[:60])
    stream[-1].values.pop("pressure")
    stream[-1].values["voltage"] = None
    result = detector.score_batch(stream)[-1]
    assert result["missing_sensors"] == ["pressure", "voltage"]
    assert not result["is_anomaly"]


def test_signed_bundle_required_when_key_given(trained: Trained, tmp_path: Path) -> None:
    import shutil

    from edge.onnx_detector import OnnxDetector

    _, other = generate_keypair()
    with pytest.raises(WrongKeyError):
        OnnxDetector(trained.bundle, other)
    copy = Path(shutil.copytree(trained.bundle, tmp_path / "b"))
    (copy / "pca.onnx").write_bytes(b"\0" + (copy / "pca.onnx").read_bytes()[1:])
    with pytest.raises(TamperedBundleError):
        OnnxDetector(copy)


def test_batch_size_never_changes_a_verdict(trained: Trained) -> None:
    """The edge scores whatever one commit holds (1 reading or hundreds): a stream scored in
    batches of 64 and the same stream scored one reading at a time give the same scores and
    verdicts. (What batching buys in time is bench-ml's figure, not an assert here: a
    timed bound fails on a slow machine and proves nothing on a fast one.)"""
    from edge.onnx_detector import OnnxDetector

    stream = readings(trained.faulty[: ANOMALY.start + 40])
    batched = OnnxDetector(trained.bundle)
    whole = [r for i in range(0, len(stream), 64) for r in batched.score_batch(stream[i : i + 64])]
    single = OnnxDetector(trained.bundle)
    alone = [single.score_batch([reading])[0] for reading in stream]
    assert np.allclose([r["score"] for r in whole], [r["score"] for r in alone], atol=1e-6)
    assert [r["is_anomaly"] for r in whole] == [r["is_anomaly"] for r in alone]
    assert any(r["is_anomaly"] for r in whole[ANOMALY.start :])  # the fault is seen either way


def test_forecast_in_raw_units_on_the_newest_reading_of_each_machine(trained: Trained) -> None:
    """The dots the dashboard draws: the LSTM's 10-step forecast de-standardised with the
    bundle's scaling equals the trainer's own ``forecast`` (raw units), carried by the last
    reading of a batch per machine only, and at most every FORECAST_EVERY_S of reading time."""
    import dataclasses
    from datetime import timedelta

    import orjson

    from edge.onnx_detector import FORECAST_EVERY_S, OnnxDetector
    from shared.catalog import PRIORITY_SENSORS
    from shared.message import MAX_FORECAST_STEPS

    start = datetime.now(UTC)
    step = FORECAST_EVERY_S / 2
    stream = [
        dataclasses.replace(r, ts=start + timedelta(seconds=i * step))
        for i, r in enumerate(readings(trained.normal[:64]))
    ]
    other = readings(trained.normal[:64], "M2")
    detector = OnnxDetector(trained.bundle)
    results = detector.score_batch(stream[:60] + other[:60])
    assert [i for i, r in enumerate(results) if "forecast" in r] == [59, 119]
    forecast = results[59]["forecast"]
    assert list(forecast) == [s for s in PRIORITY_SENSORS if s in SENSORS]
    native = trained.detector.models_["lstm"].forecast(trained.normal[:60])[59]
    for name, values in forecast.items():
        assert 0 < len(values) <= MAX_FORECAST_STEPS
        assert np.allclose(values, native[:, SENSORS.index(name)], rtol=1e-3, atol=1e-3), name
    assert len(orjson.dumps(results[59])) < 2048  # small enough for every second
    # Half an interval later: none; a whole interval after the last one: the next forecast.
    assert "forecast" not in detector.score_batch(stream[60:61])[0]
    assert "forecast" in detector.score_batch(stream[61:62])[0]
