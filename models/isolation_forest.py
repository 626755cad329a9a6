"""Isolation Forest with scikit-learn's estimator shape and ONNX export.

One outlier vocabulary across ``models``, deliberately *not* scikit-learn's (whose
``score_samples`` is "lower is more abnormal" and whose ``predict`` returns +1/-1), so the names
differ too: ``anomaly_score`` is >= 0 and larger means more anomalous, ``threshold_`` is the
training-part cut-off, ``normalized_score`` is the score divided by the threshold (above 1.0 is
anomalous, the unit every strategy combines), ``is_anomaly`` is ``normalized_score > 1`` as
booleans. What does follow scikit-learn: hyperparameters are ``__init__`` keywords stored as
given (so ``get_params``, ``set_params`` and ``clone`` work), ``fit`` returns ``self``, and the
learned state ends in ``_`` and exists only after ``fit``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from detector.strategies import shares
from models.onnx_utils import append_outputs


class IsolationForestModel(BaseEstimator):
    name = "isolation_forest"

    pipeline_: Any
    threshold_: float
    mean_: np.ndarray
    scale_: np.ndarray

    def __init__(
        self,
        contamination: float = 0.05,
        n_estimators: int = 100,
        min_samples: int = 100,
        random_state: int = 42,
    ) -> None:
        self.contamination = contamination
        self.n_estimators = n_estimators
        self.min_samples = min_samples
        self.random_state = random_state

    def fit(self, X: np.ndarray) -> IsolationForestModel:
        from sklearn.ensemble import IsolationForest
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        X = _as_float32(X)
        if len(X) < self.min_samples:
            raise ValueError(
                f"isolation forest needs at least {self.min_samples} samples, got {len(X)}"
            )
        self.pipeline_ = Pipeline(
            [
                ("scaler", StandardScaler()),
                (
                    "forest",
                    IsolationForest(
                        n_estimators=self.n_estimators,
                        contamination=self.contamination,
                        random_state=self.random_state,
                    ),
                ),
            ]
        ).fit(X)
        scaler = self.pipeline_.named_steps["scaler"]
        self.mean_ = scaler.mean_.astype(np.float64)
        self.scale_ = scaler.scale_.astype(np.float64)
        # sklearn's offset_ is the (1 - contamination) quantile cut of -score_samples on the
        # training data, i.e. an expected anomaly rate of ``contamination`` in training.
        self.threshold_ = float(-self.pipeline_.named_steps["forest"].offset_)
        return self

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        """scikit-learn's ``score_samples`` negated: in (0, 1], larger is more anomalous."""
        check_is_fitted(self)
        return -self.pipeline_.score_samples(_as_float32(X)).astype(np.float64)

    def normalized_score(self, X: np.ndarray) -> np.ndarray:
        return self.anomaly_score(X) / self.threshold_

    def is_anomaly(self, X: np.ndarray) -> np.ndarray:
        return self.normalized_score(X) > 1.0

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Share of each feature in the squared z-score of each sample (``shares``: rows sum
        to 1, or are all 0 for a sample exactly at the training mean). Trees
        do not attribute their path lengths to features cheaply; the z-score share names the
        sensors that sit furthest from their training distribution, which is what isolates a
        point in the first place."""
        check_is_fitted(self)
        z = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        return shares(z * z)

    def to_onnx(self) -> bytes:
        """The whole pipeline (scaling included) as ONNX: input ``x`` (N, d) float32, outputs
        ``score`` (N,) in the convention above and ``contrib`` (N, d), the squared z-scores
        behind ``contributions``.

        Written by hand rather than by skl2onnx, whose graph runs one operator chain per tree
        (about 100 µs per reading at the edge). Here every tree is one tree of a single
        ``TreeEnsembleRegressor`` whose leaves hold that tree's share of the normalised path
        length, ``(depth + c(n_leaf) - 1) / (n_trees * c(max_samples))`` as in sklearn's
        ``score_samples``, so the operator's sum is the exponent and the score is
        ``2 ** -sum``.
        """
        from onnx import TensorProto, helper, numpy_helper

        check_is_fitted(self)
        forest = self.pipeline_.named_steps["forest"]
        if forest._max_features != len(self.mean_):
            raise NotImplementedError("export assumes every tree sees every feature")
        d = len(self.mean_)
        denominator = len(forest.estimators_) * float(_average_path_length(forest._max_samples))
        attrs: dict[str, list[Any]] = {
            k: []
            for k in (
                "nodes_treeids",
                "nodes_nodeids",
                "nodes_featureids",
                "nodes_values",
                "nodes_modes",
                "nodes_truenodeids",
                "nodes_falsenodeids",
                "target_treeids",
                "target_nodeids",
                "target_ids",
                "target_weights",
            )
        }
        for tree_id, estimator in enumerate(forest.estimators_):
            tree = estimator.tree_
            leaf = tree.children_left == -1
            path = (
                tree.compute_node_depths()
                + _average_path_length(tree.n_node_samples.astype(np.float64))
                - 1.0
            ) / denominator
            for node in range(tree.node_count):
                attrs["nodes_treeids"].append(tree_id)
                attrs["nodes_nodeids"].append(node)
                if leaf[node]:
                    attrs["nodes_featureids"].append(0)
                    attrs["nodes_values"].append(0.0)
                    attrs["nodes_modes"].append("LEAF")
                    attrs["nodes_truenodeids"].append(0)
                    attrs["nodes_falsenodeids"].append(0)
                    attrs["target_treeids"].append(tree_id)
                    attrs["target_nodeids"].append(node)
                    attrs["target_ids"].append(0)
                    attrs["target_weights"].append(float(path[node]))
                else:
                    attrs["nodes_featureids"].append(int(tree.feature[node]))
                    attrs["nodes_values"].append(_float32_at_most(float(tree.threshold[node])))
                    attrs["nodes_modes"].append("BRANCH_LEQ")
                    attrs["nodes_truenodeids"].append(int(tree.children_left[node]))
                    attrs["nodes_falsenodeids"].append(int(tree.children_right[node]))
        consts = {
            "mean": self.mean_.astype(np.float32),
            "scale": self.scale_.astype(np.float32),
            "neg_ln2": np.array(-np.log(2.0), np.float32),
            "flat_shape": np.array([-1], np.int64),
        }
        n = helper.make_node
        nodes = [
            # Subtract and divide in float32, exactly as StandardScaler transforms a float32
            # array: the trees then compare the very same values as sklearn's.
            n("Sub", ["x", "mean"], ["xc"]),
            n("Div", ["xc", "scale"], ["z"]),
            n(
                "TreeEnsembleRegressor",
                ["z"],
                ["path_sum"],
                domain="ai.onnx.ml",
                n_targets=1,
                aggregate_function="SUM",
                post_transform="NONE",
                **attrs,
            ),
            n("Mul", ["path_sum", "neg_ln2"], ["log_score"]),
            n("Exp", ["log_score"], ["score_col"]),
            n("Reshape", ["score_col", "flat_shape"], ["score"]),
            n("Mul", ["z", "z"], ["contrib"]),
        ]
        graph = helper.make_graph(
            nodes,
            "isolation_forest",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, d])],
            [],
            [numpy_helper.from_array(v, k) for k, v in consts.items()],
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
        )
        model.ir_version = 8
        append_outputs(
            model,
            [("score", TensorProto.FLOAT, [None]), ("contrib", TensorProto.FLOAT, [None, d])],
        )
        return model.SerializeToString()

    def summary(self) -> dict[str, Any]:
        """Hyperparameters and the learned threshold, for the bundle's records."""
        return {"params": self.get_params(), "threshold": self.threshold_}


def _as_float32(X: np.ndarray) -> np.ndarray:
    # The trees compare float32 values (sklearn casts internally), and so does ONNX; feeding
    # float32 on both sides keeps the two scorings identical.
    return np.ascontiguousarray(X, dtype=np.float32)


def _average_path_length(n: np.ndarray | int) -> np.ndarray:
    """sklearn's c(n): the average path length of an unsuccessful search in a binary search
    tree of ``n`` samples, the expected depth still to go below a leaf of ``n`` samples."""
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        deep = 2.0 * (np.log(n - 1.0) + np.euler_gamma) - 2.0 * (n - 1.0) / n
    return np.where(n <= 1.0, 0.0, np.where(n <= 2.0, 1.0, deep))


def _float32_at_most(threshold: float) -> float:
    """The largest float32 not above ``threshold``. sklearn compares float32 inputs with
    float64 thresholds; for float32 ``x``, ``x <= t`` holds exactly when ``x`` is at most this
    value, so the float32 ONNX comparison takes the same branch every time."""
    t32 = np.float32(threshold)
    if float(t32) > threshold:
        t32 = np.nextafter(t32, np.float32(-np.inf))
    return float(t32)
