"""Feature preparation shared by every model: which sensors a model may use, windows, and the
trailing smoothing applied to scores. Pure numpy: training (``models``) selects and windows
with it, the bundle scorer (``detector.bundle``) smooths with the same ``trailing_mean``."""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def lag_autocorrelation(X: np.ndarray, lag: int) -> np.ndarray:
    """Per-column correlation between ``x[t]`` and ``x[t + lag]`` (0 for constant columns)."""
    X = np.asarray(X, dtype=np.float64)
    if len(X) <= lag + 2:
        return np.zeros(X.shape[1])
    a, b = X[:-lag], X[lag:]
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    denom = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (a * b).sum(axis=0) / denom
    return np.where(denom > 0, corr, 0.0)


def stationary_mask(
    X: np.ndarray, lag: int = 10, min_cycles: float = 20.0, min_features: int = 2
) -> np.ndarray:
    """Columns a normal-behaviour model can rely on, fitted on the training part only.

    A sensor that is constant gives no information. A sensor whose training part is dominated
    by variation slower than the training part can show (a temperature still warming up, a
    drifting thermocouple) has not shown its normal range yet, so its level keeps moving out
    of the training envelope during normal operation and would raise false alarms all day; it
    is left out. What counts is the sensor's decorrelation time next to the length of the
    training part, not slowness as such: the correlation ``rho`` between values ``lag``
    samples apart gives a time ``tau = -lag / ln(rho)`` (exact for a mean-reverting drift),
    and a sensor is kept when the training part spans at least ``min_cycles`` of them. A drift
    with a one-minute time constant is a stationary process over hours of history, but not
    over 400 readings. If fewer than ``min_features`` columns pass, the model keeps every
    non-constant column instead (drifting data beats no data).
    """
    X = np.asarray(X, dtype=np.float64)
    varying = X.std(axis=0) > 1e-12
    if min_cycles <= 0:
        return varying
    # rho <= exp(-min_cycles * lag / n)  <=>  n / tau >= min_cycles
    max_autocorr = float(np.exp(-min_cycles * lag / max(len(X), 1)))
    steady = varying & (lag_autocorrelation(X, lag) <= max_autocorr)
    if steady.sum() < min(min_features, int(varying.sum())):
        log.warning(
            "only %d of %d sensors look stationary over %d readings; keeping all varying ones",
            int(steady.sum()),
            X.shape[1],
            len(X),
        )
        return varying
    return steady


def sliding_windows(X: np.ndarray, length: int) -> np.ndarray:
    """``(n - length + 1, length, d)`` view of consecutive windows; window ``i`` ends at row
    ``i + length - 1``."""
    return np.lib.stride_tricks.sliding_window_view(X, length, axis=0).transpose(0, 2, 1)


def trailing_mean(s: np.ndarray, window: int) -> np.ndarray:
    """Causal moving average over the last ``window`` values, ignoring NaN (a value that is
    not available yet, such as an LSTM score before its first full window). Used on scores:
    a valve closing shifts the level for minutes, while single noisy samples do not persist,
    so averaging a short trailing window removes most false alarms at the cost of a few
    samples of delay."""
    s = np.asarray(s, dtype=np.float64)
    if window <= 1:
        return s.copy()
    valid = ~np.isnan(s)
    values = np.concatenate([[0.0], np.cumsum(np.where(valid, s, 0.0))])
    counts = np.concatenate([[0], np.cumsum(valid)])
    idx = np.arange(len(s))
    lo = np.maximum(idx - window + 1, 0)
    n = counts[idx + 1] - counts[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (values[idx + 1] - values[lo]) / n
    return np.where(n > 0, out, np.nan)
