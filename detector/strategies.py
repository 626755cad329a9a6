"""How component scores become one decision, and which sensors it names. Pure numpy: the
training side (``models.ensemble``) and the bundle scorer (``detector.bundle``, run by the edge
and by the trainer's validation) both use these functions, so the decision at the edge is by
construction the one measured during evaluation.

Every component reports a *normalised* score per reading: its raw score divided by its own
training threshold, so 1.0 means "at this model's threshold" whatever the model's units. NaN
means the component has no opinion yet (the LSTM before its first full window).
"""

from __future__ import annotations

import numpy as np

ISOLATION_FOREST = "isolation_forest"
LSTM = "lstm"
PCA = "pca"
COMPONENTS = (ISOLATION_FOREST, LSTM, PCA)
STRATEGIES = (ISOLATION_FOREST, LSTM, PCA, "hybrid_or", "hybrid_and", "hybrid_smart")
# hybrid_or and hybrid_and are defined over the first two models the project had (the forest
# and the LSTM); PCA takes part only in hybrid_smart.
PAIR = (ISOLATION_FOREST, LSTM)


def components_of(strategy: str, weights: dict[str, float]) -> tuple[str, ...]:
    if strategy in COMPONENTS:
        return (strategy,)
    if strategy in ("hybrid_or", "hybrid_and"):
        return PAIR
    if strategy == "hybrid_smart":
        return tuple(name for name in COMPONENTS if weights.get(name, 0.0) > 0.0)
    raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")


def combine(
    strategy: str, normalized: dict[str, np.ndarray], weights: dict[str, float]
) -> np.ndarray:
    """One combined score per reading; NaN-aware so that a missing component is skipped.

    ``hybrid_or`` is the largest normalised score (flag if either flags), ``hybrid_and`` the
    smallest (flag only if both flag), ``hybrid_smart`` a weighted mean with the calibrated
    weights, renormalised over the components that have a score.
    """
    names = components_of(strategy, weights)
    stack = np.vstack([np.asarray(normalized[n], dtype=np.float64) for n in names])
    if len(names) == 1:
        return stack[0]
    # The NaN mask once, and only the fill the strategy needs: at the edge this runs for
    # every reading of a 1 Hz rig, where numpy's per-call cost is the whole cost.
    nan = np.isnan(stack)
    all_nan = nan.all(axis=0)
    if strategy == "hybrid_or":
        out = np.where(nan, -np.inf, stack).max(axis=0)
    elif strategy == "hybrid_and":
        out = np.where(nan, np.inf, stack).min(axis=0)
    else:
        w = np.array([weights[n] for n in names])[:, None] * ~nan
        total = w.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(nan, 0.0, stack * w).sum(axis=0) / total
    return np.where(all_nan, np.nan, out)


def shares(values: np.ndarray) -> np.ndarray:
    """Rows of non-negative per-sensor parts ``(n, d)`` scaled to sum to 1.

    NaN and negative parts count as 0 (a sensor pulling towards normal, or a component with
    no opinion yet, explains nothing), and a row without any positive part stays all 0 rather
    than being spread evenly: naming every sensor equally would name none of them, and the
    ranked list would show the first sensors in catalog order as if they mattered. Every
    component's ``contributions`` and the bundle scorer go through this one function."""
    values = np.fmax(np.asarray(values, dtype=np.float64), 0.0)
    total = values.sum(axis=-1, keepdims=True)
    return np.divide(values, total, out=np.zeros_like(values), where=total > 0)


def combine_shares(
    strategy: str,
    normalized: dict[str, np.ndarray],
    shares: dict[str, np.ndarray],
    weights: dict[str, float],
) -> np.ndarray:
    """Per-sensor share of the combined anomaly ``(n, d)``: each component's shares weighted
    by how much that component contributes to the combined score."""
    names = components_of(strategy, weights)
    total: np.ndarray | None = None
    for name in names:
        n = np.nan_to_num(np.maximum(np.asarray(normalized[name], dtype=np.float64), 0.0))
        w = weights.get(name, 1.0) if strategy == "hybrid_smart" else 1.0
        part = np.nan_to_num(shares[name]) * (w * n)[:, None]
        total = part if total is None else total + part
    assert total is not None
    s = total.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(s > 0, total / s, 0.0)


def probability_ahead(forecast_z: np.ndarray, threshold: float, slope: float = 8.0) -> np.ndarray:
    """Probability of an anomaly within the forecast horizon, from forecasts in z units
    ``(..., H, d)``: the largest predicted mean squared excursion over the horizon, relative
    to the training 99th percentile of the same quantity, through a logistic curve. The slope
    puts the probability at 0.02 for half the threshold, 0.5 at it, 0.98 at 1.5 times it."""
    z = np.asarray(forecast_z, dtype=np.float64)
    # np.mean's own sum and division, without its Python wrapper (the same bits).
    energy = (np.add.reduce(z * z, axis=-1) / z.shape[-1]).max(axis=-1)
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-slope * (energy / threshold - 1.0)))


def top_contributors(
    shares: np.ndarray, sensors: list[str], limit: int = 5, min_share: float = 0.05
) -> list[dict[str, float | str]]:
    """Ranked ``[{"sensor", "share"}]`` for one reading (shares of at least ``min_share``)."""
    order = np.argsort(-shares)[:limit]
    return [
        {"sensor": sensors[i], "share": round(float(shares[i]), 4)}
        for i in order
        if shares[i] >= min_share
    ]


def top_contributors_rows(
    shares: np.ndarray, sensors: list[str], limit: int = 5, min_share: float = 0.05
) -> list[list[dict[str, float | str]]]:
    """``top_contributors`` for every row of ``shares`` ``(m, d)`` with one sort for all:
    at the edge the per-row form costs more than scoring the reading."""
    shares = np.asarray(shares, dtype=np.float64)
    order = np.argsort(-shares, axis=1)[:, :limit]
    values = np.take_along_axis(shares, order, axis=1)
    rounded = np.round(values, 4).tolist()
    keep = (values >= min_share).tolist()
    return [
        [
            {"sensor": sensors[j], "share": s}
            for j, s, k in zip(row_order, row_shares, row_keep, strict=True)
            if k
        ]
        for row_order, row_shares, row_keep in zip(order.tolist(), rounded, keep, strict=True)
    ]
