"""A RUL bundle (written by ``models.rul.export``) run with ONNX Runtime: histories in, remaining
life and its interval out.

Only onnxruntime and numpy (plus the bundle checks in ``shared.model_bundle``): this is what the
rig PC will run beside the detector, and what the benchmark and ``models.evaluate cmapss`` score
with, so the published numbers are the edge model's.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from shared.model_bundle import (
    MANIFEST,
    BundleError,
    PublicKeyLike,
    TamperedBundleError,
    extract_bundle,
    sha256_file,
    verify_bundle,
)

RUL_BUNDLE_FORMAT = "rig-alpha-rul-bundle"
RUL_BUNDLE_FORMAT_VERSION = 1


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
        path = Path(bundle)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if path.is_file():
            if public_key is None:
                raise BundleError("a tar bundle can only be loaded with its public key")
            self._tmp = tempfile.TemporaryDirectory(prefix="rig-rul-bundle-")
            path = extract_bundle(path, self._tmp.name, public_key)
        if public_key is not None:
            manifest = verify_bundle(path, public_key)
        else:
            # Unsigned use (development, tests): still refuse files that do not match.
            manifest = json.loads((path / MANIFEST).read_text())
            for name, digest in manifest.get("files", {}).items():
                if sha256_file(path / name) != digest:
                    raise TamperedBundleError(f"{name} does not match its SHA-256")
        check_rul_format(manifest)
        self.manifest = manifest
        self.sensors: list[str] = list(manifest["sensors"])
        super().__init__(path / manifest["model"]["file"], threads=threads)
        if self.n_sensors != len(self.sensors) or self.window != manifest["window"]:
            raise BundleError(
                f"model: input ({self.window}, {self.n_sensors}) does not match the manifest's "
                f"window {manifest['window']} and {len(self.sensors)} sensors"
            )
