"""Remaining useful life at run time: a RUL bundle (written by ``models.rul.export``) run with
ONNX Runtime, and the per-machine tracker the edge runs beside the detector.

Only onnxruntime and numpy (plus the bundle checks shared with ``detector.bundle``): this is
what the rig PC runs, and what the benchmark, ``models.evaluate cmapss`` / ``rul-sim`` and the
cloud's validation gate score with, so the published numbers are the edge model's.

A rig bundle (``unit: hours``) names ``step_s``: the model sees one row per ``step_s`` seconds
(the mean of the readings in that span), so a window of 30 rows covers half an hour of wear
whatever the sampling rate. ``RulTracker`` keeps those rows per machine and predicts each time
a step closes; the prediction travels in the closing reading's ``detection.rul``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from detector.bundle import open_bundle
from shared.model_bundle import BundleError, PublicKeyLike

RUL_BUNDLE_FORMAT = "rig-alpha-rul-bundle"
RUL_BUNDLE_FORMAT_VERSION = 1
# Sensors named as driving the countdown: at most this many, each with at least this share.
MAX_CRITICAL_SENSORS = 5
MIN_CRITICAL_SHARE = 0.01
# Below this much life given back in all (a share of the model's cap), the sensors are noise
# around the healthy reference, not what drives a countdown: none is named.
MIN_CRITICAL_GAIN = 0.02
# A prediction this close to the model's cap means "at least max_rul": the model has seen no
# wear, and the number is a floor, not an estimate.
CAPPED_FRACTION = 0.97


def check_rul_format(manifest: Mapping[str, Any]) -> None:
    """Refuse a manifest that is not a RUL bundle, or of a newer layout than this reads."""
    kind = manifest.get("format")
    if kind != RUL_BUNDLE_FORMAT:
        raise BundleError(f"format: {kind!r} is not a {RUL_BUNDLE_FORMAT} manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > RUL_BUNDLE_FORMAT_VERSION:
        raise BundleError(
            f"format_version: {version!r} is not one this runtime reads "
            f"(<= {RUL_BUNDLE_FORMAT_VERSION})"
        )


def is_rul_manifest(manifest: Mapping[str, Any]) -> bool:
    return manifest.get("format") == RUL_BUNDLE_FORMAT


@dataclass
class RulPrediction:
    rul: np.ndarray
    low: np.ndarray
    high: np.ndarray


def _pad(history: np.ndarray, length: int) -> np.ndarray:
    """Same as ``models.rul.data.last_window`` (kept here so the edge imports numpy only)."""
    h = np.asarray(history, dtype=np.float32)
    if h.ndim != 2 or len(h) == 0:
        raise ValueError(f"history: shape {h.shape}, expected (rows >= 1, sensors)")
    if len(h) >= length:
        return h[-length:]
    return np.concatenate([np.repeat(h[:1], length - len(h), axis=0), h])


class OnnxRul:
    """An ONNX RUL graph (input ``window`` (N, L, d) float32 raw; outputs ``rul``, ``low``,
    ``high``) in one single-threaded ONNX Runtime session."""

    def __init__(self, onnx_model: bytes | Path | str, threads: int = 1) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        data = onnx_model if isinstance(onnx_model, bytes) else Path(onnx_model).read_bytes()
        self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        shape = self.session.get_inputs()[0].shape
        self.input_name = self.session.get_inputs()[0].name
        self.window, self.n_sensors = int(shape[1]), int(shape[2])
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run_windows(self, windows: np.ndarray) -> RulPrediction:
        W = np.ascontiguousarray(windows, dtype=np.float32)
        if W.ndim != 3 or W.shape[1:] != (self.window, self.n_sensors):
            raise ValueError(
                f"windows: shape {W.shape}, expected (n, {self.window}, {self.n_sensors})"
            )
        out = dict(
            zip(self.output_names, self.session.run(None, {self.input_name: W}), strict=True)
        )
        return RulPrediction(
            *(np.asarray(out[k], dtype=np.float64).reshape(-1) for k in ("rul", "low", "high"))
        )

    def predict_histories(self, histories: Sequence[np.ndarray]) -> RulPrediction:
        """One prediction per history, at its last row (short histories padded in front)."""
        return self.run_windows(np.stack([_pad(h, self.window) for h in histories]))


class RulBundle(OnnxRul):
    """A verified RUL bundle: its manifest plus the ONNX session."""

    def __init__(
        self, bundle: Path | str, public_key: PublicKeyLike | None = None, threads: int = 1
    ) -> None:
        path, manifest, self._tmp = open_bundle(bundle, public_key)
        check_rul_format(manifest)
        self.manifest: dict[str, Any] = manifest
        self.version: str = str(manifest["version"])
        self.sensors: list[str] = list(manifest["sensors"])
        self.max_rul = float(manifest["max_rul"])
        self.unit = str(manifest.get("unit", "cycles"))
        super().__init__(path / manifest["model"]["file"], threads=threads)
        if self.n_sensors != len(self.sensors) or self.window != manifest["window"]:
            raise BundleError(
                f"model: input ({self.window}, {self.n_sensors}) does not match the manifest's "
                f"window {manifest['window']} and {len(self.sensors)} sensors"
            )

    def critical_sensors(self, window: np.ndarray, rul: float) -> list[dict[str, Any]]:
        """Which sensors shorten the predicted life, with their share: each sensor's window is
        put back at the healthy reference (``manifest.reference``) and the life that gives
        back is that sensor's part. Empty when nothing takes life away (a healthy machine)."""
        reference = self.manifest.get("reference")
        if not reference or rul >= CAPPED_FRACTION * self.max_rul:
            return []
        base = np.asarray(window, dtype=np.float32)
        d = len(self.sensors)
        probes = np.repeat(base[None], d, axis=0)
        for j in range(d):
            probes[j, :, j] = float(reference[j])
        gains = np.clip(self.run_windows(probes).rul - rul, 0.0, None)
        total = float(gains.sum())
        if not math.isfinite(total) or total <= MIN_CRITICAL_GAIN * self.max_rul:
            return []
        order = np.argsort(-gains)
        out = []
        for j in order[:MAX_CRITICAL_SENSORS].tolist():
            share = float(gains[j] / total)
            if share >= MIN_CRITICAL_SHARE:
                out.append({"sensor": self.sensors[j], "share": round(share, 4)})
        return out


@dataclass
class _Track:
    """One machine's rows (one per ``step_s``), the step being filled and its readings."""

    rows: list[np.ndarray] = field(default_factory=list)
    step: int | None = None
    sums: np.ndarray | None = None
    counts: np.ndarray | None = None
    last: np.ndarray | None = None


class RulTracker:
    """Per machine: the readings folded into one row per ``step_s`` seconds, and a prediction
    each time a step closes (the first reading of the next step carries it).

    ``observe`` takes ``(machine, epoch seconds, values)`` in time order and returns, for the
    positions whose reading closed a step, the ``detection.rul`` document. A missing value is
    left out of its step's mean; a step with no value of a sensor repeats the last one (the
    healthy reference before any)."""

    def __init__(self, bundle: RulBundle) -> None:
        if bundle.unit != "hours" or not bundle.manifest.get("step_s"):
            raise BundleError(
                f"unit: the edge runs RUL bundles in hours with a step_s; this one counts "
                f"{bundle.unit!r} with step_s {bundle.manifest.get('step_s')!r}"
            )
        self.bundle = bundle
        self.version = bundle.version
        self.sensors = bundle.sensors
        self.step_s = float(bundle.manifest["step_s"])
        reference = bundle.manifest.get("reference") or [0.0] * len(self.sensors)
        self._reference = np.asarray(reference, dtype=np.float64)
        self._tracks: dict[str, _Track] = {}

    def observe(
        self, items: Sequence[tuple[str, float, Mapping[str, float | None]]]
    ) -> dict[int, dict[str, Any]]:
        closed: list[tuple[int, str]] = []
        for i, (machine, ts, values) in enumerate(items):
            track = self._tracks.setdefault(machine, _Track())
            step = math.floor(ts / self.step_s)
            if track.step is not None and step < track.step:
                continue  # a late reading of a step already closed: its row is written
            if track.step is not None and step != track.step:
                self._close(track)
                closed.append((i, machine))
            if track.step != step:
                track.step = step
                track.sums = np.zeros(len(self.sensors))
                track.counts = np.zeros(len(self.sensors))
            row = np.array([_finite(values.get(name)) for name in self.sensors], dtype=np.float64)
            ok = np.isfinite(row)
            assert track.sums is not None and track.counts is not None
            track.sums[ok] += row[ok]
            track.counts[ok] += 1
        if not closed:
            return {}
        windows = np.stack(
            [_pad(np.stack(self._tracks[m].rows), self.bundle.window) for _, m in closed]
        )
        pred = self.bundle.run_windows(windows)
        out: dict[int, dict[str, Any]] = {}
        for k, (i, machine) in enumerate(closed):
            rul, low, high = float(pred.rul[k]), float(pred.low[k]), float(pred.high[k])
            out[i] = {
                "rul_hours": round(rul, 4),
                "low_hours": round(min(low, rul), 4),
                "high_hours": round(max(high, rul), 4),
                "max_hours": round(self.bundle.max_rul, 4),
                "capped": rul >= CAPPED_FRACTION * self.bundle.max_rul,
                "rows": len(self._tracks[machine].rows),
                "critical_sensors": self.bundle.critical_sensors(windows[k], rul),
                "model_version": self.version,
            }
        return out

    def _close(self, track: _Track) -> None:
        assert track.sums is not None and track.counts is not None
        previous = track.last if track.last is not None else self._reference
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = track.sums / track.counts
        row = np.where(track.counts > 0, mean, previous)
        track.last = row
        track.rows.append(row)
        if len(track.rows) > self.bundle.window:
            del track.rows[0]

    def reset(self, machine_id: str | None = None) -> None:
        if machine_id is None:
            self._tracks.clear()
        else:
            self._tracks.pop(machine_id, None)


def _finite(value: float | None) -> float:
    if value is None:
        return math.nan
    v = float(value)
    return v if math.isfinite(v) else math.nan
