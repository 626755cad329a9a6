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


def _rig_cloud(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "rig-cloud"), *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_cloud_commands_refuse_to_run_without_a_database(tmp_path: Path) -> None:
    for command in ("migrate", "maintain", "serve", "aggregate"):
        result = _rig_cloud([command, "--data-dir", str(tmp_path / "pg")], {}, tmp_path)
        assert result.returncode == 2, (command, result.stderr)
        assert "DATABASE_URL" in result.stderr and "--embedded" in result.stderr, result.stderr
    assert not (tmp_path / "pg").exists(), "no throwaway database was started"


def test_an_unreachable_database_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    from tests.support.processes import free_port

    url = f"postgresql://nobody@127.0.0.1:{free_port()}/x"
    result = _rig_cloud(["migrate"], {"DATABASE_URL": url}, tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().startswith("rig-cloud migrate: database unavailable:")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
