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
        self.epochs_run_: list[int] = []
        oof = np.zeros((len(y), 3))
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
        """Raw window in, calibrated RUL out: what is scored natively and exported."""
        keras = _keras()
        ops = keras.ops
        raw = keras.Input((self.window, d), name="window")
        z = (raw - self.mean_.astype(np.float32)) / self.scale_.astype(np.float32)
        outs = [core(z) for core in cores]
        mean = outs[0] if len(outs) == 1 else keras.layers.Average()(outs)
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
        parts: dict[str, list[np.ndarray]] = {"rul": [], "low": [], "high": []}
        for i in range(0, len(W), 4096):
            out = self.scoring_model_(W[i : i + 4096], training=False)
            for key, chunks in parts.items():
                chunks.append(keras.ops.convert_to_numpy(out[key]).reshape(-1))
        return {k: np.concatenate(v).astype(np.float64) for k, v in parts.items()}

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
            return path.read_bytes()

    def summary(self) -> dict[str, Any]:
        """Hyper-parameters and what was learned, for the bundle's records."""
        check_is_fitted(self, "scoring_model_")
        return {
            "params": self.get_params(),
            "calibration": self.calibration_,
            "oof_coverage": self.oof_coverage_,
            "oof_rmse": self.oof_rmse_,
            "epochs_run": self.epochs_run_,
            "runs": self.n_runs_,
            "windows": self.n_windows_,
        }
