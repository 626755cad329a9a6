"""Small helpers for editing ONNX graphs produced by the converters."""

from __future__ import annotations

import hashlib
from typing import Any


def append_outputs(model: Any, outputs: list[tuple[str, int, list[int | None]]]) -> None:
    """Declare graph outputs ``(name, onnx element type, shape)``; ``None`` = dynamic dim."""
    from onnx import helper

    for name, elem_type, shape in outputs:
        model.graph.output.append(helper.make_tensor_value_info(name, elem_type, shape))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
