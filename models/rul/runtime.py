"""Compatibility: the RUL runtime lives in ``detector.rul`` (the edge may not import
``models``). Import from there; these names stay for existing callers."""

from __future__ import annotations

from detector.rul import (
    RUL_BUNDLE_FORMAT,
    RUL_BUNDLE_FORMAT_VERSION,
    OnnxRul,
    RulBundle,
    RulPrediction,
    RulTracker,
    check_rul_format,
)

__all__ = [
    "RUL_BUNDLE_FORMAT",
    "RUL_BUNDLE_FORMAT_VERSION",
    "OnnxRul",
    "RulBundle",
    "RulPrediction",
    "RulTracker",
    "check_rul_format",
]
