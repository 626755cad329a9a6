"""Remaining-useful-life estimator: an ensemble of small networks on the last ``window`` readings,
with a point estimate and a calibrated interval. Keras 3 / TensorFlow, imported lazily.

Each member sees, per sensor, the window's mean, the mean of its last 5 readings and its
least-squares slope (computed inside the graph), then one dense layer (``architecture="stats"``,
the default). A 1D-CNN on the raw window (``"cnn"``, or both, ``"cnn+stats"``) is available; on
C-MAPSS FD001 it overfits the sensor noise (out-of-fold RMSE ~20 against ~14.5 for ``stats``, and
a held-out RMSE worse than a ridge regression on the same statistics), so it is not the default.

Each member is trained on the runs of all folds but one (folds are whole runs, never rows of one
run split between them) with three heads: the point estimate against the piecewise-linear target
``min(RUL, max_rul)`` (squared error; the early, healthy part of a run carries no signal of how
far failure is, so the literature caps it), and the ``(1 - interval)/2`` and ``(1 + interval)/2``
quantiles against the *true* RUL (pinball loss), so the interval is about the real remaining life
and widens upwards on a healthy machine instead of pretending to know it. The member's held-out
fold then calibrates the interval (conformalised quantile regression): the ensemble's interval is
the mean of the members' quantiles widened by the ``interval`` quantile of the out-of-fold
conformity scores ``max(low - y, y - high)``. The point estimate is the members' mean.

The exported graph (``to_onnx``) takes raw readings ``window`` (N, window, sensors) float32 and
does everything else inside: the standard scaling, the members, the mean, the calibration and
the clipping. Outputs ``rul``, ``low``, ``high`` (N,), in the unit of the training targets.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from models.rul.data import all_windows, countdown, last_window


def window_stats(Z: np.ndarray) -> np.ndarray:
    """Per sensor of scaled windows ``(n, window, d)``: the window's mean, the mean of its last
    5 readings and its least-squares slope times the window length (what the networks see)."""
    length = Z.shape[1]
    t = np.arange(length, dtype=np.float64)
    w = (t - t.mean()) / np.sum((t - t.mean()) ** 2) * length
    slope = np.einsum("nld,l->nd", Z.astype(np.float64), w)
    return np.concatenate([Z.mean(axis=1), Z[:, -5:].mean(axis=1), slope], axis=1).astype(
        np.float32
    )


def _keras() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


class RulEstimator(BaseEstimator):
    """``fit(runs)`` on run-to-failure histories; ``predict`` / ``predict_interval`` on windows
    ``(n, window, d)`` or on a list of histories (each scored at its last row)."""

    mean_: np.ndarray
    scale_: np.ndarray
    sensors_: list[str]
    scoring_model_: Any
    trees_: list[Any]
    calibration_: float
    oof_coverage_: float
    oof_rmse_: float
    n_runs_: int
    n_windows_: int

    def __init__(
        self,
        window: int = 50,
        max_rul: float = 125.0,
        interval: float = 0.8,
        members: int = 5,
        filters: int = 32,
        dense: int = 64,
        dropout: float = 0.2,
        epochs: int = 80,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        random_state: int = 42,
        # Epochs without a better loss on the member's held-out runs before its training
        # stops (the best weights are kept); 0 trains all ``epochs``.
        patience: int = 8,
        architecture: str = "stats",
        # Boosting stages of a gradient-boosted tree model per member on the same window
        # statistics (0: networks only), and its share of the point estimate; its shrinkage.
        trees: int = 0,
        tree_weight: float = 0.5,
        tree_depth: int = 4,
        tree_learning_rate: float = 0.1,
    ) -> None:
        self.window = window
        self.max_rul = max_rul
        self.interval = interval
        self.members = members
        self.filters = filters
        self.dense = dense
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.random_state = random_state
        self.patience = patience
        self.architecture = architecture
        self.trees = trees
        self.tree_weight = tree_weight
        self.tree_depth = tree_depth
        self.tree_learning_rate = tree_learning_rate

    # -- training ---------------------------------------------------------------------------

    def fit(
        self,
        runs: Sequence[np.ndarray],
        targets: Sequence[np.ndarray] | None = None,
        sensors: Sequence[str] | None = None,
    ) -> RulEstimator:
        """``runs``: histories ``(rows, d)`` in time order. ``targets``: the true remaining life
        at each row of each run; by default every run ends at failure and the target counts
        down to 0 in rows (cycles). ``sensors`` names the d columns (for the bundle)."""
        if not 0.0 < self.interval < 1.0:
            raise ValueError(f"interval: {self.interval} must be in (0, 1)")
        if self.trees < 0 or not 0.0 <= self.tree_weight <= 1.0:
            raise ValueError(
                f"trees: {self.trees}, tree_weight: {self.tree_weight}; need trees >= 0 and "
                "0 <= tree_weight <= 1"
            )
        if not self.tree_learning_rate > 0.0:
            raise ValueError(f"tree_learning_rate: {self.tree_learning_rate}, need > 0")
        if self.members < 2:
            raise ValueError(f"members: {self.members}; the interval needs at least 2 folds")
        if len(runs) < self.members:
            raise ValueError(f"runs: {len(runs)} runs, fewer than members={self.members}")
        runs = [np.asarray(r, dtype=np.float64) for r in runs]
        d = runs[0].shape[1]
        for i, r in enumerate(runs):
            if r.ndim != 2 or r.shape[1] != d or len(r) == 0:
                raise ValueError(f"runs[{i}]: shape {r.shape}, expected (rows >= 1, {d})")
        if targets is None:
            ys = [countdown(len(r)) for r in runs]
        else:
            ys = [np.asarray(t, dtype=np.float64) for t in targets]
            for i, (r, t) in enumerate(zip(runs, ys, strict=True)):
                if t.shape != (len(r),):
                    raise ValueError(f"targets[{i}]: shape {t.shape}, expected ({len(r)},)")
        self.sensors_ = list(sensors) if sensors is not None else [f"x{i}" for i in range(d)]
        if len(self.sensors_) != d:
            raise ValueError(f"sensors: {len(self.sensors_)} names for {d} columns")

        rows = np.concatenate(runs)
        self.mean_ = rows.mean(axis=0)
        std = rows.std(axis=0)
        # A sensor constant in training must not divide by zero at the edge.
        self.scale_ = np.where(std > 1e-9 * np.maximum(1.0, np.abs(self.mean_)), std, 1.0)

        keras = _keras()
        keras.utils.set_random_seed(self.random_state)
        rng = np.random.default_rng(self.random_state)
        fold_of_run = rng.permutation(len(runs)) % self.members
        windows = [all_windows((r - self.mean_) / self.scale_, self.window) for r in runs]
        run_id = np.concatenate([np.full(len(r), i) for i, r in enumerate(runs)])
        Z = np.concatenate(windows).astype(np.float32)
        y = np.concatenate(ys)
        fold = fold_of_run[run_id]

        cores: list[Any] = []
        self.trees_ = []
        self.epochs_run_: list[int] = []
        oof = np.zeros((len(y), 3))
        stats = window_stats(Z) if self.trees > 0 else None
        for k in range(self.members):
            train = fold != k
            core = self._core(d, name=f"member_{k}")
            core.compile(
                optimizer=keras.optimizers.Adam(self.learning_rate), loss=self._loss(keras)
            )
            target = (np.column_stack([np.minimum(y, self.max_rul), y]) / self.max_rul).astype(
                np.float32
            )
            held = ~train
            extra: dict[str, Any] = {}
            if self.patience > 0:
                extra["validation_data"] = (Z[held], target[held])
                extra["callbacks"] = [
                    keras.callbacks.EarlyStopping(patience=self.patience, restore_best_weights=True)
                ]
            history = core.fit(
                Z[train],
                target[train],
                epochs=self.epochs,
                batch_size=self.batch_size,
                shuffle=True,
                verbose=0,
                **extra,
            )
            self.epochs_run_.append(len(history.history["loss"]))
            oof[held] = self._run_core(core, Z[held]) * self.max_rul
            cores.append(core)
            if stats is not None:
                # Every other window: neighbours overlap in all but one row, so this halves
                # the boosting time and loses next to nothing.
                rows = np.flatnonzero(train)[::2]
                tree = self._tree(k).fit(stats[rows], np.minimum(y[rows], self.max_rul))
                self.trees_.append(tree)
                oof[held] = self._blend(oof[held], tree.predict(stats[held]))

        low, high = oof[:, 1], oof[:, 2]
        conformity = np.maximum(low - y, y - high)
        n = len(conformity)
        level = min(1.0, math.ceil((n + 1) * self.interval) / n)
        self.calibration_ = float(np.quantile(conformity, level, method="higher"))
        self.oof_coverage_ = float(
            np.mean((low - self.calibration_ <= y) & (y <= high + self.calibration_))
        )
        capped = np.minimum(y, self.max_rul)
        self.oof_rmse_ = float(np.sqrt(np.mean((np.clip(oof[:, 0], 0, None) - capped) ** 2)))
        self.n_runs_ = len(runs)
        self.n_windows_ = len(y)
        self.scoring_model_ = self._scoring_model(cores, d)
        return self

    def _tree(self, k: int) -> Any:
        from sklearn.ensemble import GradientBoostingRegressor

        return GradientBoostingRegressor(
            n_estimators=self.trees,
            max_depth=self.tree_depth,
            learning_rate=self.tree_learning_rate,
            subsample=0.8,
            min_samples_leaf=20,
            random_state=self.random_state + k,
        )

    def _blend(self, nn: np.ndarray, tree: np.ndarray) -> np.ndarray:
        """(point, low, high) of the networks with the point moved towards the trees' and the
        networks' quantiles moved with it (their spread around the point is what they learned;
        the conformal calibration then makes the blend's interval honest)."""
        w = float(self.tree_weight)
        point = (1.0 - w) * nn[:, 0] + w * np.asarray(tree, dtype=np.float64).reshape(-1)
        shift = point - nn[:, 0]
        return np.column_stack([point, nn[:, 1] + shift, nn[:, 2] + shift])

    def _core(self, d: int, name: str) -> Any:
        """One member on scaled windows: window statistics and/or three conv layers, a dense
        layer, three outputs (point, low, high) in units of ``max_rul``. The quantiles are the
        point plus/minus a non-negative offset, so they never cross it."""
        keras = _keras()
        ops = keras.ops
        z = keras.Input((self.window, d), name="z")
        parts = []
        if self.architecture in ("cnn", "cnn+stats"):
            h = keras.layers.Conv1D(self.filters, 5, padding="same", activation="relu")(z)
            h = keras.layers.Conv1D(self.filters, 5, padding="same", activation="relu")(h)
            h = keras.layers.Conv1D(self.filters // 2, 3, padding="same", activation="relu")(h)
            parts.append(keras.layers.Flatten()(h))
        if self.architecture in ("stats", "cnn+stats"):
            # Per-sensor level, recent level and least-squares slope over the window: the
            # noise averages out, which single readings of C-MAPSS sensors badly need.
            t = np.arange(self.window, dtype=np.float64)
            w = ((t - t.mean()) / np.sum((t - t.mean()) ** 2)).astype(np.float32)
            zt = ops.transpose(z, (0, 2, 1))
            slope = ops.reshape(ops.matmul(zt, w[:, None]), (-1, d)) * float(self.window)
            parts += [ops.mean(z, axis=1), ops.mean(z[:, -5:, :], axis=1), slope]
        if not parts:
            raise ValueError(f"architecture: {self.architecture!r} is not cnn, stats, cnn+stats")
        h = parts[0] if len(parts) == 1 else keras.layers.Concatenate()(parts)
        h = keras.layers.Dense(self.dense, activation="relu")(h)
        h = keras.layers.Dropout(self.dropout)(h)
        point = keras.layers.Dense(1)(h)
        offsets = keras.layers.Dense(2, activation="softplus")(h)
        out = keras.layers.Concatenate()([point, point - offsets[:, :1], point + offsets[:, 1:]])
        return keras.Model(z, out, name=name)

    def _loss(self, keras: Any) -> Any:
        ops = keras.ops
        q_low = (1.0 - self.interval) / 2.0
        q_high = 1.0 - q_low

        def pinball(err: Any, q: float) -> Any:
            return ops.mean(ops.maximum(q * err, (q - 1.0) * err))

        def loss(target: Any, out: Any) -> Any:
            capped, true = target[:, 0], target[:, 1]
            mse = ops.mean(ops.square(out[:, 0] - capped))
            return mse + pinball(true - out[:, 1], q_low) + pinball(true - out[:, 2], q_high)

        return loss

    def _run_core(self, core: Any, Z: np.ndarray) -> np.ndarray:
        keras = _keras()
        parts = [
            keras.ops.convert_to_numpy(core(Z[i : i + 4096], training=False))
            for i in range(0, len(Z), 4096)
        ]
        return np.concatenate(parts).astype(np.float64)

    def _scoring_model(self, cores: list[Any], d: int) -> Any:
        """Raw window in, calibrated RUL out: what is scored natively and exported. With trees,
        the networks' mean ``nn`` (N, 3, units of ``max_rul``) and the window statistics
        ``stats`` come out instead; the trees, the blend and the calibration follow (in numpy
        natively, as ONNX nodes appended by ``to_onnx`` at the edge)."""
        keras = _keras()
        ops = keras.ops
        raw = keras.Input((self.window, d), name="window")
        z = (raw - self.mean_.astype(np.float32)) / self.scale_.astype(np.float32)
        outs = [core(z) for core in cores]
        mean = outs[0] if len(outs) == 1 else keras.layers.Average()(outs)
        if self.trees > 0:
            t = np.arange(self.window, dtype=np.float64)
            w = ((t - t.mean()) / np.sum((t - t.mean()) ** 2) * self.window).astype(np.float32)
            slope = ops.reshape(ops.matmul(ops.transpose(z, (0, 2, 1)), w[:, None]), (-1, d))
            stats = keras.layers.Concatenate()(
                [ops.mean(z, axis=1), ops.mean(z[:, -5:, :], axis=1), slope]
            )
            model = keras.Model(raw, {"nn": mean, "stats": stats}, name="rul_ensemble_base")
        else:
            m, q = float(self.max_rul), float(self.calibration_)
            rul = ops.clip(mean[:, 0] * m, 0.0, m)
            low = ops.maximum(mean[:, 1] * m - q, 0.0)
            high = ops.maximum(mean[:, 2] * m + q, rul)
            low = ops.minimum(low, rul)
            model = keras.Model(raw, {"rul": rul, "low": low, "high": high}, name="rul_ensemble")
        # Keras exports only a model that has been called (it takes the input signature
        # from the call).
        model(np.zeros((1, self.window, d), dtype=np.float32), training=False)
        return model

    # -- prediction -------------------------------------------------------------------------

    def windows(self, X: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """``(n, window, d)`` raw windows: ``X`` as it is if it is one, else the last window of
        each history in the list."""
        if isinstance(X, np.ndarray) and X.ndim == 3:
            if X.shape[1:] != (self.window, len(self.mean_)):
                raise ValueError(
                    f"X: windows of shape {X.shape[1:]}, expected ({self.window}, "
                    f"{len(self.mean_)})"
                )
            return X.astype(np.float32)
        return np.stack([last_window(h, self.window) for h in X]).astype(np.float32)

    def _outputs(self, X: np.ndarray | Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        check_is_fitted(self, "scoring_model_")
        keras = _keras()
        W = self.windows(X)
        keys = ("nn", "stats") if getattr(self, "trees_", None) else ("rul", "low", "high")
        parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        for i in range(0, len(W), 4096):
            out = self.scoring_model_(W[i : i + 4096], training=False)
            for key, chunks in parts.items():
                chunks.append(keras.ops.convert_to_numpy(out[key]))
        if "rul" in parts:
            return {k: np.concatenate(v).reshape(-1).astype(np.float64) for k, v in parts.items()}
        m, q = float(self.max_rul), float(self.calibration_)
        stats = np.concatenate(parts["stats"]).astype(np.float32)
        tree = np.mean([t.predict(stats) for t in self.trees_], axis=0)
        blend = self._blend(np.concatenate(parts["nn"]).astype(np.float64) * m, tree)
        rul = np.clip(blend[:, 0], 0.0, m)
        high = np.maximum(blend[:, 2] + q, rul)
        low = np.minimum(np.maximum(blend[:, 1] - q, 0.0), rul)
        return {"rul": rul, "low": low, "high": high}

    def predict(self, X: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Remaining life at the end of each window / history (capped at ``max_rul``)."""
        return self._outputs(X)["rul"]

    def predict_interval(
        self, X: np.ndarray | Sequence[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(low, high): the calibrated ``interval`` range of the true remaining life."""
        out = self._outputs(X)
        return out["low"], out["high"]

    # -- export -----------------------------------------------------------------------------

    def to_onnx(self) -> bytes:
        """Input ``window`` (N, window, d) float32 raw readings; outputs ``rul``, ``low``,
        ``high`` (N,)."""
        check_is_fitted(self, "scoring_model_")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "rul.onnx"
            self.scoring_model_.export(str(path), format="onnx", verbose=False)
            graph = path.read_bytes()
        if getattr(self, "trees_", None):
            graph = self._graft_trees(graph)
        return graph

    def _graft_trees(self, base: bytes) -> bytes:
        """Append the members' trees (converted by skl2onnx), their mean, the blend with the
        networks and the calibration to the exported networks' graph (outputs ``nn``,
        ``stats``), so the edge still runs one graph with outputs ``rul``, ``low``, ``high``."""
        import onnx
        from onnx import TensorProto, helper, numpy_helper
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType

        model = onnx.load_from_string(base)
        g = model.graph
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        n_stats = 3 * len(self.mean_)
        tree_outs = []
        for k, member in enumerate(self.trees_):
            part = convert_sklearn(
                member,
                initial_types=[("stats", FloatTensorType([None, n_stats]))],
                target_opset={"": opset, "ai.onnx.ml": 3},
            )
            part = onnx.compose.add_prefix(part, f"tree{k}_")
            for op in part.graph.node:
                op.input[:] = ["stats" if i == f"tree{k}_stats" else i for i in op.input]
            g.node.extend(part.graph.node)
            g.initializer.extend(part.graph.initializer)
            tree_outs.append(part.graph.output[0].name)
        if not any(o.domain == "ai.onnx.ml" for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))

        m, q, w = float(self.max_rul), float(self.calibration_), float(self.tree_weight)

        def const(name: str, value: Any, dtype: Any = np.float32) -> str:
            g.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
            return name

        def node(op: str, inputs: list[str], output: str, **attrs: Any) -> str:
            g.node.append(helper.make_node(op, inputs, [output], name=f"blend_{output}", **attrs))
            return output

        node("Sum", tree_outs, "tree_sum")
        node("Reshape", ["tree_sum", const("flat", [-1], np.int64)], "tree_sum_flat")
        tree = node("Mul", ["tree_sum_flat", const("tree_w", w / len(tree_outs))], "tree_part")
        nn = node("Mul", ["nn", const("cap", m)], "nn_cycles")
        cols = [
            node("Gather", [nn, const(f"col{i}", i, np.int64)], f"nn_{i}", axis=1) for i in range(3)
        ]
        point = node(
            "Add", [node("Mul", [cols[0], const("nn_w", 1.0 - w)], "nn_part"), tree], "point"
        )
        shift = node("Sub", [point, cols[0]], "shift")
        zero, cap, calib = const("zero", 0.0), "cap", const("calib", q)
        rul = node("Min", [node("Max", [point, zero], "point_pos"), cap], "rul")
        low_raw = node("Sub", [node("Add", [cols[1], shift], "low_blend"), calib], "low_wide")
        low = node("Min", [node("Max", [low_raw, zero], "low_pos"), rul], "low")
        high_raw = node("Add", [node("Add", [cols[2], shift], "high_blend"), calib], "high_wide")
        high = node("Max", [high_raw, rul], "high")
        del g.output[:]
        g.output.extend(
            helper.make_tensor_value_info(name, TensorProto.FLOAT, [None])
            for name in (rul, low, high)
        )
        onnx.checker.check_model(model)
        return model.SerializeToString()

    def summary(self) -> dict[str, Any]:
        """Hyper-parameters and what was learned, for the bundle's records."""
        check_is_fitted(self, "scoring_model_")
        return {
            "params": self.get_params(),
            "calibration": self.calibration_,
            "oof_coverage": self.oof_coverage_,
            "oof_rmse": self.oof_rmse_,
            "epochs_run": self.epochs_run_,
            "trees": len(getattr(self, "trees_", [])),
            "runs": self.n_runs_,
            "windows": self.n_windows_,
        }
