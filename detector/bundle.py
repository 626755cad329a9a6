"""A model bundle (written by ``models.export``) run with ONNX Runtime: rows in, decisions out.

Only onnxruntime and numpy (plus the bundle checks in ``shared.model_bundle``): the rig PC has
neither TensorFlow nor scikit-learn, and the cloud trainer validates candidates with this very
class, so the model it accepts is scored exactly as the rig will score it.

Per machine the scorer keeps the last ``sequence_length`` rows (the LSTM window) and the last
``smooth_window`` combined scores, so the decision equals the one the training side evaluates
(``HybridDetector.anomaly_score`` on the same stream). ``score_groups`` scores the rows of many
machines with one ``session.run`` per model, which is what makes the per-row cost small.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from detector.checks import CheckState, FaultChecks, check_contributors_rows, with_checks
from detector.features import trailing_mean
from detector.strategies import (
    LSTM,
    combine,
    combine_shares,
    components_of,
    probability_ahead,
    shares,
    top_contributors_rows,
)
from shared.model_bundle import (
    MANIFEST,
    BundleError,
    PublicKeyLike,
    TamperedBundleError,
    extract_bundle,
    sha256_file,
    verify_bundle,
)

BUNDLE_FORMAT = "rig-alpha-model-bundle"
# The manifest layout this scorer reads. models.export writes it; a bundle from a newer
# trainer (a higher number) is refused on load instead of being scored by guesswork.
BUNDLE_FORMAT_VERSION = 1


def check_format(manifest: Mapping[str, Any]) -> None:
    """Refuse a manifest of another format or of a newer format version than this scorer
    reads. Manifests written before the fields existed (none in either field) pass."""
    kind = manifest.get("format", BUNDLE_FORMAT)
    if kind != BUNDLE_FORMAT:
        raise BundleError(f"format: {kind!r} is not a {BUNDLE_FORMAT} manifest")
    version = manifest.get("format_version", BUNDLE_FORMAT_VERSION)
    if not isinstance(version, int) or version > BUNDLE_FORMAT_VERSION:
        raise BundleError(
            f"format_version: {version!r} is newer than this runtime reads "
            f"({BUNDLE_FORMAT_VERSION}); update rig-edge before deploying this bundle"
        )


def open_bundle(
    bundle: Path | str, public_key: PublicKeyLike | None
) -> tuple[Path, dict[str, Any], tempfile.TemporaryDirectory[str] | None]:
    """A bundle directory or tar, verified: (directory of its files, manifest, the temporary
    directory a tar was unpacked into, to keep alive while the files are used). Shared by every
    runtime that loads a bundle (``BundleScorer``, ``detector.rul.RulBundle``), so detectors
    and RUL models pass the same checks."""
    path = Path(bundle)
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if path.is_file():
        if public_key is None:
            raise BundleError("a tar bundle can only be loaded with its public key")
        tmp = tempfile.TemporaryDirectory(prefix="rig-bundle-")
        path = extract_bundle(path, tmp.name, public_key)
    if public_key is not None:
        manifest = verify_bundle(path, public_key)
    else:
        # Unsigned use (development, tests): still refuse files that do not match.
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path}: unreadable {MANIFEST} ({exc})") from None
        for name, digest in manifest.get("files", {}).items():
            if sha256_file(path / name) != digest:
                raise TamperedBundleError(f"{name} does not match its SHA-256")
    return path, manifest, tmp


@dataclass
class _MachineState:
    """Rolling state of one machine between batches: the last row (to fill gaps), the last
    ``sequence_length - 1`` rows (the start of the next LSTM windows) and the last
    ``smooth_window - 1`` combined scores (the start of the next trailing means)."""

    last: np.ndarray
    history: np.ndarray
    recent: np.ndarray
    checks: CheckState | None = None


@dataclass
class BatchScores:
    """The bundle's verdict on ``n`` rows, in the order they were given.

    ``score`` is the smoothed strategy score divided by the strategy's decision threshold
    (above 1.0 is an anomaly; 0.0 while ``warming_up``, i.e. before any component has an
    opinion on the machine). ``probability_ahead`` is NaN before the machine's first full
    LSTM window and ``None`` for a bundle without LSTM. ``contributions`` ranks the sensors
    of the flagged rows only, and ``missing`` names the sensors each row lacked (filled with
    the machine's last value of that sensor before scoring). ``forecast`` maps the last row
    of each machine that has an LSTM window to its next ``prediction_horizon`` readings
    ``(H, len(sensors))`` in raw units; only that row, because the newest forecast is the one
    anybody draws and de-standardising every row would cost the hot path for nothing. Empty
    for a bundle without LSTM or one exported before the manifest carried the scaling."""

    score: np.ndarray
    is_anomaly: np.ndarray
    warming_up: np.ndarray
    probability_ahead: np.ndarray | None
    contributions: dict[int, list[dict[str, float | str]]]
    missing: dict[int, list[str]]
    forecast: dict[int, np.ndarray] = field(default_factory=dict)


class BundleScorer:
    """A verified bundle, ready to score rows of its ``sensors`` (manifest order)."""

    def __init__(
        self,
        bundle: Path | str,
        public_key: PublicKeyLike | None = None,
        strategy: str | None = None,
        threads: int = 1,
    ) -> None:
        path, manifest, self._tmp = open_bundle(bundle, public_key)
        check_format(manifest)
        self.manifest: dict[str, Any] = manifest
        self.version: str = manifest["version"]
        self.strategy: str = strategy or manifest["strategy"]
        if self.strategy not in manifest["strategies"]:
            raise ValueError(f"strategy: the bundle has no strategy {self.strategy!r}")
        self.sensors: list[str] = list(manifest["sensors"])
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
        # z -> raw units for the forecast (absent in bundles exported before it was written).
        self._forecast_scaling: tuple[np.ndarray, np.ndarray] | None = None
        if lstm and "forecast_mean" in lstm and "forecast_scale" in lstm:
            mean = np.asarray(lstm["forecast_mean"], dtype=np.float64)
            scale = np.asarray(lstm["forecast_scale"], dtype=np.float64)
            if mean.shape != (len(self.sensors),) or scale.shape != mean.shape:
                raise BundleError(
                    "components.lstm.forecast_mean: expected one value per sensor "
                    f"({len(self.sensors)})"
                )
            self._forecast_scaling = (mean, scale)
        # Stuck and drift checks (absent in bundles exported before them: the hybrid alone).
        try:
            self.checks = FaultChecks.from_manifest(manifest, len(self.sensors))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"fault_checks: {exc}") from None
        self._machines: dict[str, _MachineState] = {}
        self._lstm_outputs = (
            [o.name for o in self._sessions[LSTM].get_outputs()] if LSTM in self._sessions else []
        )

    # -- scoring ------------------------------------------------------------------------------

    def score_rows(self, X: np.ndarray, machine: str) -> BatchScores:
        """Score the rows ``(n, len(sensors))`` of one machine, in time order, continuing the
        machine's rolling state. NaN or infinite values are missing values."""
        return self.score_groups(X, {machine: np.arange(len(X))})

    def score_groups(self, X: np.ndarray, groups: Mapping[str, np.ndarray]) -> BatchScores:
        """Score rows of several machines at once: ``groups`` maps each machine to the indexes
        of its rows in ``X``, in time order (the rows of one machine need not be adjacent).

        Per-row Python work is kept out of here: the windows, the gap filling and the
        smoothing are done per machine on whole arrays (a Python step per row and sensor cost
        more than all the models together)."""
        X, missing = self._checked(X)
        n = len(X)
        if n == 0:
            empty = np.empty(0)
            no_prob = empty.copy() if LSTM in self._sessions else None
            return BatchScores(empty, empty > 0, empty > 0, no_prob, {}, {})
        lstm = LSTM in self._sessions
        windows = np.empty((n, self._window, X.shape[1]), dtype=np.float32) if lstm else X
        ready: list[np.ndarray] = []
        filled = 0
        checks = np.zeros(X.shape) if self.checks.active else None
        for machine, idx in groups.items():
            if len(idx) == 0:
                continue
            state = self._state(machine)
            if checks is not None:
                # Before the gap filling: a filled gap must not look like a stuck sensor.
                if state.checks is None:
                    state.checks = self.checks.new_state()
                checks[idx] = self.checks.scores(X[idx], state.checks)
            if missing:
                self._fill_gaps(X, idx, state, missing)
            state.last = X[idx[-1]].copy()
            if lstm:
                filled = self._append_windows(X, idx, state, windows, filled, ready)

        normalized: dict[str, np.ndarray] = {}
        raw_shares: dict[str, np.ndarray] = {}
        prob: np.ndarray | None = None
        forecast: dict[int, np.ndarray] = {}
        for name, session in self._sessions.items():
            if name == LSTM:
                normalized[name], raw_shares[name], prob, forecast = self._run_lstm(
                    session, n, windows[:filled], ready
                )
            else:
                score, contrib = session.run(None, {self._inputs[name]: X})
                normalized[name] = score.astype(np.float64) / self._thresholds[name]
                raw_shares[name] = contrib
        combined = combine(self.strategy, normalized, self._weights)
        smoothed = self._smoothed(groups, combined)
        hybrid = smoothed / self._decision
        combined_scores = with_checks(hybrid, checks)
        finite = np.isfinite(combined_scores)
        scores = np.where(finite, combined_scores, 0.0)
        flagged = scores > 1.0
        # Readings a check flagged beyond the hybrid's score name the sensors it found.
        # NaN as 0 (np.nan_to_num, whose Python wrapper costs more than the comparison; its
        # mapping of infinities changes no comparison with the finite scores).
        by_check = flagged & (scores > np.where(np.isnan(hybrid), 0.0, hybrid))
        contributions = self._ranked(normalized, raw_shares, flagged & ~by_check)
        if checks is not None:
            rows = np.flatnonzero(by_check)
            if rows.size:
                named = check_contributors_rows(checks[rows], self.sensors)
                contributions.update(zip(rows.tolist(), named, strict=True))
        return BatchScores(
            score=scores,
            is_anomaly=flagged,
            warming_up=~finite,
            probability_ahead=prob,
            contributions=contributions,
            missing=missing,
            forecast=forecast,
        )

    def reset(self, machine_id: str | None = None) -> None:
        """Forget the rolling state of one machine (or all), e.g. after a long data gap."""
        if machine_id is None:
            self._machines.clear()
        else:
            self._machines.pop(machine_id, None)

    # -- internals ----------------------------------------------------------------------------

    def _checked(self, X: np.ndarray) -> tuple[np.ndarray, dict[int, list[str]]]:
        """Float32 rows with NaN where a value is missing or not finite, and the missing
        sensors per row. The check runs on the values as given (float64 for the edge's
        readings), before the cast."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != len(self.sensors):
            raise ValueError(
                f"rows: expected shape (n, {len(self.sensors)}) in the bundle's sensor order, "
                f"got {X.shape}"
            )
        bad = ~np.isfinite(X)
        missing: dict[int, list[str]] = {}
        if bad.any():
            X = np.where(bad, np.nan, X)
            sensors = self.sensors
            for i in np.flatnonzero(bad.any(axis=1)).tolist():
                missing[i] = [sensors[j] for j in np.flatnonzero(bad[i]).tolist()]
        return np.ascontiguousarray(X, dtype=np.float32), missing

    @staticmethod
    def _fill_gaps(
        X: np.ndarray, idx: np.ndarray, state: _MachineState, missing: dict[int, list[str]]
    ) -> None:
        """A gap is filled with the machine's last value of that sensor (the training mean
        before it has one): sensors move little between readings, while the mean can sit far
        from the current operating point and fake an anomaly."""
        previous = state.last
        for i in idx.tolist():
            if i in missing:
                np.copyto(X[i], previous, where=np.isnan(X[i]))
            previous = X[i]

    def _append_windows(
        self,
        X: np.ndarray,
        idx: np.ndarray,
        state: _MachineState,
        windows: np.ndarray,
        filled: int,
        ready: list[np.ndarray],
    ) -> int:
        """Copy the LSTM windows ending at this machine's new rows (those with L rows of
        history) into ``windows`` from row ``filled``; returns the new fill level."""
        L = self._window
        seq = np.concatenate([state.history, X[idx]])
        state.history = seq[max(0, len(seq) - (L - 1)) :].copy()
        count = len(seq) - L + 1  # windows that fit; the history is at most L - 1 rows
        if count <= 0:
            return filled
        if count == 1:  # one new row (a 1 Hz rig): its window is the tail, no strided view
            windows[filled] = seq[len(seq) - L :]
            ready.append(idx[len(idx) - 1 :])
            return filled + 1
        # Window k of seq is rows k .. k + L - 1 (a strided view, copied once below).
        rows, d = seq.strides
        view = np.lib.stride_tricks.as_strided(seq, (count, L, seq.shape[1]), (rows, rows, d))
        windows[filled : filled + count] = view
        ready.append(idx[len(idx) - count :])
        return filled + count

    def _state(self, machine_id: str) -> _MachineState:
        state = self._machines.get(machine_id)
        if state is None:
            d = len(self.sensors)
            state = _MachineState(
                last=self._fill.copy(),
                history=np.empty((0, d), dtype=np.float32),
                recent=np.empty(0),
            )
            self._machines[machine_id] = state
        return state

    def _run_lstm(
        self,
        session: ort.InferenceSession,
        n: int,
        windows: np.ndarray,
        ready: list[np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, np.ndarray]]:
        d = len(self.sensors)
        normalized = np.full(n, np.nan)
        errors_all = np.full((n, d), np.nan)
        prob = np.full(n, np.nan)
        forecast: dict[int, np.ndarray] = {}
        if len(windows):
            rows = np.concatenate(ready)
            outputs = dict(
                zip(
                    self._lstm_outputs,
                    session.run(self._lstm_outputs, {self._inputs[LSTM]: windows}),
                    strict=True,
                )
            )
            errors = outputs["sensor_error"]
            # errors.mean(axis=1, dtype=float64) without np.mean's Python wrapper (same bits).
            mean_error = np.add.reduce(errors, axis=1, dtype=np.float64) / errors.shape[1]
            normalized[rows] = mean_error / self._thresholds[LSTM]
            errors_all[rows] = errors
            if self._forecast_threshold:
                prob[rows] = probability_ahead(outputs["forecast"], self._forecast_threshold)
            if self._forecast_scaling is not None:
                # ``ready`` holds each machine's rows in window order: its last window is the
                # machine's newest row.
                mean, scale = self._forecast_scaling
                position = -1
                for idx in ready:
                    position += len(idx)
                    z = outputs["forecast"][position].astype(np.float64)
                    forecast[int(idx[-1])] = z * scale + mean
        return normalized, errors_all, prob, forecast

    def _smoothed(self, groups: Mapping[str, np.ndarray], combined: np.ndarray) -> np.ndarray:
        """Mean of the finite combined scores among each machine's last ``smooth_window``
        (``detector.features.trailing_mean`` continued across batches). All machines in one
        pass: each machine's new scores follow its last ``smooth_window - 1`` ones, front-
        padded with NaN (ignored, like scores that were never there), so no window reaches
        into another machine's segment."""
        keep = max(self._smooth - 1, 0)
        parts: list[np.ndarray] = []
        spans: list[tuple[np.ndarray, int, int]] = []
        start = 0
        out = np.empty(len(combined))
        for machine, idx in groups.items():
            if len(idx) == 0:
                continue
            state = self._machines[machine]
            if len(combined) == 1 and keep:
                # The batch is one reading (a 1 Hz rig): its mean in Python floats, the very
                # sums and division trailing_mean does on this machine's segment alone (with
                # more rows the segments share one cumulative sum, whose differences round
                # otherwise), without a dozen numpy calls on 20 values.
                i = int(idx[0])
                seq = state.recent.tolist()
                seq.append(float(combined[i]))
                if len(seq) <= keep:
                    seq = [math.nan] * (keep + 1 - len(seq)) + seq
                out[i] = _mean_of_finite(seq)
                state.recent = np.array(seq[1:])
                continue
            values = combined[idx]
            recent = state.recent
            if len(recent) < keep:
                recent = np.concatenate([np.full(keep - len(recent), np.nan), recent])
            seq = np.concatenate([recent, values]) if keep else values
            state.recent = seq[len(seq) - keep :]
            parts.append(seq)
            spans.append((idx, start + keep, start + len(seq)))
            start += len(seq)
        if not parts:
            return out
        means = trailing_mean(np.concatenate(parts), self._smooth)
        for idx, lo, hi in spans:
            out[idx] = means[lo:hi]
        return out

    def _ranked(
        self,
        normalized: dict[str, np.ndarray],
        raw_shares: dict[str, np.ndarray],
        flagged: np.ndarray,
    ) -> dict[int, list[dict[str, float | str]]]:
        """Top contributing sensors of the flagged rows only: explaining every row would
        cost more than scoring it."""
        rows = np.flatnonzero(flagged)
        if rows.size == 0:
            return {}
        contributions = combine_shares(
            self.strategy,
            {k: v[rows] for k, v in normalized.items()},
            {k: shares(v[rows]) for k, v in raw_shares.items()},
            self._weights,
        )
        return dict(
            zip(rows.tolist(), top_contributors_rows(contributions, self.sensors), strict=True)
        )


def _mean_of_finite(values: list[float]) -> float:
    """``trailing_mean(values, len(values))[-1]`` to the bit: NaN counts as 0.0 in a running
    sum that starts at the first value (``np.cumsum``), divided by the number of non-NaN
    values; NaN when there are none."""
    total = 0.0
    count = 0
    for k, v in enumerate(values):
        valid = not math.isnan(v)
        x = v if valid else 0.0
        total = x if k == 0 else total + x
        count += valid
    return total / count if count else math.nan
