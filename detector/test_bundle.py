"""The scorer reads the manifest's format fields: a bundle from a newer trainer is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detector.bundle import BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION, BundleScorer, check_format
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
