"""RUL data helpers, metrics and the held-out split (fast); the estimator on tiny synthetic runs,
its ONNX export and signed bundle (slow: trains TensorFlow)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from models.rul.data import (
    COLUMNS,
    MIN_OBSERVED,
    TEST_RUL_RANGE,
    Unit,
    all_windows,
    countdown,
    coverage,
    last_window,
    make_holdout,
    nasa_score,
    read_rul,
    read_units,
    rmse,
    write_units,
)
from models.rul.runtime import RUL_BUNDLE_FORMAT, check_rul_format
from shared.model_bundle import BundleError


def synthetic_units(n: int = 12, seed: int = 3) -> list[Unit]:
    """Run-to-failure units in C-MAPSS layout: the sensors drift with a wear term that grows
    towards failure, plus noise."""
    rng = np.random.default_rng(seed)
    units = []
    for u in range(1, n + 1):
        length = int(rng.integers(80, 160))
        wear = np.linspace(0.0, 1.0, length) ** 2
        values = 10.0 + wear[:, None] * rng.uniform(1, 3, len(COLUMNS) - 2)
        values += 0.05 * rng.normal(size=values.shape)
        units.append(Unit(u, values, np.arange(1, length + 1)))
    return units


@pytest.fixture
def train_file(tmp_path: Path) -> Path:
    path = tmp_path / "train_FD001.txt"
    write_units(path, synthetic_units())
    return path


def test_read_units_round_trip(train_file: Path) -> None:
    units = read_units(train_file)
    assert [u.unit for u in units] == list(range(1, 13))
    assert all(np.array_equal(u.cycles, np.arange(1, len(u.cycles) + 1)) for u in units)
    assert units[0].values.shape[1] == 24


def test_read_units_names_the_wrong_column_count(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("1 1 0.1 0.2\n")
    with pytest.raises(ValueError, match="4 columns"):
        read_units(bad)


def test_holdout_is_built_like_the_nasa_test_set(train_file: Path, tmp_path: Path) -> None:
    out = make_holdout(train_file, tmp_path / "split", n_test=4, seed=1)
    full = {len(u.cycles): u for u in read_units(train_file)}
    train = read_units(out / "train_FD001.txt")
    test = read_units(out / "test_FD001.txt")
    ruls = read_rul(out / "RUL_FD001.txt")
    assert len(train) == 8 and len(test) == 4 and len(ruls) == 4
    assert [u.unit for u in test] == [1, 2, 3, 4]
    # Whole units held out: no held-out unit's rows are in the training file.
    train_starts = {tuple(np.round(u.values[0], 4)) for u in train}
    for unit, rul in zip(test, ruls, strict=True):
        assert tuple(np.round(unit.values[0], 4)) not in train_starts
        assert len(unit.cycles) >= min(MIN_OBSERVED, len(unit.cycles))
        assert TEST_RUL_RANGE[0] <= rul
        # The cut unit plus its true RUL is the whole original run.
        assert len(unit.cycles) + int(rul) in full


def test_holdout_refuses_holding_out_everything(train_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_test"):
        make_holdout(train_file, tmp_path / "split", n_test=12)


def test_windows_pad_short_histories_with_the_first_row() -> None:
    h = np.arange(10, dtype=float).reshape(5, 2)
    w = last_window(h, 8)
    assert w.shape == (8, 2)
    assert np.array_equal(w[:3], np.repeat(h[:1], 3, axis=0)) and np.array_equal(w[3:], h)
    assert np.array_equal(last_window(h, 3), h[-3:])
    W = all_windows(h, 3)
    assert W.shape == (5, 3, 2)
    assert np.array_equal(W[-1], h[-3:]) and np.array_equal(W[0], np.repeat(h[:1], 3, axis=0))
    with pytest.raises(ValueError, match="history"):
        last_window(np.zeros((0, 2)), 3)


def test_countdown_ends_at_failure() -> None:
    assert countdown(4).tolist() == [3.0, 2.0, 1.0, 0.0]


def test_metrics_follow_the_literature() -> None:
    true = np.array([50.0, 50.0, 50.0])
    pred = np.array([37.0, 60.0, 50.0])  # 13 early, 10 late, exact
    assert nasa_score(pred, true) == pytest.approx((math.e - 1) * 2)
    assert rmse(pred, true) == pytest.approx(math.sqrt((169 + 100) / 3))
    assert coverage(np.array([40, 55, 0]), np.array([60, 70, 50]), true) == pytest.approx(2 / 3)


def test_runtime_refuses_other_bundle_formats() -> None:
    check_rul_format({"format": RUL_BUNDLE_FORMAT, "format_version": 1})
    with pytest.raises(BundleError, match="format"):
        check_rul_format({"format": "rig-alpha-model-bundle", "format_version": 1})
    with pytest.raises(BundleError, match="format_version"):
        check_rul_format({"format": RUL_BUNDLE_FORMAT, "format_version": 99})


@pytest.mark.slow  # trains TensorFlow (tiny)
def test_estimator_fit_predict_export(tmp_path: Path) -> None:
    from models.rul.estimator import RulEstimator
    from models.rul.export import export_rul_bundle
    from models.rul.runtime import RulBundle
    from shared.model_bundle import generate_keypair, pack_bundle

    units = synthetic_units(10)
    runs = [u.values[:, :4] for u in units]
    model = RulEstimator(window=10, members=2, epochs=3, filters=8, dense=8, max_rul=60.0)
    assert model.fit(runs, sensors=["a", "b", "c", "d"]) is model
    histories = [r[: len(r) // 2] for r in runs] + [r[:4] for r in runs[:2]]
    point = model.predict(histories)
    low, high = model.predict_interval(histories)
    assert point.shape == (12,) and np.all((point >= 0) & (point <= 60.0))
    assert np.all(low <= point) and np.all(point <= high)
    with pytest.raises(ValueError, match="windows of shape"):
        model.predict(np.zeros((2, 5, 4)))

    private, public = generate_keypair()
    manifest = export_rul_bundle(model, tmp_path / "b", private_key=private, unit="cycles")
    assert manifest["sensors"] == ["a", "b", "c", "d"] and manifest["window"] == 10
    json.loads((tmp_path / "b" / "manifest.json").read_text())
    archive = pack_bundle(tmp_path / "b", tmp_path / "b.tar.gz")
    edge = RulBundle(archive, public_key=public).predict_histories(histories)
    # The edge graph (scaling, members, calibration inside) gives the trainer's numbers.
    np.testing.assert_allclose(edge.rul, point, atol=1e-3)
    np.testing.assert_allclose(edge.low, low, atol=1e-3)
    np.testing.assert_allclose(edge.high, high, atol=1e-3)


def test_estimator_with_trees_exports_the_same_blend(tmp_path: Path) -> None:
    """Networks + gradient-boosted trees: the trees, the blend and the calibration appended to
    the exported graph give the trainer's numbers at the edge."""
    from models.rul.estimator import RulEstimator
    from models.rul.export import export_rul_bundle
    from models.rul.runtime import RulBundle

    runs = [u.values[:, :4] for u in synthetic_units(8)]
    model = RulEstimator(window=10, members=2, epochs=2, dense=8, max_rul=60.0, trees=15)
    model.fit(runs, sensors=["a", "b", "c", "d"])
    assert len(model.trees_) == 2 and model.summary()["trees"] == 2
    histories = [r[: len(r) // 2] for r in runs] + [r[:4] for r in runs[:2]]
    point = model.predict(histories)
    low, high = model.predict_interval(histories)
    assert np.all(low <= point) and np.all(point <= high) and np.all(point <= 60.0)
    export_rul_bundle(model, tmp_path / "b", unit="cycles")
    edge = RulBundle(tmp_path / "b").predict_histories(histories)
    np.testing.assert_allclose(edge.rul, point, atol=1e-3)
    np.testing.assert_allclose(edge.low, low, atol=1e-3)
    np.testing.assert_allclose(edge.high, high, atol=1e-3)


def test_estimator_names_bad_inputs() -> None:
    from models.rul.estimator import RulEstimator

    runs = [np.zeros((20, 3)) for _ in range(3)]
    with pytest.raises(ValueError, match="members"):
        RulEstimator(members=1).fit(runs)
    with pytest.raises(ValueError, match="tree_weight"):
        RulEstimator(members=2, trees=10, tree_weight=1.5).fit(runs)
    with pytest.raises(ValueError, match="tree_learning_rate"):
        RulEstimator(members=2, trees=10, tree_learning_rate=0.0).fit(runs)
    with pytest.raises(ValueError, match="runs: 3 runs"):
        RulEstimator(members=5).fit(runs)
    with pytest.raises(ValueError, match=r"targets\[0\]"):
        RulEstimator(members=2).fit(runs, targets=[np.zeros(5)] * 3)
    with pytest.raises(ValueError, match=r"runs\[1\]"):
        RulEstimator(members=2).fit([np.zeros((20, 3)), np.zeros((20, 2)), np.zeros((5, 3))])


def test_holdout_folds_hold_out_disjoint_units(train_file: Path, tmp_path: Path) -> None:
    seen: list[tuple[float, ...]] = []
    for fold in range(3):
        out = make_holdout(train_file, tmp_path / f"f{fold}", n_test=4, seed=2, fold=fold)
        seen += [tuple(np.round(u.values[0], 4)) for u in read_units(out / "test_FD001.txt")]
    assert len(set(seen)) == 12
    with pytest.raises(ValueError, match="fold"):
        make_holdout(train_file, tmp_path / "f9", n_test=4, seed=2, fold=9)
