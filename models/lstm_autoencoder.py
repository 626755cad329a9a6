"""LSTM autoencoder in Keras 3 / TensorFlow, with a forecasting head.

One encoder reads a window of ``sequence_length`` scaled readings into ``encoding_dim`` numbers;
a decoder reconstructs the window from them, and a dense head predicts the next
``prediction_horizon`` readings. The anomaly score of the reading that ends a window is the
mean squared reconstruction error of that window (per sensor, so the error shares name the
contributing sensors); the threshold is the ``threshold_percentile`` of the training scores.
Scores use the vocabulary of ``models.isolation_forest`` (``anomaly_score``,
``normalized_score``, ``is_anomaly``; larger is more anomalous).

TensorFlow is imported lazily: ``import models.lstm_autoencoder`` must stay light for tools
that only build configurations.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from detector.features import sliding_windows
from detector.strategies import probability_ahead, shares


def _keras() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


class LSTMAutoencoder(BaseEstimator):
    name = "lstm"

    mean_: np.ndarray
    scale_: np.ndarray
    scoring_model_: Any
    threshold_: float
    forecast_threshold_: float
    train_loss_: float
    val_loss_: float
    epochs_run_: int

    def __init__(
        self,
        sequence_length: int = 20,
        encoding_dim: int = 32,
        threshold_percentile: float = 95.0,
        min_readings: int = 100,
        prediction_horizon: int = 10,
        # 15 epochs over ~370 windows: enough to reconstruct normal data; more overfits the
        # training part and widens the gap to unseen normal data (more false alarms on SKAB).
        epochs: int = 15,
        batch_size: int = 32,
        learning_rate: float = 3e-3,
        random_state: int = 42,
        # Weight of the forecasting loss next to the reconstruction loss: the forecast is a
        # secondary output and must not pull the encoding away from what reconstruction needs.
        forecast_weight: float = 0.5,
        # Epochs without a better validation loss before training stops (only with
        # validation data, see fit).
        patience: int = 3,
    ) -> None:
        self.sequence_length = sequence_length
        self.encoding_dim = encoding_dim
        self.threshold_percentile = threshold_percentile
        self.min_readings = min_readings
        self.prediction_horizon = prediction_horizon
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.random_state = random_state
        self.forecast_weight = forecast_weight
        self.patience = patience

    # -- training ---------------------------------------------------------------------------

    def fit(self, X: np.ndarray, validation: np.ndarray | None = None) -> LSTMAutoencoder:
        """Fit on ``X`` (rows in time order). With ``validation`` (later rows, unseen), training
        stops once the validation loss has not improved for ``patience`` epochs and keeps the
        best epoch's weights: on drifting data further epochs only memorise the training
        part's drift states and widen the gap to unseen normal data."""
        keras = _keras()
        X = np.asarray(X, dtype=np.float64)
        if len(X) < max(self.min_readings, self.sequence_length + self.prediction_horizon + 1):
            raise ValueError(f"LSTM autoencoder needs at least {self.min_readings} readings")
        self.mean_ = X.mean(axis=0)
        self.scale_ = np.where(X.std(axis=0) > 1e-12, X.std(axis=0), 1.0)
        Z = ((X - self.mean_) / self.scale_).astype(np.float32)
        L, H, d = self.sequence_length, self.prediction_horizon, X.shape[1]
        windows = sliding_windows(Z, L + H)
        inputs = np.ascontiguousarray(windows[:, :L])
        future = np.ascontiguousarray(windows[:, L:])
        fit_extra: dict[str, Any] = {}
        if validation is not None and len(validation) >= L + H:
            Zv = ((np.asarray(validation, dtype=np.float64) - self.mean_) / self.scale_).astype(
                np.float32
            )
            vw = sliding_windows(Zv, L + H)
            v_in = np.ascontiguousarray(vw[:, :L])
            fit_extra["validation_data"] = (
                v_in,
                {"recon": v_in, "forecast": np.ascontiguousarray(vw[:, L:])},
            )
            fit_extra["callbacks"] = [
                keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=self.patience, restore_best_weights=True
                )
            ]

        keras.utils.set_random_seed(self.random_state)
        z_in = keras.Input((L, d), name="z")
        encoding = keras.layers.LSTM(self.encoding_dim, name="encoder")(z_in)
        repeated = keras.layers.RepeatVector(L)(encoding)
        decoded = keras.layers.LSTM(self.encoding_dim, return_sequences=True, name="decoder")(
            repeated
        )
        # Dense on the (N, L, units) sequence maps every step with the same weights, as
        # TimeDistributed(Dense) would; unlike it, it exports as one MatMul instead of one
        # Slice/MatMul/Add chain per time step (a third of the edge's LSTM time).
        recon = keras.layers.Dense(d, name="recon")(decoded)
        forecast = keras.layers.Reshape((H, d), name="forecast")(
            keras.layers.Dense(H * d, name="forecast_head")(encoding)
        )
        core = keras.Model(z_in, {"recon": recon, "forecast": forecast}, name="lstm_ae")
        core.compile(
            optimizer=keras.optimizers.Adam(self.learning_rate),
            loss={"recon": "mse", "forecast": "mse"},
            loss_weights={"recon": 1.0, "forecast": self.forecast_weight},
        )
        history = core.fit(
            inputs,
            {"recon": inputs, "forecast": future},
            epochs=self.epochs,
            batch_size=self.batch_size,
            shuffle=True,
            verbose=0,
            **fit_extra,
        )
        self.train_loss_ = float(history.history["loss"][-1])
        self.epochs_run_ = len(history.history["loss"])
        self.val_loss_ = (
            float(np.min(history.history["val_loss"]))
            if "val_loss" in history.history
            else float("nan")
        )
        self.scoring_model_ = self._scoring_model(core, L, d)

        train_scores = self.anomaly_score(X)
        self.threshold_ = float(np.nanpercentile(train_scores, self.threshold_percentile))
        energy = np.mean(Z.astype(np.float64) ** 2, axis=1)
        # The forecast is judged against how far real training readings stray from the mean:
        # a predicted excursion beyond the 99th percentile of that is "an anomaly ahead".
        self.forecast_threshold_ = float(np.percentile(energy, 99.0))
        return self

    def _scoring_model(self, core: Any, L: int, d: int) -> Any:
        """The graph that is scored natively and exported: raw window in, per-sensor
        reconstruction error (z units) and the forecast (z units) out.

        The scaling ``z = x * s + o`` is folded into the weights instead of being applied to
        every value of every window: the encoder's input kernel becomes ``s * W`` (bias
        ``b + o W``), the reconstruction is produced in raw units (kernel ``W / s``, bias
        ``(b - o) / s``), and the squared error is rescaled per sensor after the mean over
        the window, ``s² mean((x̂ - x)²)``. Same numbers, but at the edge three elementwise
        passes over (N, L, d) windows less, and the reconstruction runs as one 2-D Gemm with
        its bias fused: a fifth of the LSTM graph's time."""
        keras = _keras()
        s = (1.0 / self.scale_).astype(np.float64)
        o = (-self.mean_ / self.scale_).astype(np.float64)
        encoder, decoder = core.get_layer("encoder"), core.get_layer("decoder")
        kernel, recurrent, bias = encoder.get_weights()
        raw_encoder = keras.layers.LSTM(encoder.units, name="encoder_raw")
        recon_kernel, recon_bias = core.get_layer("recon").get_weights()
        raw_recon = keras.layers.Dense(d, name="recon_raw")

        raw = keras.Input((L, d), name="window")
        encoding = raw_encoder(raw)
        decoded = decoder(keras.layers.RepeatVector(L)(encoding))
        flat = keras.ops.reshape(decoded, (-1, decoder.units))
        recon = keras.ops.reshape(raw_recon(flat), (-1, L, d))
        mse_raw = keras.ops.mean(keras.ops.square(recon - raw), axis=1)
        err = mse_raw * (s * s).astype(np.float32)
        forecast = core.get_layer("forecast")(core.get_layer("forecast_head")(encoding))

        raw_encoder.set_weights(
            [
                (kernel * s[:, None]).astype(np.float32),
                recurrent,
                (bias + o @ kernel).astype(np.float32),
            ]
        )
        raw_recon.set_weights(
            [(recon_kernel / s).astype(np.float32), ((recon_bias - o) / s).astype(np.float32)]
        )
        return keras.Model(raw, {"sensor_error": err, "forecast": forecast})

    # -- scoring ----------------------------------------------------------------------------

    def run_windows(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(n, L, d)`` raw windows -> per-sensor errors ``(n, d)``, forecasts ``(n, H, d)``."""
        check_is_fitted(self, "scoring_model_")
        w = np.ascontiguousarray(windows, dtype=np.float32)
        if len(w) == 0:
            d = len(self.mean_)
            return np.zeros((0, d)), np.zeros((0, self.prediction_horizon, d))
        keras = _keras()
        errors, forecasts = [], []
        # A direct call rather than predict(): predict retraces its tf.function for every new
        # input length, which is slow and floods the log with retracing warnings.
        for start in range(0, len(w), 4096):
            out = self.scoring_model_(w[start : start + 4096], training=False)
            errors.append(keras.ops.convert_to_numpy(out["sensor_error"]))
            forecasts.append(keras.ops.convert_to_numpy(out["forecast"]))
        return (
            np.concatenate(errors).astype(np.float64),
            np.concatenate(forecasts).astype(np.float64),
        )

    def row_outputs(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-sensor errors ``(n, d)`` and forecasts ``(n, H, d)`` (z units) of the window
        ending at each row of ``X`` (rows in time order); NaN for the first L-1 rows."""
        X = np.asarray(X, dtype=np.float64)
        L, H, d = self.sequence_length, self.prediction_horizon, X.shape[1]
        errors = np.full((len(X), d), np.nan)
        forecasts = np.full((len(X), H, d), np.nan)
        if len(X) >= L:
            e, f = self.run_windows(sliding_windows(X, L))
            errors[L - 1 :] = e
            forecasts[L - 1 :] = f
        return errors, forecasts

    def sensor_errors(self, X: np.ndarray) -> np.ndarray:
        """Per-sensor error of the window ending at each row; NaN for the first L-1 rows."""
        return self.row_outputs(X)[0]

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        """Mean squared reconstruction error (z units) of the window ending at each row; NaN
        for the first L-1 rows."""
        return self.sensor_errors(X).mean(axis=1)

    def normalized_score(self, X: np.ndarray) -> np.ndarray:
        return self.anomaly_score(X) / self.threshold_

    def is_anomaly(self, X: np.ndarray) -> np.ndarray:
        """``normalized_score > 1``; False for the first L-1 rows (no window yet)."""
        return np.nan_to_num(self.normalized_score(X)) > 1.0

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-sensor share of each window's error (all 0 before the first window)."""
        return shares(self.sensor_errors(X))

    def forecast(self, X: np.ndarray) -> np.ndarray:
        """Next ``prediction_horizon`` readings after each row, in raw units."""
        f = self.row_outputs(X)[1]
        return f * self.scale_ + self.mean_

    def probability_ahead(self, X: np.ndarray) -> np.ndarray:
        f = self.row_outputs(X)[1]
        return probability_ahead(f, self.forecast_threshold_)

    # -- export -----------------------------------------------------------------------------

    def to_onnx(self) -> bytes:
        """Input ``window`` (N, L, d) float32 raw values; outputs ``sensor_error`` (N, d) and
        ``forecast`` (N, H, d) in z units."""
        check_is_fitted(self, "scoring_model_")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "lstm.onnx"
            self.scoring_model_.export(str(path), format="onnx", verbose=False)
            return path.read_bytes()

    def summary(self) -> dict[str, Any]:
        """Hyperparameters and what was learned, for the bundle's records."""
        check_is_fitted(self, "scoring_model_")
        return {
            "params": self.get_params(),
            "threshold": self.threshold_,
            "forecast_threshold": self.forecast_threshold_,
            "train_loss": self.train_loss_,
            "val_loss": self.val_loss_,
            "epochs_run": self.epochs_run_,
        }
