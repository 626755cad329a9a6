"""Isolation Forest (manifest 6.2) with a scikit-learn-like interface and ONNX export.

Scores follow one convention across ``models``: ``score_samples`` is >= 0 and larger means
more anomalous, ``threshold_`` is the training-part cut-off, ``decision`` is the score divided
by the threshold (> 1 means anomalous), ``predict`` is ``decision > 1``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from models.onnx_utils import append_outputs


@dataclass(frozen=True, slots=True)
class IsolationForestConfig:
    contamination: float = 0.05
    n_estimators: int = 100
    min_samples: int = 100
    random_state: int = 42


class IsolationForestModel:
    name = "isolation_forest"

    def __init__(self, config: IsolationForestConfig | None = None) -> None:
        self.config = config or IsolationForestConfig()
        self.pipeline_: Any = None
        self.threshold_: float = float("nan")
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None

    def fit(self, X: np.ndarray) -> IsolationForestModel:
        from sklearn.ensemble import IsolationForest
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        X = _as_float32(X)
        if len(X) < self.config.min_samples:
            raise ValueError(
                f"isolation forest needs at least {self.config.min_samples} samples, got {len(X)}"
            )
        self.pipeline_ = Pipeline(
            [
                ("scaler", StandardScaler()),
                (
                    "forest",
                    IsolationForest(
                        n_estimators=self.config.n_estimators,
                        contamination=self.config.contamination,
                        random_state=self.config.random_state,
                    ),
                ),
            ]
        ).fit(X)
        scaler = self.pipeline_.named_steps["scaler"]
        self.mean_ = scaler.mean_.astype(np.float64)
        self.scale_ = scaler.scale_.astype(np.float64)
        # sklearn's offset_ is the (1 - contamination) quantile cut of -score_samples on the
        # training data, i.e. the manifest's "5 % expected anomaly rate".
        self.threshold_ = float(-self.pipeline_.named_steps["forest"].offset_)
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        self._check_fitted()
        return -self.pipeline_.score_samples(_as_float32(X)).astype(np.float64)

    def decision(self, X: np.ndarray) -> np.ndarray:
        return self.score_samples(X) / self.threshold_

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.decision(X) > 1.0

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Share of each feature in the squared z-score of each sample (rows sum to 1). Trees
        do not attribute their path lengths to features cheaply; the z-score share names the
        sensors that sit furthest from their training distribution, which is what isolates a
        point in the first place."""
        self._check_fitted()
        z = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        return _shares(z * z)

    def to_onnx(self) -> bytes:
        """The whole pipeline (scaling included) as ONNX: input ``x`` (N, d) float32, outputs
        ``score`` (N,) in the convention above and ``contrib`` (N, d), the squared z-scores
        behind ``contributions``."""
        from onnx import TensorProto, helper, numpy_helper
        from skl2onnx import to_onnx

        self._check_fitted()
        d = len(self.mean_)
        onx = to_onnx(
            self.pipeline_,
            np.zeros((1, d), dtype=np.float32),
            target_opset={"": 17, "ai.onnx.ml": 3},
            options={id(self.pipeline_.named_steps["forest"]): {"score_samples": True}},
        )
        graph = onx.graph
        scaled = next(n.output[0] for n in graph.node if n.op_type == "Scaler")
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(-1.0, np.float32), "neg_one"),
                numpy_helper.from_array(np.array([-1], np.int64), "flat_shape"),
            ]
        )
        graph.node.extend(
            [
                helper.make_node("Mul", ["score_samples", "neg_one"], ["neg_score"]),
                helper.make_node("Reshape", ["neg_score", "flat_shape"], ["score"]),
                helper.make_node("Mul", [scaled, scaled], ["contrib"]),
            ]
        )
        # Keep only the outputs the edge uses; the label/decision outputs are not needed.
        del graph.output[:]
        append_outputs(
            onx, [("score", TensorProto.FLOAT, [None]), ("contrib", TensorProto.FLOAT, [None, d])]
        )
        graph.input[0].name = "x"
        for node in graph.node:
            node.input[:] = ["x" if i == "X" else i for i in node.input]
        return onx.SerializeToString()

    def params(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "threshold": self.threshold_}

    def _check_fitted(self) -> None:
        if self.pipeline_ is None:
            raise RuntimeError("model is not fitted")


def _as_float32(X: np.ndarray) -> np.ndarray:
    # The trees compare float32 values (sklearn casts internally), and so does ONNX; feeding
    # float32 on both sides keeps the two scorings identical.
    return np.ascontiguousarray(X, dtype=np.float32)


def _shares(values: np.ndarray) -> np.ndarray:
    values = np.maximum(values, 0.0)
    total = values.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = values / total
    return np.where(total > 0, out, 1.0 / values.shape[-1])
