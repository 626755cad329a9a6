"""The three commands say which version they are (a technician reads it to support)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.version import version

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("command", ["rig-edge", "rig-cloud", "rig-sim"])
def test_version_flag(command: str) -> None:
    result = subprocess.run(
        [str(BIN / command), "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{command} {version()} (Python "), result.stdout
    assert version() != "0+unknown"
