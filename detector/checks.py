"""The per-sensor fault checks beside the hybrid models: stuck sensors (``detector.stuck``) and
slow drift (``detector.drift``), with one verdict rule for the training side
(``models.ensemble``) and the bundle scorer (``detector.bundle``).

Each check gives per-sensor scores normalised like the models' (above 1.0 is a fault). The
reported score of a reading is the larger of the hybrid's score and the largest check score,
so a check can only add alarms where a sensor is beyond a limit it never reached in normal
data, and the sensors beyond their limits are the ones named for such a reading.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detector.drift import DriftParams, DriftState, drift_scores
from detector.stuck import StuckParams, StuckState, stuck_scores


@dataclass
class CheckState:
    stuck: StuckState
    drift: DriftState = field(default_factory=DriftState)


@dataclass(frozen=True)
class FaultChecks:
    """The learned checks of one model (either may be None: not learned, or off)."""

    sensors: int
    stuck: StuckParams | None = None
    drift: DriftParams | None = None

    @property
    def active(self) -> bool:
        return self.stuck is not None or self.drift is not None

    def new_state(self) -> CheckState:
        return CheckState(StuckState.empty(self.sensors))

    def scores(self, X: np.ndarray, state: CheckState) -> np.ndarray:
        """Per-sensor fault scores ``(n, d)`` of one machine's rows in time order (missing
        values as NaN, before any gap filling), continuing ``state``."""
        X = np.asarray(X, dtype=np.float32)
        out = np.zeros(X.shape)
        if self.stuck is not None:
            out = np.maximum(out, stuck_scores(self.stuck, X, state.stuck))
        if self.drift is not None:
            out = np.maximum(out, drift_scores(self.drift, X, state.drift))
        return out

    def to_manifest(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.stuck is not None:
            doc["stuck"] = self.stuck.to_manifest()
        if self.drift is not None:
            doc["drift"] = self.drift.to_manifest()
        return doc

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], sensors: int) -> FaultChecks:
        """The checks of a manifest's ``fault_checks`` (absent in bundles exported before
        them: no checks, the hybrid alone decides as it did)."""
        doc = manifest.get("fault_checks") or {}
        stuck = StuckParams.from_manifest(doc["stuck"], sensors) if "stuck" in doc else None
        drift = DriftParams.from_manifest(doc["drift"], sensors) if "drift" in doc else None
        return cls(sensors, stuck, drift)


def with_checks(score: np.ndarray, check_scores: np.ndarray | None) -> np.ndarray:
    """The reported score: the hybrid's or the largest per-sensor check score, whichever is
    larger. While the hybrid warms up (NaN) it stays NaN unless a check flags a sensor: a
    check below its limit has no opinion worth a score of its own."""
    if check_scores is None or check_scores.shape[1] == 0:
        return score
    worst = check_scores.max(axis=1)
    return np.where(np.isnan(score), np.where(worst > 1.0, worst, np.nan), np.fmax(score, worst))


def check_contributors(
    check_scores: np.ndarray, sensors: list[str], limit: int = 5
) -> list[dict[str, float | str]]:
    """The sensors beyond their check limit in one reading, ranked by score, as shares."""
    beyond = np.flatnonzero(check_scores > 1.0)
    if beyond.size == 0:
        return []
    values = check_scores[beyond]
    order = np.argsort(-values)[:limit]
    total = float(values.sum())
    return [
        {"sensor": sensors[beyond[i]], "share": round(float(values[i]) / total, 4)} for i in order
    ]


def check_contributors_rows(
    check_scores: np.ndarray, sensors: list[str], limit: int = 5
) -> list[list[dict[str, float | str]]]:
    """``check_contributors`` of every row of ``check_scores`` ``(m, d)``, the same lists to
    the bit, with numpy calls per batch instead of per row: a stuck or drifting machine has
    every reading flagged, and per-row calls cost more than scoring it. Rows with tied scores
    (capped stuck scores tie often) go through ``check_contributors`` itself: numpy's
    default sort orders ties its own way, and that order is the one the cloud shows."""
    scores = np.ascontiguousarray(check_scores, dtype=np.float64)
    m = len(scores)
    out: list[list[dict[str, float | str]]] = [[] for _ in range(m)]
    if m == 0:
        return out
    beyond = scores > 1.0
    counts = beyond.sum(axis=1)
    # Beyond-limit scores first, largest first; the rest sort last.
    keyed = np.where(beyond, -scores, np.inf)
    order = np.argsort(keyed, axis=1, kind="stable")
    ordered = np.take_along_axis(keyed, order, axis=1)
    tied = ((ordered[:, 1:] == ordered[:, :-1]) & np.isfinite(ordered[:, 1:])).any(axis=1)
    # The total of each row's beyond-limit scores summed as check_contributors sums them (one
    # contiguous row of ``count`` values, in column order): rows of one count at a time.
    totals = np.zeros(m)
    compact = scores[beyond]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for count in np.unique(counts).tolist():
        if count == 0:
            continue
        rows = np.flatnonzero(counts == count)
        block = compact[starts[rows][:, None] + np.arange(count)]
        totals[rows] = block.sum(axis=1)
    top_order = order[:, :limit].tolist()
    top_values = (-ordered[:, :limit]).tolist()
    for i, (count, total, tie) in enumerate(
        zip(counts.tolist(), totals.tolist(), tied.tolist(), strict=True)
    ):
        if count == 0:
            continue
        if tie:
            out[i] = check_contributors(scores[i], sensors, limit)
            continue
        k = min(count, limit)
        out[i] = [
            {"sensor": sensors[j], "share": round(v / total, 4)}
            for j, v in zip(top_order[i][:k], top_values[i][:k], strict=True)
        ]
    return out
