"""The hybrid detector: Isolation Forest + LSTM autoencoder (+ PCA T²/Q) behind the six
strategies of ``detector.strategies``, with the decision calibrated on the training data.

Pipeline for a stream of readings ``X`` (rows in time order, columns = ``sensors``):

1. keep the sensors that are stationary over the training part
   (``detector.features.stationary_mask``);
2. each component scores every reading; scores are normalised by the component's own
   training threshold (1.0 = at threshold);
3. the strategy combines them (``detector.strategies.combine``);
4. the combined score is averaged over the last ``smooth_window`` readings, and divided by
   the strategy's decision threshold. The result is the reported score; above 1.0 is an
   anomaly.

The decision threshold is a factor times a quantile of the smoothed score over data the
models were fitted on (the in-sample level, with head-room factors tuned on SKAB, where a
file gives 400 training rows) and, when the training part is long enough, at least the same
quantile over its newest ``calibration_fraction``, held back from the component fits. Models
score their own training data better than unseen normal data, and how much better depends on
the data: on slowly drifting signals (the simulator's, a real rig's) the PCA residual
subspace and the LSTM learn the few drift states seen in training, and unseen normal data
scores 2-3 times the training maximum. Only held-back data measures that gap.

Scores use the vocabulary of ``models.isolation_forest``: ``anomaly_score`` (larger is more
anomalous; here already divided by the decision threshold, so above 1.0 is an anomaly) and
``is_anomaly``. ``HybridDetector`` is a scikit-learn estimator with one hyperparameter, its
``EnsembleConfig`` (nested and SKAB-tuned, so kept as one value); the components inside the
config are unfitted estimators that ``fit`` clones, as scikit-learn's meta-estimators do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from detector import strategies as st
from detector.checks import FaultChecks, with_checks
from detector.drift import fit_drift
from detector.features import stationary_mask, trailing_mean
from detector.stuck import fit_stuck
from models.isolation_forest import IsolationForestModel
from models.lstm_autoencoder import LSTMAutoencoder
from models.pca_model import PcaT2QModel

log = logging.getLogger(__name__)

DEFAULT_STRATEGY = "hybrid_smart"


def _default_weights() -> dict[str, float]:
    # Prior weights for hybrid_smart, tuned on SKAB valve1 (see models/evaluate.py); the
    # calibration step rescales them by each component's spread on the training data. F1 on
    # valve1 stays within 0.83-0.84 for weights anywhere between 0.2 and 0.5 each.
    return {st.ISOLATION_FOREST: 0.3, st.LSTM: 0.3, st.PCA: 0.4}


def _default_strategy_factors() -> dict[str, float]:
    # Head-room above the training maximum of each strategy's smoothed score, tuned on SKAB
    # valve1. Models score their own training data better than unseen normal data, the LSTM
    # most (hybrid_smart at 1.0: FAR 30 %, at 1.15: 9 % for 10 points more MAR). The
    # Isolation Forest's score saturates, so it has no head-room to spare.
    return {
        st.ISOLATION_FOREST: 1.02,
        st.PCA: 1.0,
        st.LSTM: 1.2,
        "hybrid_or": 1.15,
        "hybrid_and": 1.05,
        "hybrid_smart": 1.15,
    }


@dataclass(frozen=True)
class EnsembleConfig:
    strategy: str = DEFAULT_STRATEGY
    components: tuple[str, ...] = st.COMPONENTS
    weights: dict[str, float] = field(default_factory=_default_weights)
    calibrate_weights: bool = True
    smooth_window: int = 20
    decision_quantile: float = 1.0
    # Multiplies every strategy's threshold: above 1 fewer alarms, below 1 more.
    decision_factor: float = 1.0
    strategy_factors: dict[str, float] = field(default_factory=_default_strategy_factors)
    drift_lag: int = 10
    # A sensor must show at least this many decorrelation times over the training part to be
    # used (features.stationary_mask); 20 is the former lag-10 autocorrelation cut of 0.6 on
    # SKAB's 400 training rows.
    drift_min_cycles: float = 20.0
    # Newest share of the training part held back from the component fits to set the
    # decision thresholds on unseen normal data, when it gives at least min_calibration_rows
    # (fewer rows give too noisy a maximum: then the in-sample rule alone decides).
    calibration_fraction: float = 0.2
    min_calibration_rows: int = 300
    # Head-room above the held-back level: the block is short next to a model's service life,
    # so later normal data reaches somewhat beyond its maximum.
    calibration_factor: float = 1.1
    # Per-sensor fault checks beside the models (detector.checks): stuck sensors and slow
    # drift, their limits learned from the training rows. Drift needs a long training part
    # (detector.drift.fit_drift: none below drift_min_rows, e.g. SKAB's 400).
    stuck_check: bool = True
    drift_check: bool = False
    drift_min_rows: int = 1000
    drift_alpha: float = 0.05
    drift_head_room: float = 2.0
    # Unfitted components with their hyperparameters (cloned by HybridDetector.fit, so one
    # config can train many detectors), e.g. ``EnsembleConfig(lstm=LSTMAutoencoder(epochs=3))``.
    isolation_forest: IsolationForestModel = field(default_factory=IsolationForestModel)
    lstm: LSTMAutoencoder = field(default_factory=LSTMAutoencoder)
    pca: PcaT2QModel = field(default_factory=PcaT2QModel)


Component = IsolationForestModel | LSTMAutoencoder | PcaT2QModel
COMPONENT_FIELDS = (st.ISOLATION_FOREST, st.LSTM, st.PCA)


@dataclass
class StreamScores:
    """Everything the ensemble computes for a stream, per reading."""

    normalized: dict[str, np.ndarray]  # component -> (n,)
    shares: dict[str, np.ndarray]  # component -> (n, d)
    probability_ahead: np.ndarray | None  # (n,) or None without LSTM
    # Per-sensor scores of the fault checks (n, d), None without checks.
    checks: np.ndarray | None = None


class HybridDetector(BaseEstimator):
    """Learned state (after ``fit``): ``config_`` (the config in effect), ``sensors_`` (the
    training columns), ``features_`` and ``feature_mask_`` (the sensors the models use),
    ``fill_values_``, ``models_`` (fitted components by name), ``weights_``,
    ``strategy_thresholds_``, ``n_train_``, ``n_calibration_``, ``calibration_levels_``."""

    config_: EnsembleConfig
    sensors_: list[str]
    features_: list[str]
    feature_mask_: np.ndarray
    fill_values_: np.ndarray
    models_: dict[str, Component]
    weights_: dict[str, float]
    strategy_thresholds_: dict[str, float]
    n_train_: int
    n_calibration_: int
    calibration_levels_: dict[str, float]
    checks_: FaultChecks

    def __init__(self, config: EnsembleConfig | None = None) -> None:
        self.config = config

    # -- training ---------------------------------------------------------------------------

    def fit(self, X: np.ndarray, sensors: list[str] | None = None) -> HybridDetector:
        cfg = self.config_ = self.config if self.config is not None else EnsembleConfig()
        X = np.asarray(X, dtype=np.float64)
        self.sensors_ = (
            list(sensors) if sensors is not None else [f"x{i}" for i in range(X.shape[1])]
        )
        if len(self.sensors_) != X.shape[1]:
            raise ValueError("sensors: one sensor name per column is needed")
        if not np.all(np.isfinite(X)):
            raise ValueError("training data must be finite (fill or drop missing values first)")
        unknown = [name for name in cfg.components if name not in COMPONENT_FIELDS]
        if unknown:
            raise ValueError(
                f"components: unknown {', '.join(unknown)}; expected {', '.join(COMPONENT_FIELDS)}"
            )
        mask = stationary_mask(X, cfg.drift_lag, cfg.drift_min_cycles)
        self.feature_mask_ = mask
        self.features_ = [s for s, keep in zip(self.sensors_, mask, strict=True) if keep]
        excluded = [s for s, keep in zip(self.sensors_, mask, strict=True) if not keep]
        if excluded:
            log.info("sensors left out as non-stationary or constant: %s", ", ".join(excluded))
        Xf = X[:, mask]
        self.fill_values_ = Xf.mean(axis=0)
        self.n_train_ = len(X)
        n_cal = self._calibration_rows(len(X))
        self.n_calibration_ = n_cal
        fit_rows = len(X) - n_cal
        calibration = Xf[fit_rows:] if n_cal else None

        self.checks_ = self._fit_checks(Xf)
        self.models_ = {}
        for name in cfg.components:
            # The config's field of the same name holds the unfitted component.
            model = clone(getattr(cfg, name))
            if isinstance(model, LSTMAutoencoder):
                # The held-back rows also stop the LSTM's training once it no longer improves
                # on unseen data (it would otherwise learn the training part's drift states).
                model.fit(Xf[:fit_rows], validation=calibration)
            else:
                model.fit(Xf[:fit_rows])
            self.models_[name] = model

        # The whole training stream in time order: the held-back rows get their LSTM window
        # and smoothing history from the rows before them, as they would in service.
        scores = self._scores(Xf)
        warmup = self._warmup()
        in_sample = slice(warmup if fit_rows > warmup + 10 else 0, fit_rows)
        held_back = slice(fit_rows + cfg.smooth_window - 1, None)
        spread_rows = held_back if n_cal else slice(None)
        self.weights_ = self._calibrated_weights(
            {k: v[spread_rows] for k, v in scores.normalized.items()}
        )
        self.calibration_levels_ = {}
        self.strategy_thresholds_ = {}
        for strategy in self.available_strategies():
            smoothed = trailing_mean(
                st.combine(strategy, scores.normalized, self.weights_), cfg.smooth_window
            )
            strategy_factor = cfg.strategy_factors.get(strategy, 1.0)
            level_in = _level(smoothed[in_sample], cfg.decision_quantile)
            threshold = level_in * strategy_factor
            if n_cal:
                # The level unseen normal data reaches, measured on the held-back block. A
                # saturating score (the forest's) keeps its smaller head-room.
                level = _level(smoothed[held_back], cfg.decision_quantile)
                self.calibration_levels_[strategy] = level
                head_room = min(cfg.calibration_factor, max(strategy_factor, 1.0))
                threshold = max(threshold, level * head_room)
            self.strategy_thresholds_[strategy] = max(threshold * cfg.decision_factor, 1e-12)
        return self

    def _fit_checks(self, Xf: np.ndarray) -> FaultChecks:
        cfg = self.config_
        d = Xf.shape[1]
        stuck = fit_stuck(Xf) if cfg.stuck_check else None
        drift = (
            fit_drift(Xf, cfg.drift_alpha, cfg.drift_head_room, cfg.drift_min_rows)
            if cfg.drift_check
            else None
        )
        return FaultChecks(d, stuck, drift)

    def _calibration_rows(self, n: int) -> int:
        cfg = self.config_
        rows = int(n * cfg.calibration_fraction)
        # The fit part must keep at least as many rows as the calibration needs on its own.
        if rows < cfg.min_calibration_rows or n - rows < cfg.min_calibration_rows:
            return 0
        return rows

    def _warmup(self) -> int:
        """Training rows whose smoothed score is not yet representative (LSTM window and the
        smoothing window still filling)."""
        lstm = self.models_.get(st.LSTM)
        run_up = lstm.sequence_length - 1 if isinstance(lstm, LSTMAutoencoder) else 0
        return run_up + self.config_.smooth_window - 1

    def _calibrated_weights(self, normalized: dict[str, np.ndarray]) -> dict[str, float]:
        prior = {n: self.config_.weights.get(n, 0.0) for n in self.models_}
        if not self.config_.calibrate_weights:
            weights = prior
        else:
            # Divide each prior by the component's spread on normal data so that a component
            # with a noisy normal score does not dominate the mean by its noise alone.
            weights = {}
            for name, p in prior.items():
                spread = float(np.nanstd(normalized[name]))
                weights[name] = p / spread if spread > 1e-9 else p
        total = sum(weights.values())
        return {n: w / total for n, w in weights.items()} if total > 0 else prior

    def available_strategies(self) -> list[str]:
        check_is_fitted(self)
        have = set(self.models_)
        out = [s for s in st.COMPONENTS if s in have]
        if set(st.PAIR) <= have:
            out += ["hybrid_or", "hybrid_and"]
        if len(have) > 1:
            out.append("hybrid_smart")
        return out

    # -- scoring ----------------------------------------------------------------------------

    def select(self, X: np.ndarray) -> np.ndarray:
        """Model features from full sensor rows, missing values (NaN) filled with the training
        mean."""
        check_is_fitted(self)
        Xf = np.asarray(X, dtype=np.float64)[:, self.feature_mask_]
        return np.where(np.isnan(Xf), self.fill_values_, Xf)

    def _scores(self, Xf: np.ndarray, raw: np.ndarray | None = None) -> StreamScores:
        """Component scores of feature rows ``Xf`` (gaps filled); the fault checks run on
        ``raw``, the same rows with gaps as NaN, as the bundle scorer runs them before it
        fills gaps (no checks when None, e.g. while fitting)."""
        normalized: dict[str, np.ndarray] = {}
        shares: dict[str, np.ndarray] = {}
        prob = None
        for name, model in self.models_.items():
            if isinstance(model, LSTMAutoencoder):
                # One pass for the scores, the shares and the forecast.
                errors, forecast = model.row_outputs(Xf)
                normalized[name] = errors.mean(axis=1) / model.threshold_
                shares[name] = st.shares(errors)
                prob = st.probability_ahead(forecast, model.forecast_threshold_)
            else:
                normalized[name] = model.normalized_score(Xf)
                shares[name] = model.contributions(Xf)
        checks = None
        if raw is not None and getattr(self, "checks_", None) is not None and self.checks_.active:
            checks = self.checks_.scores(raw, self.checks_.new_state())
        return StreamScores(normalized, shares, prob, checks)

    def stream_scores(self, X: np.ndarray) -> StreamScores:
        """Component scores (and fault-check scores) for full sensor rows ``X`` in time
        order, as one fresh stream."""
        check_is_fitted(self)
        raw = np.asarray(X, dtype=np.float64)[:, self.feature_mask_]
        raw = np.where(np.isfinite(raw), raw, np.nan)
        return self._scores(self.select(X), raw)

    def strategy_scores(self, scores: StreamScores, strategy: str | None = None) -> np.ndarray:
        """Reported score per reading for ``strategy`` (> 1 = anomaly)."""
        strategy = strategy or self.config_.strategy
        combined = st.combine(strategy, scores.normalized, self.weights_)
        hybrid = (
            trailing_mean(combined, self.config_.smooth_window)
            / self.strategy_thresholds_[strategy]
        )
        return with_checks(hybrid, scores.checks)

    def anomaly_score(self, X: np.ndarray, strategy: str | None = None) -> np.ndarray:
        """The score the edge reports for each row of ``X`` (rows in time order): above 1.0
        is an anomaly, NaN while no component has an opinion yet."""
        return self.strategy_scores(self.stream_scores(X), strategy)

    def is_anomaly(self, X: np.ndarray, strategy: str | None = None) -> np.ndarray:
        return np.nan_to_num(self.anomaly_score(X, strategy)) > 1.0

    def explain(self, X: np.ndarray, strategy: str | None = None) -> np.ndarray:
        """Per-feature share of each reading's anomaly ``(n, len(features_))``."""
        strategy = strategy or self.config_.strategy
        scores = self.stream_scores(X)
        return st.combine_shares(strategy, scores.normalized, scores.shares, self.weights_)

    def summary(self) -> dict[str, Any]:
        check_is_fitted(self)
        return {
            "sensors": self.sensors_,
            "features": self.features_,
            "excluded_sensors": [s for s in self.sensors_ if s not in self.features_],
            "weights": self.weights_,
            "strategy_thresholds": self.strategy_thresholds_,
            "calibration_rows": self.n_calibration_,
            "calibration_levels": self.calibration_levels_,
            "components": {name: m.summary() for name, m in self.models_.items()},
            "config": {
                f.name: getattr(self.config_, f.name)
                for f in fields(self.config_)
                if f.name not in COMPONENT_FIELDS
            },
        }


def _level(smoothed: np.ndarray, quantile: float) -> float:
    """The ``quantile`` of a smoothed score, NaN (warm-up) ignored; 0 if nothing is left."""
    finite = smoothed[np.isfinite(smoothed)]
    return float(np.quantile(finite, quantile)) if finite.size else 0.0
