"""The detector runtime stays installable on the rig: numpy and ONNX Runtime only, shipped in
the wheel the ``edge`` extra installs."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_runtime_imports_no_training_stack() -> None:
    code = (
        "import sys, detector.bundle, detector.features, detector.strategies, detector.rul\n"
        "import detector.checks, detector.stuck, detector.drift\n"
        "ours = ('models', 'edge', 'cloud', 'simulator')\n"
        "heavy = ('tensorflow', 'keras', 'sklearn', 'onnx', 'skl2onnx', 'tf2onnx')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ours + heavy]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_runtime_is_packaged() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    assert any(fnmatch.fnmatch("detector", pattern) for pattern in include), include
