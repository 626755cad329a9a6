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
