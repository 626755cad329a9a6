"""ML detection at the edge: the hybrid model bundle (``models.export``) run with ONNX Runtime.

Only onnxruntime and numpy (plus the numpy-only decision rules in ``models.strategies`` and
the bundle checks in ``shared.model_bundle``): the rig PC has neither TensorFlow nor
scikit-learn.

Per machine the detector keeps the last ``sequence_length`` readings (the LSTM window) and the
last ``smooth_window`` combined scores, so the decision equals the one the training side
evaluates (``HybridDetector.score_samples`` on the same stream). ``score_batch`` scores many
readings with one ``session.run`` per model, which is what makes the per-reading cost small;
``score`` is the one-reading form of it.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from models.strategies import (
    LSTM,
    combine,
    combine_shares,
    components_of,
    probability_ahead,
    top_contributors,
)
from shared.message import Reading
from shared.model_bundle import (
    MANIFEST,
    BundleError,
    PublicKeyLike,
    TamperedBundleError,
    extract_bundle,
    sha256_file,
    verify_bundle,
)

log = logging.getLogger(__name__)


@dataclass
class _MachineState:
    """Rolling state of one machine. The window is a doubled ring buffer: row ``i`` is written
    at ``i % L`` and ``i % L + L``, so the last L rows are always one contiguous slice."""

    ring: np.ndarray
    last: np.ndarray
    count: int = 0
    recent: deque[float] = field(default_factory=deque)
    recent_sum: float = 0.0
    recent_n: int = 0


class OnnxDetector:
    """``Detector`` (edge.detection) backed by a model bundle."""

    def __init__(
        self,
        bundle: Path | str,
        public_key: PublicKeyLike | None = None,
        strategy: str | None = None,
        threads: int = 1,
    ) -> None:
        path = Path(bundle)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if path.is_file():
            if public_key is None:
                raise BundleError("a tar bundle can only be loaded with its public key")
            self._tmp = tempfile.TemporaryDirectory(prefix="rig-bundle-")
            path = extract_bundle(path, self._tmp.name, public_key)
        if public_key is not None:
            manifest = verify_bundle(path, public_key)
        else:
            # Unsigned use (development, tests): still refuse files that do not match.
            manifest = json.loads((path / MANIFEST).read_text())
            for name, digest in manifest.get("files", {}).items():
                if sha256_file(path / name) != digest:
                    raise TamperedBundleError(f"{name} does not match its SHA-256")
        self.manifest = manifest
        self.version: str = manifest["version"]
        self.strategy: str = strategy or manifest["strategy"]
        if self.strategy not in manifest["strategies"]:
            raise ValueError(f"bundle has no strategy {self.strategy!r}")
        self.method = self.strategy
        self.sensors: list[str] = list(manifest["sensors"])
        self._index = {name: i for i, name in enumerate(self.sensors)}
        self._fill = np.asarray(manifest["fill_values"], dtype=np.float32)
        self._weights: dict[str, float] = {k: float(v) for k, v in manifest["weights"].items()}
        self._decision = float(manifest["strategy_thresholds"][self.strategy])
        self._window = int(manifest["sequence_length"])
        self._smooth = int(manifest["smooth_window"])
        self._components = components_of(self.strategy, self._weights)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._sessions: dict[str, ort.InferenceSession] = {}
        self._thresholds: dict[str, float] = {}
        self._inputs: dict[str, str] = {}
        for name in self._components:
            spec = manifest["components"][name]
            self._sessions[name] = ort.InferenceSession(
                str(path / spec["file"]), options, providers=["CPUExecutionProvider"]
            )
            self._thresholds[name] = float(spec["threshold"])
            self._inputs[name] = self._sessions[name].get_inputs()[0].name
        lstm = manifest["components"].get(LSTM)
        self._forecast_threshold = (
            float(lstm["forecast_threshold"]) if lstm and LSTM in self._components else None
        )
        self._machines: dict[str, _MachineState] = {}

    # -- Detector protocol --------------------------------------------------------------------

    def score(self, reading: Reading) -> dict[str, Any]:
        return self.score_batch([reading])[0]

    def score_batch(self, readings: list[Reading]) -> list[dict[str, Any]]:
        """Score readings in arrival order (readings of several machines may be mixed)."""
        n, d = len(readings), len(self.sensors)
        if n == 0:
            return []
        X = np.empty((n, d), dtype=np.float32)
        missing: list[list[str]] = []
        index = self._index
        for i, reading in enumerate(readings):
            row = X[i]
            values = reading.values
            absent = []
            for name, j in index.items():
                v = values.get(name)
                if v is None or not math.isfinite(v):
                    absent.append(name)
                    row[j] = math.nan
                else:
                    row[j] = v
            state = self._state(reading.machine_id)
            if absent:
                # A gap is filled with the machine's last value of that sensor (the training
                # mean before it has one): sensors move little between readings, while the
                # mean can sit far from the current operating point and fake an anomaly.
                np.copyto(row, state.last, where=np.isnan(row))
            state.last = row.copy()
            missing.append(absent)

        normalized: dict[str, np.ndarray] = {}
        shares: dict[str, np.ndarray] = {}
        prob: np.ndarray | None = None
        for name, session in self._sessions.items():
            if name == LSTM:
                normalized[name], shares[name], prob = self._run_lstm(session, readings, X)
            else:
                score, contrib = session.run(None, {self._inputs[name]: X})
                normalized[name] = score.astype(np.float64) / self._thresholds[name]
                shares[name] = _shares(contrib)
        combined = combine(self.strategy, normalized, self._weights)
        contributions = combine_shares(self.strategy, normalized, shares, self._weights)

        results = []
        for i, reading in enumerate(readings):
            smoothed = self._smoothed(reading.machine_id, float(combined[i]))
            score = smoothed / self._decision if math.isfinite(smoothed) else 0.0
            is_anomaly = score > 1.0
            ranked = top_contributors(contributions[i], self.sensors) if is_anomaly else []
            result: dict[str, Any] = {
                "method": self.method,
                "is_anomaly": bool(is_anomaly),
                "score": round(score, 6),
                "sensors": [c["sensor"] for c in ranked],
                "contributions": ranked,
                "warnings": [],
                "model_version": self.version,
            }
            if prob is not None:
                p = prob[i]
                result["probability_ahead"] = None if math.isnan(p) else round(float(p), 4)
            if not math.isfinite(smoothed):
                result["warming_up"] = True
            if missing[i]:
                # Filled (see above): the reading is still scored, but the operator must know
                # that these sensors did not take part.
                result["missing_sensors"] = missing[i]
            results.append(result)
        return results

    # -- internals ----------------------------------------------------------------------------

    def _state(self, machine_id: str) -> _MachineState:
        state = self._machines.get(machine_id)
        if state is None:
            ring = np.empty((2 * self._window, len(self.sensors)), dtype=np.float32)
            state = _MachineState(ring, self._fill.copy(), recent=deque())
            self._machines[machine_id] = state
        return state

    def _run_lstm(
        self, session: ort.InferenceSession, readings: list[Reading], X: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        L, n, d = self._window, len(readings), X.shape[1]
        windows = np.empty((n, L, d), dtype=np.float32)
        ready = np.zeros(n, dtype=bool)
        for i, reading in enumerate(readings):
            state = self._state(reading.machine_id)
            pos = state.count % L
            state.ring[pos] = X[i]
            state.ring[pos + L] = X[i]
            state.count += 1
            if state.count >= L:
                windows[i] = state.ring[pos + 1 : pos + 1 + L]
                ready[i] = True
        normalized = np.full(n, np.nan)
        shares = np.full((n, d), np.nan)
        prob = np.full(n, np.nan)
        if ready.any():
            outputs = dict(
                zip(
                    [o.name for o in session.get_outputs()],
                    session.run(None, {self._inputs[LSTM]: windows[ready]}),
                    strict=True,
                )
            )
            errors = outputs["sensor_error"].astype(np.float64)
            normalized[ready] = errors.mean(axis=1) / self._thresholds[LSTM]
            shares[ready] = _shares(errors)
            if self._forecast_threshold:
                prob[ready] = probability_ahead(outputs["forecast"], self._forecast_threshold)
        return normalized, shares, prob

    def _smoothed(self, machine_id: str, value: float) -> float:
        """Mean of the finite combined scores among the machine's last ``smooth_window``
        (same rule as ``models.features.trailing_mean``)."""
        state = self._state(machine_id)
        finite = math.isfinite(value)
        state.recent.append(value)
        if finite:
            state.recent_sum += value
            state.recent_n += 1
        if len(state.recent) > self._smooth:
            old = state.recent.popleft()
            if math.isfinite(old):
                state.recent_sum -= old
                state.recent_n -= 1
        if state.recent_n == 0:
            return math.nan
        if finite and state.recent_n == 1:
            state.recent_sum = value  # resynchronise: no drift from repeated add/subtract
        return state.recent_sum / state.recent_n

    def reset(self, machine_id: str | None = None) -> None:
        """Forget the rolling state of one machine (or all), e.g. after a long data gap."""
        if machine_id is None:
            self._machines.clear()
        else:
            self._machines.pop(machine_id, None)


def _shares(values: np.ndarray) -> np.ndarray:
    values = np.maximum(values.astype(np.float64), 0.0)
    total = values.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, values / total, 0.0)
