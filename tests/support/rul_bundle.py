"""A small, real RUL bundle for tests that need one in seconds (no TensorFlow): an ONNX graph
built by hand whose remaining life falls as the window's mean vibration rises above its
healthy level, with the interval and manifest layout of ``models.rul.export``.

rul = clip(max_rul - slope * (mean(window[:, :, vibration]) - healthy), 0, max_rul);
low = low_factor * rul, high = high_factor * rul (0.8 and 1.2 by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from detector.rul import RUL_BUNDLE_FORMAT, RUL_BUNDLE_FORMAT_VERSION
from shared.model_bundle import PrivateKeyLike, sign_bundle, write_manifest
from simulator.fleet import RUL_SENSORS, STEP_S


def rul_onnx(
    window: int,
    n_sensors: int,
    healthy: float,
    slope: float,
    max_rul: float,
    low_factor: float = 0.8,
    high_factor: float = 1.2,
) -> bytes:
    import onnx
    from onnx import TensorProto, helper

    def const(name: str, value: Any, dtype: Any = np.float32) -> Any:
        arr = np.asarray(value, dtype=dtype)
        return helper.make_node(
            "Constant",
            [],
            [name],
            value=helper.make_tensor(
                name + "_t",
                TensorProto.FLOAT if dtype == np.float32 else TensorProto.INT64,
                arr.shape,
                arr.flatten().tolist(),
            ),
        )

    nodes = [
        const("starts", [0], np.int64),
        const("ends", [1], np.int64),
        const("axes", [2], np.int64),
        helper.make_node("Slice", ["window", "starts", "ends", "axes"], ["vib"]),
        const("raxes", [1, 2], np.int64),
        helper.make_node("ReduceMean", ["vib", "raxes"], ["m"], keepdims=0),
        const("healthy", healthy),
        const("slope", slope),
        const("cap", max_rul),
        const("zero", 0.0),
        const("lo", low_factor),
        const("hi", high_factor),
        helper.make_node("Sub", ["m", "healthy"], ["d"]),
        helper.make_node("Mul", ["d", "slope"], ["used"]),
        helper.make_node("Sub", ["cap", "used"], ["raw"]),
        helper.make_node("Clip", ["raw", "zero", "cap"], ["rul"]),
        helper.make_node("Mul", ["rul", "lo"], ["low"]),
        helper.make_node("Mul", ["rul", "hi"], ["high"]),
    ]
    graph = helper.make_graph(
        nodes,
        "test_rul",
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, ["N", window, n_sensors])],
        [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N"])
            for name in ("rul", "low", "high")
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_test_rul_bundle(
    directory: Path,
    *,
    version: str = "rul-test-1",
    private_key: PrivateKeyLike | None = None,
    window: int = 5,
    step_s: float = STEP_S,
    healthy_vibration: float = 2.2,
    hours_per_unit: float = 40.0,
    max_rul: float = 240.0,
    low_factor: float = 0.8,
    high_factor: float = 1.2,
) -> dict[str, Any]:
    """A signed (when a key is given) RUL bundle over ``RUL_SENSORS`` in hours."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rul.onnx").write_bytes(
        rul_onnx(
            window,
            len(RUL_SENSORS),
            healthy_vibration,
            hours_per_unit,
            max_rul,
            low_factor,
            high_factor,
        )
    )
    reference = [healthy_vibration, 147.0, 130.0, 72.0, 3250.0, 27.5]
    manifest = {
        "format": RUL_BUNDLE_FORMAT,
        "format_version": RUL_BUNDLE_FORMAT_VERSION,
        "kind": "rul",
        "version": version,
        "created_at": "2026-11-29T00:00:00Z",
        "sensors": list(RUL_SENSORS),
        "window": window,
        "unit": "hours",
        "max_rul": max_rul,
        "interval": 0.8,
        "step_s": step_s,
        "reference": reference,
        "model": {"file": "rul.onnx", "input": "window", "outputs": ["rul", "low", "high"]},
        "training_window": {"runs": 0, "windows": 0},
        "metrics": {},
    }
    doc = write_manifest(directory, manifest)
    if private_key is not None:
        sign_bundle(directory, private_key)
    return doc
