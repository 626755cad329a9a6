"""Export a fitted ``RulEstimator`` as a model bundle for the edge: one ONNX file (scaling,
ensemble and calibration inside the graph) and a manifest, signed like the detector bundles
(``shared.model_bundle``) so it can go through the same registry, validation and rollback."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sklearn.utils.validation import check_is_fitted

from detector.rul import RUL_BUNDLE_FORMAT, RUL_BUNDLE_FORMAT_VERSION
from models.export import _finite
from models.rul.estimator import RulEstimator
from shared.model_bundle import PrivateKeyLike, sign_bundle, write_manifest

RUL_MODEL_FILE = "rul.onnx"


def export_rul_bundle(
    model: RulEstimator,
    directory: Path | str,
    *,
    version: str | None = None,
    unit: str = "cycles",
    training_window: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    private_key: PrivateKeyLike | None = None,
    step_s: float | None = None,
    reference: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Write the bundle into ``directory`` (created); sign it when a key is given. Returns the
    manifest. ``unit`` names what the predicted life counts (cycles, hours). A rig bundle
    (hours) names ``step_s``, the seconds of readings folded into one row, and ``reference``,
    the healthy value of each sensor (the edge ranks the sensors driving the countdown against
    it; by default the training mean). The bundle is run by ``detector.rul.RulBundle``."""
    check_is_fitted(model, "scoring_model_")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / RUL_MODEL_FILE).write_bytes(model.to_onnx())
    now = datetime.now(UTC)
    manifest: dict[str, Any] = {
        "format": RUL_BUNDLE_FORMAT,
        "format_version": RUL_BUNDLE_FORMAT_VERSION,
        "kind": "rul",
        "version": version or now.strftime("%Y%m%dT%H%M%SZ"),
        "created_at": now.isoformat().replace("+00:00", "Z"),
        "sensors": model.sensors_,
        "window": model.window,
        "unit": unit,
        "max_rul": model.max_rul,
        "interval": model.interval,
        "model": {
            "file": RUL_MODEL_FILE,
            "input": "window",
            "outputs": ["rul", "low", "high"],
            "members": model.members,
            "calibration": model.calibration_,
        },
        "training_window": training_window or {"runs": model.n_runs_, "windows": model.n_windows_},
        "metrics": metrics or {},
        "reference": [float(v) for v in (reference if reference is not None else model.mean_)],
    }
    if step_s is not None:
        manifest["step_s"] = float(step_s)
    doc = write_manifest(out, _finite(manifest))
    if private_key is not None:
        sign_bundle(out, private_key)
    return doc
