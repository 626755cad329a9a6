"""Slow drift: a sensor creeping away from its normal level over minutes.

A drift of a few percent per minute stays inside what the hybrid models accept for a long
time (each reading is plausible; the smoothing averages the small excess away). This check
follows an exponentially weighted mean (EWMA) of each sensor's standardised value, which
averages the noise away and keeps the level, and flags a sensor when that mean leaves the
band it stayed in over the normal training rows by a head-room factor.

Everything is learned by ``fit_drift`` from the training rows (mean, scale, the per-sensor
band) and shipped in the bundle manifest, so the edge and the cloud decide identically. The
state per machine is one EWMA vector: O(sensors) numpy per reading. A missing value (NaN)
keeps that sensor's EWMA where it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DriftParams:
    """Standardisation (``mean``, ``scale``), the EWMA weight ``alpha`` of a new reading,
    and ``limit`` per sensor: the EWMA's largest normal excursion times the head-room (0 =
    check off for that sensor)."""

    mean: np.ndarray
    scale: np.ndarray
    alpha: float
    limit: np.ndarray

    def to_manifest(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "mean": [float(v) for v in self.mean],
            "scale": [float(v) for v in self.scale],
            "limit": [float(v) for v in self.limit],
        }

    @classmethod
    def from_manifest(cls, doc: Mapping[str, Any], sensors: int) -> DriftParams:
        arrays = {k: np.asarray(doc[k], dtype=np.float64) for k in ("mean", "scale", "limit")}
        for key, value in arrays.items():
            if value.shape != (sensors,):
                raise ValueError(f"drift.{key}: expected one value per sensor ({sensors})")
        alpha = float(doc["alpha"])
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"drift.alpha: expected a weight in (0, 1], got {alpha}")
        return cls(arrays["mean"], arrays["scale"], alpha, arrays["limit"])


@dataclass
class DriftState:
    ewma: np.ndarray | None = None  # (d,) None before the machine's first reading (then 0)


def ewma_path(params: DriftParams, X: np.ndarray, state: DriftState) -> np.ndarray:
    """The EWMA of the standardised values after each row ``(n, d)``, updating ``state``.
    A Python step per row: the edge scores a few rows per machine at a time, and a stream of
    thousands of rows (training, evaluation) still takes milliseconds."""
    z = (np.asarray(X, dtype=np.float64) - params.mean) / params.scale
    out = np.empty_like(z)
    # A machine's EWMA starts at the training mean (0), not at its first reading: one noisy
    # reading would otherwise stand for the level until the average forgets it.
    ewma = np.zeros(z.shape[1]) if state.ewma is None else state.ewma
    a = params.alpha
    for i, row in enumerate(z):
        ewma = np.where(np.isnan(row), ewma, ewma + a * (row - ewma))
        out[i] = ewma
    state.ewma = ewma.copy()
    return out


def drift_scores(params: DriftParams, X: np.ndarray, state: DriftState) -> np.ndarray:
    """Per-sensor drift scores ``(n, d)`` (above 1.0 is a drift), continuing ``state``."""
    path = np.abs(ewma_path(params, X, state))
    on = params.limit > 0
    return np.where(on, path / np.where(on, params.limit, 1.0), 0.0)


def fit_drift(
    X: np.ndarray,
    alpha: float = 0.05,
    head_room: float = 2.0,
    min_rows: int = 1000,
) -> DriftParams | None:
    """Parameters from normal rows ``X`` (time order, finite), or None when there are fewer
    than ``min_rows``: the band a slow statistic stays in is not known from a few hundred
    readings, and a band learned from too few would raise false alarms on normal wander.
    The first ``3 / alpha`` rows (the EWMA's run-up from the first reading) do not count."""
    X = np.asarray(X, dtype=np.float64)
    d = X.shape[1]
    if len(X) < min_rows:
        return None
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    scale = np.where(std > 0, std, 1.0)
    params = DriftParams(mean, scale, alpha, np.zeros(d))
    path = np.abs(ewma_path(params, X, DriftState()))
    settled = path[min(int(3 / alpha), len(X) // 2) :]
    limit = np.where(std > 0, head_room * settled.max(axis=0), 0.0)
    return DriftParams(mean, scale, alpha, limit)
