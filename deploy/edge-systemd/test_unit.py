"""The systemd unit passes `systemd-analyze verify` (with ExecStart pointing at this
checkout's rig-edge instead of the installed /opt/rig-edge)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.integration  # runs Debian's systemd-analyze, a system package
def test_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing: make test installs Debian's systemd as root"
    rig_edge = Path(sys.executable).with_name("rig-edge")
    unit = (
        (HERE / "rig-edge.service")
        .read_text()
        .replace("/opt/rig-edge/venv/bin/rig-edge", str(rig_edge))
    )
    (tmp_path / "rig-edge.service").write_text(unit)
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / "rig-edge.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "rig-edge.service" not in result.stderr, result.stderr  # no warnings either


def test_unit_is_hardened_and_supervised() -> None:
    unit = (HERE / "rig-edge.service").read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=always",
        "User=rig-edge",
        "ProtectSystem=strict",
        "StateDirectory=rig-edge",
        "NoNewPrivileges=yes",
    ):
        assert line in unit, line
