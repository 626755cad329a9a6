"""PCA with Hotelling's T² and the Q statistic (squared prediction error), the classic
multivariate process-monitoring pair: T² catches readings that move along the normal
correlation structure but too far, Q catches readings that break the structure.

The score is the mean of both statistics, each divided by its training 99th percentile, so
neither dominates by its units. Fitted with numpy; the ONNX graph is written by hand (a few
MatMuls), scaling included.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from detector.strategies import shares
from models.onnx_utils import append_outputs


class PcaT2QModel(BaseEstimator):
    """Scores in the vocabulary of ``models.isolation_forest``: ``anomaly_score`` (>= 0,
    larger is more anomalous), ``normalized_score`` (÷ ``threshold_``), ``is_anomaly``."""

    name = "pca"

    mean_: np.ndarray
    scale_: np.ndarray
    components_: np.ndarray  # (d, k)
    eigenvalues_: np.ndarray  # (k,)
    t2_limit_: float
    q_limit_: float
    threshold_: float

    def __init__(
        self,
        variance_kept: float = 0.9,
        threshold_percentile: float = 95.0,
        min_samples: int = 50,
    ) -> None:
        self.variance_kept = variance_kept
        self.threshold_percentile = threshold_percentile
        self.min_samples = min_samples

    def fit(self, X: np.ndarray) -> PcaT2QModel:
        X = np.asarray(X, dtype=np.float64)
        if len(X) < self.min_samples:
            raise ValueError(f"PCA needs at least {self.min_samples} samples, got {len(X)}")
        self.mean_ = X.mean(axis=0)
        std = X.std(axis=0)
        self.scale_ = np.where(std > 1e-12, std, 1.0)
        Z = (X - self.mean_) / self.scale_
        _, s, vt = np.linalg.svd(Z, full_matrices=False)
        eig = s**2 / max(len(X) - 1, 1)
        ratio = np.cumsum(eig) / max(eig.sum(), 1e-12)
        k = int(np.searchsorted(ratio, self.variance_kept) + 1)
        # Keep at least one dimension out of the model, otherwise Q is identically zero.
        k = max(1, min(k, len(eig) - 1)) if len(eig) > 1 else 1
        self.components_ = vt[:k].T
        self.eigenvalues_ = np.maximum(eig[:k], 1e-12)
        # The limits scale the statistics inside _stats: 1.0 until they are known.
        self.t2_limit_ = self.q_limit_ = 1.0
        t2, q, _ = self._stats(X)
        self.t2_limit_ = max(float(np.percentile(t2, 99.0)), 1e-12)
        self.q_limit_ = max(float(np.percentile(q, 99.0)), 1e-12)
        self.threshold_ = float(np.percentile(self.anomaly_score(X), self.threshold_percentile))
        return self

    def _stats(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        check_is_fitted(self, "components_")
        Z = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        t = Z @ self.components_
        t2 = np.sum(t * t / self.eigenvalues_, axis=1)
        r = Z - t @ self.components_.T
        q = np.sum(r * r, axis=1)
        # T² split over variables: z_j * (P Λ⁻¹ Pᵀ z)_j sums to T²; negative parts (a variable
        # pulling towards normal) are no contribution to an alarm and are clipped below.
        m = (self.components_ / self.eigenvalues_) @ self.components_.T
        contrib = np.maximum(Z * (Z @ m), 0.0) / self.t2_limit_ + (r * r) / self.q_limit_
        return t2, q, contrib

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        t2, q, _ = self._stats(X)
        return 0.5 * (t2 / self.t2_limit_ + q / self.q_limit_)

    def normalized_score(self, X: np.ndarray) -> np.ndarray:
        return self.anomaly_score(X) / self.threshold_

    def is_anomaly(self, X: np.ndarray) -> np.ndarray:
        return self.normalized_score(X) > 1.0

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-variable share of the T² and Q parts (``detector.strategies.shares``)."""
        return shares(self._stats(X)[2])

    def to_onnx(self) -> bytes:
        """Input ``x`` (N, d) float32 raw values; outputs ``score`` (N,) and ``contrib`` (N, d)
        (unnormalised per-variable contributions)."""
        from onnx import TensorProto, helper, numpy_helper

        check_is_fitted(self, "components_")
        d = len(self.mean_)
        f32 = np.float32
        p = self.components_
        consts = {
            "mean": self.mean_.astype(f32),
            "scale": self.scale_.astype(f32),
            "P": p.astype(f32),
            "Pt": p.T.astype(f32),
            "inv_eig": (1.0 / self.eigenvalues_).astype(f32),
            "M": ((p / self.eigenvalues_) @ p.T).astype(f32),
            "inv_t2": np.array(1.0 / self.t2_limit_, f32),
            "inv_q": np.array(1.0 / self.q_limit_, f32),
            "half": np.array(0.5, f32),
            "axis1": np.array([1], np.int64),
        }
        n = helper.make_node
        nodes = [
            n("Sub", ["x", "mean"], ["xc"]),
            n("Div", ["xc", "scale"], ["z"]),
            n("MatMul", ["z", "P"], ["t"]),
            n("Mul", ["t", "t"], ["t_sq"]),
            n("Mul", ["t_sq", "inv_eig"], ["t_w"]),
            n("ReduceSum", ["t_w", "axis1"], ["t2"], keepdims=0),
            n("MatMul", ["t", "Pt"], ["z_hat"]),
            n("Sub", ["z", "z_hat"], ["r"]),
            n("Mul", ["r", "r"], ["r_sq"]),
            n("ReduceSum", ["r_sq", "axis1"], ["q"], keepdims=0),
            n("Mul", ["t2", "inv_t2"], ["t2_n"]),
            n("Mul", ["q", "inv_q"], ["q_n"]),
            n("Add", ["t2_n", "q_n"], ["s2"]),
            n("Mul", ["s2", "half"], ["score"]),
            n("MatMul", ["z", "M"], ["zm"]),
            n("Mul", ["z", "zm"], ["ct"]),
            n("Relu", ["ct"], ["ct_pos"]),
            n("Mul", ["ct_pos", "inv_t2"], ["ct_n"]),
            n("Mul", ["r_sq", "inv_q"], ["cq_n"]),
            n("Add", ["ct_n", "cq_n"], ["contrib"]),
        ]
        graph = helper.make_graph(
            nodes,
            "pca_t2q",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, d])],
            [],
            [numpy_helper.from_array(v, k) for k, v in consts.items()],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        append_outputs(
            model,
            [("score", TensorProto.FLOAT, [None]), ("contrib", TensorProto.FLOAT, [None, d])],
        )
        return model.SerializeToString()

    def summary(self) -> dict[str, Any]:
        """Hyperparameters and what was learned, for the bundle's records."""
        check_is_fitted(self, "components_")
        return {
            "params": self.get_params(),
            "components": int(self.components_.shape[1]),
            "threshold": self.threshold_,
        }
