"""One small detector trained per test session (TensorFlow start-up and LSTM training are the
slow part), exported once as a signed bundle."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SENSORS = ["vibration", "current", "pressure", "flow_rate", "voltage", "rpm"]
TRAIN_ROWS = 400
ANOMALY = slice(520, 560)
ANOMALY_SENSOR = 2


def synthetic_stream(n: int = 640, seed: int = 7) -> np.ndarray:
    """Correlated periodic signals with noise, like a pump at steady load."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    base = np.column_stack([np.sin(t / 9.0 + k) * (1 + k / 4) + 10 * k for k in range(6)])
    return base + 0.1 * rng.normal(size=base.shape)


@dataclass
class Trained:
    detector: object
    normal: np.ndarray
    faulty: np.ndarray
    bundle: Path
    private_pem: bytes
    public_pem: bytes


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test of this folder that uses ``trained`` waits for TensorFlow and the LSTM's
    training: it is ``slow``, so ``make test-unit`` (seconds, no training) leaves it out."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here) and "trained" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    from models.ensemble import EnsembleConfig, HybridDetector
    from models.export import export_bundle
    from models.lstm_autoencoder import LSTMAutoencoder
    from shared.model_bundle import generate_keypair

    stream = synthetic_stream()
    faulty = stream.copy()
    faulty[ANOMALY, ANOMALY_SENSOR] += 2.5
    config = EnsembleConfig(lstm=LSTMAutoencoder(epochs=8))
    detector = HybridDetector(config).fit(stream[:TRAIN_ROWS], SENSORS)
    private_pem, public_pem = generate_keypair()
    bundle = tmp_path_factory.mktemp("bundle") / "hybrid"
    export_bundle(
        detector,
        bundle,
        version="test-1",
        training_window={"rows": TRAIN_ROWS},
        metrics={"note": "synthetic"},
        private_key=private_pem,
    )
    return Trained(detector, stream, faulty, bundle, private_pem, public_pem)
