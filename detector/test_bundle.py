"""The scorer reads the manifest's format fields: a bundle from a newer trainer is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detector.bundle import (
    BUNDLE_FORMAT,
    BUNDLE_FORMAT_VERSION,
    BundleScorer,
    _mean_of_finite,
    check_format,
)
from detector.features import trailing_mean
from shared.model_bundle import MANIFEST, BundleError


def test_current_and_older_manifests_pass() -> None:
    check_format({"format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION})
    check_format({})  # written before the fields existed


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"format_version": BUNDLE_FORMAT_VERSION + 1}, "format_version"),
        ({"format_version": "2"}, "format_version"),
        ({"format": "someone-elses-bundle"}, "format"),
    ],
)
def test_a_bundle_of_another_or_newer_format_is_refused_on_load(
    tmp_path: Path, fields: dict[str, object], field: str
) -> None:
    (tmp_path / MANIFEST).write_text(json.dumps({"version": "x", "files": {}} | fields))
    with pytest.raises(BundleError, match=f"^{field}:"):
        BundleScorer(tmp_path)


def test_one_reading_smoothing_is_trailing_mean_to_the_bit() -> None:
    """A batch of one reading is smoothed in Python floats; it must give trailing_mean's
    value exactly (NaN ignored, a zero-valid window NaN)."""
    rng = np.random.default_rng(4)
    for case in range(200):
        values = rng.normal(0.0, 3.0, 20)
        values[rng.random(20) < [0.0, 0.3, 1.0][case % 3]] = np.nan
        expected = trailing_mean(values, len(values))[-1]
        got = _mean_of_finite(values.tolist())
        assert (np.isnan(expected) and np.isnan(got)) or got == expected
