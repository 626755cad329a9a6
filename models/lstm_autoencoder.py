"""LSTM autoencoder (manifest 6.3) in Keras 3 / TensorFlow, with a forecasting head.

One encoder reads a window of ``sequence_length`` scaled readings into ``encoding_dim`` numbers;
a decoder reconstructs the window from them, and a dense head predicts the next
``prediction_horizon`` readings. The anomaly score of the reading that ends a window is the
mean squared reconstruction error of that window (per sensor, so the error shares name the
contributing sensors); the threshold is the ``threshold_percentile`` of the training scores.

TensorFlow is imported lazily: ``import models`` must stay light for tools that only need the
numpy side.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.features import sliding_windows
from models.strategies import probability_ahead


@dataclass(frozen=True, slots=True)
class LSTMConfig:
    sequence_length: int = 20
    encoding_dim: int = 32
    threshold_percentile: float = 95.0
    min_readings: int = 100
    prediction_horizon: int = 10
    # 15 epochs over ~370 windows: enough to reconstruct normal data; more overfits the
    # training part and widens the gap to unseen normal data (more false alarms on SKAB).
    epochs: int = 15
    batch_size: int = 32
    learning_rate: float = 3e-3
    random_state: int = 42
    # Weight of the forecasting loss next to the reconstruction loss: the forecast is a
    # secondary output and must not pull the encoding away from what reconstruction needs.
    forecast_weight: float = 0.5
    # Epochs without a better validation loss before training stops (only with validation
    # data, see LSTMAutoencoder.fit).
    patience: int = 3


def _keras() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


class LSTMAutoencoder:
    name = "lstm"

    def __init__(self, config: LSTMConfig | None = None) -> None:
        self.config = config or LSTMConfig()
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.scoring_model_: Any = None
        self.threshold_: float = float("nan")
        self.forecast_threshold_: float = float("nan")
        self.train_loss_: float = float("nan")
        self.val_loss_: float = float("nan")
        self.epochs_run_: int = 0

    # -- training ---------------------------------------------------------------------------

    def fit(self, X: np.ndarray, validation: np.ndarray | None = None) -> LSTMAutoencoder:
        """Fit on ``X`` (rows in time order). With ``validation`` (later rows, unseen), training
        stops once the validation loss has not improved for ``patience`` epochs and keeps the
        best epoch's weights: on drifting data further epochs only memorise the training
        part's drift states and widen the gap to unseen normal data."""
        keras = _keras()
        cfg = self.config
        X = np.asarray(X, dtype=np.float64)
        if len(X) < max(cfg.min_readings, cfg.sequence_length + cfg.prediction_horizon + 1):
            raise ValueError(f"LSTM autoencoder needs at least {cfg.min_readings} readings")
        self.mean_ = X.mean(axis=0)
        self.scale_ = np.where(X.std(axis=0) > 1e-12, X.std(axis=0), 1.0)
        Z = ((X - self.mean_) / self.scale_).astype(np.float32)
        L, H, d = cfg.sequence_length, cfg.prediction_horizon, X.shape[1]
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
                    monitor="val_loss", patience=cfg.patience, restore_best_weights=True
                )
            ]

        keras.utils.set_random_seed(cfg.random_state)
        z_in = keras.Input((L, d), name="z")
        encoding = keras.layers.LSTM(cfg.encoding_dim, name="encoder")(z_in)
        repeated = keras.layers.RepeatVector(L)(encoding)
        decoded = keras.layers.LSTM(cfg.encoding_dim, return_sequences=True, name="decoder")(
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
            optimizer=keras.optimizers.Adam(cfg.learning_rate),
            loss={"recon": "mse", "forecast": "mse"},
            loss_weights={"recon": 1.0, "forecast": cfg.forecast_weight},
        )
        history = core.fit(
            inputs,
            {"recon": inputs, "forecast": future},
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            shuffle=True,
            verbose=0,
            **fit_extra,
        )
        self.train_loss_ = float(history.history["loss"][-1])
        self.epochs_run_ = len(history.history["loss"])
        if "val_loss" in history.history:
            self.val_loss_ = float(np.min(history.history["val_loss"]))
        self.scoring_model_ = self._scoring_model(core, L, d)

        train_scores = self.score_samples(X)
        self.threshold_ = float(np.nanpercentile(train_scores, cfg.threshold_percentile))
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
        self._check_fitted()
        w = np.ascontiguousarray(windows, dtype=np.float32)
        if len(w) == 0:
            d = len(self.mean_)
            return np.zeros((0, d)), np.zeros((0, self.config.prediction_horizon, d))
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

    def _per_row(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X, dtype=np.float64)
        L, H, d = self.config.sequence_length, self.config.prediction_horizon, X.shape[1]
        errors = np.full((len(X), d), np.nan)
        forecasts = np.full((len(X), H, d), np.nan)
        if len(X) >= L:
            e, f = self.run_windows(sliding_windows(X, L))
            errors[L - 1 :] = e
            forecasts[L - 1 :] = f
        return errors, forecasts

    def sensor_errors(self, X: np.ndarray) -> np.ndarray:
        """Per-sensor error of the window ending at each row; NaN for the first L-1 rows."""
        return self._per_row(X)[0]

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        return self.sensor_errors(X).mean(axis=1)

    def decision(self, X: np.ndarray) -> np.ndarray:
        return self.score_samples(X) / self.threshold_

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.decision(X) > 1.0

    def contributions(self, X: np.ndarray) -> np.ndarray:
        errors = self.sensor_errors(X)
        total = errors.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return errors / total

    def forecast(self, X: np.ndarray) -> np.ndarray:
        """Next ``prediction_horizon`` readings after each row, in raw units."""
        f = self._per_row(X)[1]
        return f * self.scale_ + self.mean_

    def probability_ahead(self, X: np.ndarray) -> np.ndarray:
        f = self._per_row(X)[1]
        return probability_ahead(f, self.forecast_threshold_)

    # -- export -----------------------------------------------------------------------------

    def to_onnx(self) -> bytes:
        """Input ``window`` (N, L, d) float32 raw values; outputs ``sensor_error`` (N, d) and
        ``forecast`` (N, H, d) in z units."""
        self._check_fitted()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "lstm.onnx"
            self.scoring_model_.export(str(path), format="onnx", verbose=False)
            return path.read_bytes()

    def params(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "threshold": self.threshold_,
            "forecast_threshold": self.forecast_threshold_,
            "train_loss": self.train_loss_,
            "val_loss": self.val_loss_,
            "epochs_run": self.epochs_run_,
        }

    def _check_fitted(self) -> None:
        if self.scoring_model_ is None:
            raise RuntimeError("model is not fitted")
