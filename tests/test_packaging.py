"""The edge installs without TensorFlow, scikit-learn, FastAPI or psycopg (rig PCs are small
and the edge must never pull the cloud's stack)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_ON_EDGE = {
    "tensorflow",
    "tensorflow-cpu",
    "keras",
    "scikit-learn",
    "fastapi",
    "psycopg",
    "psycopg-binary",
    "psycopg-pool",
    "starlette",
    "uvicorn",
}


@pytest.mark.slow
@pytest.mark.integration
def test_edge_extra_resolves_without_cloud_or_ml_packages(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    # A dry-run resolution as in a clean virtualenv: what `pip install .[edge]` would install.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--disable-pip-version-check",
            "--report",
            str(report),
            f"{ROOT}[edge]",
        ],
        check=True,
        timeout=600,
        cwd=tmp_path,
    )
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"pymodbus", "confluent-kafka", "onnxruntime", "sqlite-utils"} <= names
    assert not names & FORBIDDEN_ON_EDGE, names & FORBIDDEN_ON_EDGE
