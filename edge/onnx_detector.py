"""ML detection at the edge: readings in, the bundle scorer (``detector.bundle``) in between,
the detection each message carries out.

This module only adapts: it reads each reading's values in the bundle's sensor order (a
missing or non-finite value becomes NaN, which the scorer fills and reports), groups the
readings by machine, and turns the scorer's arrays into one detection dict per reading. The
models, windows, smoothing and decision are the runtime's, shared with the cloud trainer's
validation, so the rig scores exactly as the model was validated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

from detector.bundle import BundleScorer
from shared.catalog import PRIORITY_SENSORS
from shared.message import Reading
from shared.model_bundle import PublicKeyLike

# A forecast travels at most this often per machine (seconds of reading time): the dashboard
# draws the newest one, and 10 steps x 8 sensors on every reading would multiply the payload
# at 100 Hz for nothing.
FORECAST_EVERY_S = 1.0
# Significant digits of a forecast value: the dots are drawn, not computed with.
FORECAST_DIGITS = 5


class OnnxDetector:
    """``Detector`` (edge.detection) backed by a model bundle.

    With an LSTM whose bundle carries its scaling, the last reading of a batch of each
    machine also carries ``forecast``: the next ``prediction_horizon`` values of the
    dashboard's priority sensors in their own units, at most every ``FORECAST_EVERY_S``
    seconds of reading time per machine."""

    def __init__(
        self,
        bundle: Path | str,
        public_key: PublicKeyLike | None = None,
        strategy: str | None = None,
        threads: int = 1,
    ) -> None:
        self.scorer = BundleScorer(bundle, public_key, strategy=strategy, threads=threads)
        self.manifest = self.scorer.manifest
        self.version: str = self.scorer.version
        self.strategy: str = self.scorer.strategy
        self.method = self.strategy
        self.sensors: list[str] = self.scorer.sensors
        # One C call reads all the sensors of a reading (KeyError: a sensor is absent).
        self._getter: Callable[[dict[str, float | None]], tuple[Any, ...]] = (
            itemgetter(*self.sensors) if len(self.sensors) > 1 else _one(self.sensors)
        )
        # (name, column) of the priority sensors the bundle forecasts, in display order.
        self._forecast_columns = [
            (name, self.sensors.index(name)) for name in PRIORITY_SENSORS if name in self.sensors
        ]
        self._forecast_sent: dict[str, float] = {}  # machine -> reading time of the last one
        self._forecast_index = [column for _, column in self._forecast_columns]

    # -- Detector protocol --------------------------------------------------------------------

    def score(self, reading: Reading) -> dict[str, Any]:
        return self.score_batch([reading])[0]

    def score_batch(self, readings: list[Reading]) -> list[dict[str, Any]]:
        """Score readings in arrival order (readings of several machines may be mixed)."""
        n = len(readings)
        if n == 0:
            return []
        X, groups = self._rows(readings)
        scored = self.scorer.score_groups(X, groups)
        ranked, missing = scored.contributions, scored.missing
        score_list = np.round(scored.score, 6).tolist()
        warming = scored.warming_up.tolist()
        prob = scored.probability_ahead
        prob_list = np.round(prob, 4).tolist() if prob is not None else None
        results = []
        for i in range(n):
            top = ranked.get(i, [])
            result: dict[str, Any] = {
                "method": self.method,
                "is_anomaly": i in ranked,
                "score": score_list[i],
                "sensors": [c["sensor"] for c in top],
                "contributions": top,
                "warnings": [],
                "model_version": self.version,
            }
            if prob_list is not None:
                p = prob_list[i]
                result["probability_ahead"] = None if math.isnan(p) else p  # no window yet
            if warming[i]:
                result["warming_up"] = True
            if i in missing:
                # Filled by the scorer: the reading is still scored, but the operator must
                # know that these sensors did not take part.
                result["missing_sensors"] = missing[i]
            results.append(result)
        self._attach_forecasts(readings, scored.forecast, results)
        return results

    def _attach_forecasts(
        self,
        readings: list[Reading],
        forecast: dict[int, np.ndarray],
        results: list[dict[str, Any]],
    ) -> None:
        if not forecast or not self._forecast_columns:
            return
        for i, steps in forecast.items():
            reading = readings[i]
            at = reading.ts.timestamp()
            last = self._forecast_sent.get(reading.machine_id)
            if last is not None and last <= at < last + FORECAST_EVERY_S:
                continue
            self._forecast_sent[reading.machine_id] = at
            doc: dict[str, list[float]] = {}
            columns = steps[:, self._forecast_index]  # (H, priority sensors)
            finite = np.isfinite(columns).all(axis=0).tolist()
            # One format call per machine and batch instead of one per value: the same
            # decimal rounding, parsed back.
            texts = _format_rows(columns.T.tolist())
            for (name, _), ok, text in zip(self._forecast_columns, finite, texts, strict=True):
                if ok:
                    doc[name] = list(map(float, text.split()))
            if doc:
                results[i]["forecast"] = doc

    def reset(self, machine_id: str | None = None) -> None:
        """Forget the rolling state of one machine (or all), e.g. after a long data gap."""
        self.scorer.reset(machine_id)
        if machine_id is None:
            self._forecast_sent.clear()
        else:
            self._forecast_sent.pop(machine_id, None)

    # -- internals ----------------------------------------------------------------------------

    def _rows(self, readings: list[Reading]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Rows ``(n, d)`` float64 in the bundle's sensor order (NaN where a value is absent
        or None) and the row indexes of each machine in arrival order. Float64 so that the
        scorer's finiteness check sees the values as sent."""
        getter = self._getter
        sensors = self.sensors
        rows: list[Any] = []
        groups: dict[str, list[int]] = {}
        for i, reading in enumerate(readings):
            values = reading.values
            try:
                rows.append(getter(values))
            except KeyError:
                rows.append([values.get(name) for name in sensors])
            groups.setdefault(reading.machine_id, []).append(i)
        # fromiter over the flattened rows is several times faster than np.array on a list of
        # tuples; it refuses None, which np.array turns into NaN.
        n, d = len(readings), len(sensors)
        try:
            X = np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=n * d)
        except TypeError:
            X = np.array(rows, dtype=np.float64)
        return X.reshape(n, d), {m: np.array(idx) for m, idx in groups.items()}


def _one(sensors: list[str]) -> Any:
    """``itemgetter`` of a single key returns the bare value; the rows need a sequence."""
    name = sensors[0]
    return lambda values: (values[name],)


def _format_rows(rows: list[list[float]]) -> list[str]:
    """Each row's values with ``FORECAST_DIGITS`` significant digits, space separated."""
    if not rows:
        return []
    pattern = " ".join([f"{{:.{FORECAST_DIGITS}g}}"] * len(rows[0]))
    return [pattern.format(*row) for row in rows]
