from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from detector import strategies as st
from detector.features import sliding_windows
from models.isolation_forest import IsolationForestModel
from models.pca_model import PcaT2QModel
from models.tests.conftest import ANOMALY, ANOMALY_SENSOR, SENSORS, TRAIN_ROWS, Trained

NORMAL = slice(TRAIN_ROWS, 500)


@pytest.mark.parametrize("strategy", st.STRATEGIES)
def test_each_strategy_flags_the_injected_anomaly_and_not_normal_data(
    trained: Trained, strategy: str
) -> None:
    detector = trained.detector
    flagged = detector.is_anomaly(trained.faulty, strategy)
    clean = detector.is_anomaly(trained.normal, strategy)
    # Smoothing delays the alarm by a few readings; the bulk of the fault must be flagged.
    assert flagged[ANOMALY].mean() > 0.7, strategy
    assert flagged[NORMAL].mean() < 0.05, strategy
    assert clean[TRAIN_ROWS:].mean() < 0.05, strategy


def test_contributions_rank_the_faulty_sensor_first(trained: Trained) -> None:
    shares = trained.detector.explain(trained.faulty)
    assert np.allclose(shares[ANOMALY].sum(axis=1), 1.0)
    top = st.top_contributors(shares[ANOMALY.start + 10], trained.detector.features_)
    assert top[0]["sensor"] == SENSORS[ANOMALY_SENSOR]
    assert top[0]["share"] > 0.3


def test_lstm_forecasts_the_horizon_and_gives_a_probability(trained: Trained) -> None:
    lstm = trained.detector.models_[st.LSTM]
    forecast = lstm.forecast(trained.normal[:100])
    assert forecast.shape == (100, 10, len(SENSORS))
    assert np.isnan(forecast[:19]).all() and np.isfinite(forecast[19:]).all()
    prob = lstm.probability_ahead(trained.normal[:100])[19:]
    assert ((prob >= 0) & (prob <= 1)).all()


def test_isolation_forest_onnx_matches_native(trained: Trained) -> None:
    model = trained.detector.models_[st.ISOLATION_FOREST]
    X = trained.faulty.astype(np.float32)
    # The exported file (the fixture exported it once): converting again costs seconds.
    session = ort.InferenceSession(str(trained.bundle / "isolation_forest.onnx"))
    score, contrib = session.run(None, {"x": X})
    assert np.abs(score - model.anomaly_score(X)).max() < 1e-4
    shares = contrib / contrib.sum(axis=1, keepdims=True)
    assert np.abs(shares - model.contributions(X)).max() < 1e-4


def test_lstm_onnx_matches_native(trained: Trained) -> None:
    model = trained.detector.models_[st.LSTM]
    windows = sliding_windows(trained.faulty.astype(np.float32), 20)
    session = ort.InferenceSession(str(trained.bundle / "lstm.onnx"))
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(None, {"window": windows}), strict=True))
    native_err, native_forecast = model.run_windows(windows)
    assert np.abs(out["sensor_error"] - native_err).max() < 1e-4
    assert np.abs(out["forecast"] - native_forecast).max() < 1e-4


def test_pca_onnx_matches_native(trained: Trained) -> None:
    model = trained.detector.models_[st.PCA]
    X = trained.faulty.astype(np.float32)
    score, _ = ort.InferenceSession(str(trained.bundle / "pca.onnx")).run(None, {"x": X})
    native = model.anomaly_score(X)
    assert np.abs(score - native).max() < 1e-4 * max(1.0, np.abs(native).max())


def test_bundle_manifest_lists_files_thresholds_and_hashes(trained: Trained) -> None:
    import hashlib

    manifest = json.loads((trained.bundle / "manifest.json").read_text())
    assert manifest["version"] == "test-1"
    assert manifest["sensors"] == SENSORS
    assert manifest["strategy"] == "hybrid_smart"
    assert set(manifest["strategy_thresholds"]) == set(st.STRATEGIES)
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((trained.bundle / name).read_bytes()).hexdigest() == digest
    assert set(manifest["files"]) == {f"{c}.onnx" for c in st.COMPONENTS}


def test_components_name_no_sensor_for_an_unremarkable_row(trained: Trained) -> None:
    """A row exactly at the training mean (or before the LSTM's first window) has no part to
    share out: every component answers all zeros, as the bundle scorer does (one function,
    ``detector.strategies.shares``), instead of spreading 1/d over every sensor."""
    zeros = [[0.0] * len(SENSORS)]
    for name in (st.ISOLATION_FOREST, st.PCA):
        model = trained.detector.models_[name]
        assert model.contributions(model.mean_[None, :]).tolist() == zeros, name
    lstm = trained.detector.models_[st.LSTM]
    early = lstm.contributions(trained.normal[:30])
    assert early[:19].tolist() == zeros * 19
    assert np.allclose(early[19:].sum(axis=1), 1.0)


def test_components_are_scikit_learn_estimators(trained: Trained) -> None:
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError

    from models.lstm_autoencoder import LSTMAutoencoder

    forest = IsolationForestModel(n_estimators=10)
    assert forest.get_params()["n_estimators"] == 10
    assert clone(forest.set_params(contamination=0.1)).contamination == 0.1
    assert not hasattr(forest, "threshold_")
    with pytest.raises(NotFittedError):
        forest.anomaly_score(np.zeros((1, 3)))
    assert LSTMAutoencoder(epochs=2).get_params()["epochs"] == 2
    # The ensemble clones the config's components: those stay unfitted and reusable.
    config = trained.detector.config_
    assert not hasattr(config.lstm, "threshold_")
    assert trained.detector.models_[st.LSTM] is not config.lstm
    assert trained.detector.models_[st.LSTM].epochs == config.lstm.epochs == 8


def test_isolation_forest_needs_enough_samples() -> None:
    with pytest.raises(ValueError, match="at least 100"):
        IsolationForestModel().fit(np.zeros((50, 3)))


def test_pca_scores_structure_breaks() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=500)
    X = np.column_stack([a, a + 0.05 * rng.normal(size=500), rng.normal(size=500)])
    model = PcaT2QModel().fit(X)
    broken = np.array([[1.0, -1.0, 0.0]])  # both in range, correlation broken
    assert model.is_anomaly(broken)[0]
    assert model.contributions(broken)[0][:2].sum() > 0.9


def test_isolation_forest_exports_as_one_tree_ensemble(trained: Trained) -> None:
    import onnx

    graph = onnx.load(str(trained.bundle / "isolation_forest.onnx")).graph
    ops = [node.op_type for node in graph.node]
    # One operator for all the trees; the rest is a handful of elementwise steps.
    assert ops.count("TreeEnsembleRegressor") == 1 and len(ops) <= 8


def test_thresholds_are_set_on_held_back_normal_data() -> None:
    from models.ensemble import EnsembleConfig, HybridDetector
    from shared.catalog import CORE_SENSOR_NAMES
    from simulator.signals import MachineSignals

    signals = MachineSignals("A", 11)
    X = np.array([signals.step(float(i)) for i in range(2500)])
    train, test = X[:2000], X[2000:]
    config = EnsembleConfig(components=(st.ISOLATION_FOREST, st.PCA), strategy=st.PCA)
    held_back = HybridDetector(config).fit(train, list(CORE_SENSOR_NAMES))
    in_sample = HybridDetector(
        EnsembleConfig(components=config.components, strategy=st.PCA, min_calibration_rows=10**6)
    ).fit(train, list(CORE_SENSOR_NAMES))
    assert held_back.n_calibration_ == 400 and in_sample.n_calibration_ == 0
    level = held_back.calibration_levels_[st.PCA]
    assert held_back.strategy_thresholds_[st.PCA] >= level - 1e-9
    # The PCA residual learns the training part's drift states: unseen normal data is
    # flagged unless the threshold comes from data the model did not see.
    far_held_back = held_back.is_anomaly(np.vstack([train, test]))[2000:].mean()
    far_in_sample = in_sample.is_anomaly(np.vstack([train, test]))[2000:].mean()
    assert far_held_back < 0.05 < far_in_sample
