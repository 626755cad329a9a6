"""The numpy feature code the training side and the bundle scorer share."""

from __future__ import annotations

import numpy as np

from detector.features import sliding_windows, stationary_mask, trailing_mean


def test_drifting_and_constant_sensors_are_left_out() -> None:
    rng = np.random.default_rng(0)
    n = 400
    X = np.column_stack(
        [rng.normal(size=n), rng.normal(size=n), np.linspace(20, 30, n), np.full(n, 5.0)]
    )
    assert stationary_mask(X).tolist() == [True, True, False, False]


def test_trailing_mean_skips_missing_values() -> None:
    s = np.array([np.nan, 1.0, 3.0, np.nan, 5.0])
    out = trailing_mean(s, 2)
    assert np.isnan(out[0])
    assert out[1:].tolist() == [1.0, 2.0, 3.0, 5.0]


def _ou(n: int, tau: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.exp(-1.0 / tau)
    x = np.zeros(n)
    for i in range(1, n):
        x[i] = a * x[i - 1] + np.sqrt(1 - a * a) * rng.normal()
    return x


def test_mean_reverting_drift_counts_as_stationary_over_a_long_history() -> None:
    # A one-minute drift (the simulator's) has not shown its range in 400 readings but has
    # in 6000; a trend never has.
    long = np.column_stack([_ou(6000, 60.0, 1), _ou(6000, 60.0, 2), np.linspace(0, 1, 6000)])
    assert stationary_mask(long).tolist() == [True, True, False]
    short = np.column_stack([_ou(400, 60.0, 1), np.random.default_rng(3).normal(size=400)] * 2)
    assert stationary_mask(short).tolist() == [False, True, False, True]


def test_sliding_windows_end_at_their_row() -> None:
    X = np.arange(12.0).reshape(6, 2)
    w = sliding_windows(X, 3)
    assert w.shape == (4, 3, 2)
    assert w[0].tolist() == X[:3].tolist() and w[-1].tolist() == X[3:].tolist()
