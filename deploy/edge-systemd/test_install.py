"""The installer from the offline bundle (`make wheelhouse`): installs into a scratch root,
runs again as an upgrade in place, and refuses a Python older than 3.11 with a message."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the installer runs as root (useradd)"),
]


def _scratch_env(root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "RIG_EDGE_PREFIX": str(root / "opt"),
        "RIG_EDGE_CONF_DIR": str(root / "etc"),
        "RIG_EDGE_UNIT_DIR": str(root / "unit"),
        "RIG_EDGE_BIN_DIR": str(root / "bin"),
    }


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        ["bash", str(HERE / "bundle.sh"), sys.executable, str(out)],
        check=True,
        timeout=900,
        capture_output=True,
    )
    (tarball,) = out.glob("rig-edge-*.tar.gz")
    unpacked = tmp_path_factory.mktemp("rig")
    with tarfile.open(tarball) as tar:
        tar.extractall(unpacked, filter="data")
    (folder,) = unpacked.iterdir()
    assert (folder / "requirements-edge.lock").exists()
    assert list((folder / "wheels").glob("rig_alpha-*.whl"))
    return folder


def _install(bundle: Path, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "bash",
            str(bundle / "deploy/edge-systemd/install.sh"),
            "--wheel-dir",
            str(bundle / "wheels"),
            *extra,
        ],
        env=_scratch_env(root),
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_offline_install_then_upgrade_in_place(bundle: Path, tmp_path: Path) -> None:
    first = _install(bundle, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    rig_edge = tmp_path / "opt/venv/bin/rig-edge"
    version = subprocess.run([str(rig_edge), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("rig-edge "), version
    assert (tmp_path / "etc/edge.yaml").exists()
    assert (tmp_path / "unit/rig-edge.service").exists()
    assert (tmp_path / "bin/rig-edge").resolve() == rig_edge.resolve()
    # Nothing of the cloud or the training stack on the rig.
    site = next((tmp_path / "opt/venv/lib").glob("python3*/site-packages"))
    assert not list(site.glob("tensorflow*")) and not list(site.glob("fastapi*"))

    (tmp_path / "etc/edge.yaml").write_text("edge_id: kept-by-the-technician\n")
    second = _install(bundle, tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "rig-edge: rig-edge " in second.stdout, second.stdout  # before -> after versions
    assert "Successfully installed rig-alpha" in second.stdout, second.stdout
    # The technician's config is never overwritten; the new version says it fails the check.
    assert (tmp_path / "etc/edge.yaml").read_text() == "edge_id: kept-by-the-technician\n"
    assert "does not pass check-config" in second.stderr, second.stderr


def test_an_old_python_is_refused_with_a_message(bundle: Path, tmp_path: Path) -> None:
    old = tmp_path / "python3.10"
    old.write_text('#!/bin/sh\ncase "$1" in -V) echo "Python 3.10.12";; *) exit 1;; esac\n')
    old.chmod(0o755)
    result = _install(bundle, tmp_path / "root", "--python", str(old))
    assert result.returncode == 1
    assert "Python >= 3.11 is required" in result.stderr, result.stderr
    assert "Python 3.10.12" in result.stderr
    assert not (tmp_path / "root/opt").exists()
