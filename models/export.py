"""Export a fitted ``HybridDetector`` as a model bundle for the edge: one ONNX file per
component (scaling inside each graph) and a manifest with everything the edge needs to
reproduce the decision: feature order, fill values, thresholds, weights, smoothing."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sklearn.utils.validation import check_is_fitted

from detector.bundle import BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION
from models.ensemble import HybridDetector
from models.lstm_autoencoder import LSTMAutoencoder
from shared.model_bundle import PrivateKeyLike, sign_bundle, write_manifest


def export_bundle(
    detector: HybridDetector,
    directory: Path | str,
    *,
    version: str | None = None,
    training_window: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    private_key: PrivateKeyLike | None = None,
) -> dict[str, Any]:
    """Write the bundle into ``directory`` (created); sign it when a key is given. Returns
    the manifest. The bundle is run by ``detector.bundle.BundleScorer``."""
    check_is_fitted(detector)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    cfg = detector.config_
    components: dict[str, Any] = {}
    for name, model in detector.models_.items():
        filename = f"{name}.onnx"
        (out / filename).write_bytes(model.to_onnx())
        entry: dict[str, Any] = {"file": filename, "threshold": model.threshold_}
        if isinstance(model, LSTMAutoencoder):
            entry["forecast_threshold"] = model.forecast_threshold_
            # The forecast head predicts z units: the edge de-standardises it with these
            # (raw = z * scale + mean, in the manifest's sensor order) to send real values.
            entry["forecast_mean"] = [float(v) for v in model.mean_]
            entry["forecast_scale"] = [float(v) for v in model.scale_]
            entry["input"] = "window"
        else:
            entry["input"] = "x"
        components[name] = entry
    now = datetime.now(UTC)
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "version": version or now.strftime("%Y%m%dT%H%M%SZ"),
        "created_at": now.isoformat().replace("+00:00", "Z"),
        "strategy": cfg.strategy,
        "strategies": detector.available_strategies(),
        "sensors": detector.features_,
        "excluded_sensors": [s for s in detector.sensors_ if s not in detector.features_],
        "fill_values": [float(v) for v in detector.fill_values_],
        "smooth_window": cfg.smooth_window,
        "sequence_length": cfg.lstm.sequence_length,
        "prediction_horizon": cfg.lstm.prediction_horizon,
        "weights": detector.weights_,
        "strategy_thresholds": detector.strategy_thresholds_,
        "components": components,
        # Stuck-sensor and drift limits learned at fit time (detector.checks), in the sensor
        # order above: the edge scores with exactly these.
        "fault_checks": detector.checks_.to_manifest() if hasattr(detector, "checks_") else {},
        "training_window": training_window or {"samples": detector.n_train_},
        "metrics": _finite(metrics or {}),
    }
    doc = write_manifest(out, _finite(manifest))
    if private_key is not None:
        sign_bundle(out, private_key)
    return doc


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: replace them by null recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
