"""Validation of a detector before it goes into service, and the acceptance rule.

A model is judged on two things a rig cares about, on data it was not trained on:
- false alarms: the share of recent held-out readings (normal operation as far as anyone
  knows) it flags;
- detection: the simulator's standard fault benchmark (``simulator.standard_faults``: bearing
  wear, cavitation, spikes, drift, a stuck sensor, the same scenarios ``python -m
  models.evaluate sim`` publishes figures for) injected into copies of those same held-out
  readings, scored point by point against the injected ground truth (precision, recall, F1,
  detection delay).

The candidate and the model in service are scored by the same code on the same data, so the
comparison is like for like.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.catalog import CORE_SENSOR_NAMES
from simulator.standard_faults import inject, standard_scenarios

# Flags per row for a (n, 50) block of readings in time order, one reading per second.
Scorer = Callable[[np.ndarray], np.ndarray]

# A candidate may be this much worse than the model in service and still replace it (noise
# between two trainings on overlapping data), but no more.
F1_TOLERANCE = 0.02
FAR_TOLERANCE_PCT = 2.0
# Without a model in service the edge runs threshold checks only, so a first model that
# catches some injected faults without flooding operators with false alarms already adds
# value: it must find something and stay under the false-alarm ceiling.
MIN_F1 = 0.05
MAX_FAR_PCT = 10.0


@dataclass(frozen=True)
class Validation:
    precision: float
    recall: float
    f1: float
    far_pct: float
    detection_delay_s: dict[str, float | None]
    per_fault_recall: dict[str, float]
    rows: int

    def as_json(self) -> dict[str, Any]:
        return {
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
            "far_pct": round(self.far_pct, 3),
            "detection_delay_s": self.detection_delay_s,
            "per_fault_recall": {k: round(v, 4) for k, v in self.per_fault_recall.items()},
            "rows": self.rows,
        }


def validate(scorer: Scorer, held_out: np.ndarray) -> Validation:
    if held_out.ndim != 2 or held_out.shape[1] != len(CORE_SENSOR_NAMES):
        raise ValueError(f"held-out data must be (n, {len(CORE_SENSOR_NAMES)})")
    if len(held_out) < 100:
        raise ValueError(f"{len(held_out)} held-out readings are too few to validate on")
    normal_flags = np.asarray(scorer(held_out), dtype=bool)
    far = 100.0 * float(normal_flags.mean())
    tp = fp = fn = 0
    delays: dict[str, float | None] = {}
    recall_by_kind: dict[str, float] = {}
    for spec in standard_scenarios(len(held_out), "validation"):
        faulty, labels = inject(held_out, spec)
        flags = np.asarray(scorer(faulty), dtype=bool)
        tp += int(np.sum(flags & labels))
        fp += int(np.sum(flags & ~labels))
        fn += int(np.sum(~flags & labels))
        hits = np.flatnonzero(flags & labels)
        delays[spec.kind] = float(hits[0] - spec.start_s) if hits.size else None
        recall_by_kind[spec.kind] = float(np.sum(flags & labels)) / max(1, int(labels.sum()))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = tp / (tp + (fp + fn) / 2) if tp else 0.0
    return Validation(precision, recall, f1, far, delays, recall_by_kind, len(held_out))


def decide(candidate: Validation, baseline: Validation | None) -> tuple[bool, str]:
    """Accept the candidate or refuse it, with the reason in words for the registry."""
    c = candidate
    if baseline is None:
        if c.f1 < MIN_F1:
            return False, f"F1 on simulator faults {c.f1:.3f} is below the minimum {MIN_F1}"
        if c.far_pct > MAX_FAR_PCT:
            return False, (
                f"false alarms {c.far_pct:.2f}% of held-out readings exceed {MAX_FAR_PCT}%"
            )
        return True, f"first model: F1 {c.f1:.3f}, false alarms {c.far_pct:.2f}%"
    b = baseline
    if c.f1 < b.f1 - F1_TOLERANCE:
        return False, (
            f"worse than the model in service: F1 on simulator faults {c.f1:.3f} < {b.f1:.3f}"
        )
    if c.far_pct > b.far_pct + FAR_TOLERANCE_PCT and c.far_pct > MAX_FAR_PCT / 2:
        return False, (
            f"worse than the model in service: false alarms {c.far_pct:.2f}% > "
            f"{b.far_pct:.2f}% on the same held-out readings"
        )
    return True, (
        f"F1 {c.f1:.3f} (in service {b.f1:.3f}), false alarms {c.far_pct:.2f}% "
        f"(in service {b.far_pct:.2f}%)"
    )
