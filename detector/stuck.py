"""Stuck (flatline) sensors: a reading that stops moving while the machine runs.

The hybrid models judge whether values are plausible, and a value frozen at a plausible level
is plausible, so they miss it. Two per-sensor checks, each against what that sensor normally
does (learned by ``fit_stuck`` from the training rows, shipped in the bundle manifest so the
edge and the cloud decide identically):

- repeat count: the number of consecutive readings equal to the previous one, against a limit
  above the longest run of identical values seen in normal data (a quantised sensor repeats
  often, a noisy analogue one never does);
- rolling spread: the range of the last ``window`` readings, against a floor
  far below the smallest one seen in normal data (a sensor whose noise vanishes is stuck even
  when the last digit still flickers); for sensors that never repeat a value normally.

The per-sensor score is 1.0 at the limit (above 1.0 is stuck). The state per machine is the
last value, the current run lengths and the last ``window - 1`` rows: O(sensors) numpy per
reading. A missing value (NaN) is not a repeat and resets the run; gap filling happens after
this check, so a filled gap never looks stuck.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Cap of a per-sensor score, so a zero spread gives a finite, readable score.
MAX_SCORE = 10.0


@dataclass(frozen=True)
class StuckParams:
    """Per-sensor limits: ``run_limit`` (0 = check off for that sensor), ``range_floor``
    (0 = check off) and the rolling ``window`` in readings."""

    run_limit: np.ndarray
    range_floor: np.ndarray
    window: int
    # Derived once, so scoring a reading needs no division guards (numpy's errstate alone
    # costs more than the checks): 1 / run_limit (0 where off), and the spread below which
    # the spread score reaches MAX_SCORE (1 where off: with a zero floor the score is 0).
    _run_scale: np.ndarray = field(init=False, repr=False, compare=False)
    _min_spread: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        on = self.run_limit > 0
        scale = np.where(on, 1.0 / np.where(on, self.run_limit, 1.0), 0.0)
        object.__setattr__(self, "_run_scale", scale)
        floor_on = self.range_floor > 0
        min_spread = np.where(floor_on, self.range_floor / MAX_SCORE, 1.0)
        object.__setattr__(self, "_min_spread", min_spread)

    def to_manifest(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "run_limit": [float(v) for v in self.run_limit],
            "range_floor": [float(v) for v in self.range_floor],
        }

    @classmethod
    def from_manifest(cls, doc: Mapping[str, Any], sensors: int) -> StuckParams:
        run_limit = np.asarray(doc["run_limit"], dtype=np.float64)
        range_floor = np.asarray(doc["range_floor"], dtype=np.float64)
        window = int(doc["window"])
        if run_limit.shape != (sensors,) or range_floor.shape != (sensors,):
            raise ValueError(
                f"stuck.run_limit/range_floor: expected one value per sensor ({sensors})"
            )
        if window < 2:
            raise ValueError(f"stuck.window: expected at least 2 readings, got {window}")
        return cls(run_limit, range_floor, window)


@dataclass
class StuckState:
    """One machine's rolling state between batches."""

    last: np.ndarray  # (d,) previous reading (NaN before the first)
    run: np.ndarray  # (d,) consecutive repeats ending at ``last``
    tail: np.ndarray  # (<= window - 1, d) the readings before the next ones

    @classmethod
    def empty(cls, sensors: int) -> StuckState:
        return cls(
            np.full(sensors, np.nan, dtype=np.float32),
            np.zeros(sensors),
            np.empty((0, sensors), dtype=np.float32),
        )


def run_lengths(X: np.ndarray, last: np.ndarray, run: np.ndarray) -> np.ndarray:
    """Per row and sensor, how many consecutive readings so far equal their predecessor
    (continuing ``run``, the count at ``last``)."""
    X = np.asarray(X, dtype=np.float32)
    n = len(X)
    prev = np.vstack([last[None, :], X[:-1]]) if n else X
    same = prev == X  # NaN never equals anything
    t = np.arange(1, n + 1, dtype=np.float64)[:, None]
    # Position of the latest reset at or before each row (0 = none in this batch, the run
    # continues from the carried count).
    reset = np.maximum.accumulate(np.where(same, 0.0, t), axis=0)
    return np.where(reset > 0, t - reset, t + run[None, :])


def rolling_range(X: np.ndarray, tail: np.ndarray, window: int) -> np.ndarray:
    """Range (largest minus smallest) of the last ``window`` readings per row and sensor;
    NaN while fewer are known or when one of them is missing. The range rather than the
    standard deviation: two reductions, the cheapest spread for the edge's batches of one
    reading per machine, and a stuck stretch still gives exactly 0."""
    X = np.asarray(X, dtype=np.float32)
    seq = np.concatenate([tail, X]) if len(tail) else X
    n = len(X)
    count = len(seq) - window + 1
    if count <= 0:
        return np.full(X.shape, np.nan)
    if count == 1:
        spread = (seq.max(axis=0) - seq.min(axis=0))[None, :]
    else:
        view = np.lib.stride_tricks.sliding_window_view(seq, window, axis=0)  # (count, d, w)
        spread = view.max(axis=-1) - view.min(axis=-1)
    if count == n:
        return spread.astype(np.float64)
    out = np.full(X.shape, np.nan)
    out[n - count :] = spread
    return out


def stuck_scores(params: StuckParams, X: np.ndarray, state: StuckState) -> np.ndarray:
    """Per-sensor stuck scores ``(n, d)`` of one machine's rows in time order (above 1.0 is
    stuck), continuing and updating ``state``."""
    X = np.asarray(X, dtype=np.float32)
    if len(X) == 0:
        return np.zeros(X.shape)
    if len(X) == 1:
        # The edge's usual batch: one reading of this machine.
        runs = np.where(X[0] == state.last, state.run + 1.0, 0.0)[None, :]
    else:
        runs = run_lengths(X, state.last, state.run)
    spread = rolling_range(X, state.tail, params.window)
    keep = params.window - 1
    state.tail = np.concatenate([state.tail, X])[-keep:].copy()
    state.last = X[-1].copy()
    state.run = runs[-1].copy()
    by_run = runs * params._run_scale
    # NaN spread (a missing value in the window) gives NaN here, which fmax skips.
    by_range = params.range_floor / np.maximum(spread, params._min_spread)
    return np.minimum(np.fmax(by_run, by_range), MAX_SCORE)


def fit_stuck(
    X: np.ndarray,
    window: int = 10,
    min_run: int = 10,
    run_factor: float = 2.0,
    run_margin: int = 10,
    range_fraction: float = 0.1,
) -> StuckParams:
    """Limits from normal rows ``X`` (time order, finite): a run limit of ``run_factor``
    times the longest normal run plus ``run_margin`` (at least ``min_run``), and a spread
    floor of ``range_fraction`` of the smallest normal rolling spread, for sensors that never
    repeat a value in normal data only (a quantised sensor's flat windows are normal short
    runs, judged by the run limit). A constant sensor gets neither check (it is not a model
    feature anyway)."""
    X = np.asarray(X, dtype=np.float32)
    d = X.shape[1]
    if len(X) < window + 1:
        return StuckParams(np.zeros(d), np.zeros(d), window)
    state = StuckState.empty(d)
    longest = run_lengths(X, state.last, state.run).max(axis=0)
    varying = X.std(axis=0) > 0
    run_limit = np.where(varying, np.maximum(run_factor * longest + run_margin, min_run), 0.0)
    lowest = np.nanmin(rolling_range(X, state.tail, window), axis=0)
    # Only for sensors that never repeat a value in normal data (analogue, noisy): on a
    # quantised sensor a flat window is a normal short run, which the run limit judges.
    range_floor = np.where(varying & (longest == 0) & (lowest > 0), range_fraction * lowest, 0.0)
    return StuckParams(run_limit.astype(np.float64), range_floor.astype(np.float64), window)
