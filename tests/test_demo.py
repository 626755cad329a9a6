"""`make demo` (tools/demo.py): the whole system comes up on embedded defaults and
/api/stats shows readings for A, B and C, growing, within 60 s."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.accounts import bearer
from tests.support.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
ROOT = Path(__file__).resolve().parents[1]


def _stats(port: int, token: str) -> dict | None:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/api/stats", timeout=2, headers=bearer(token))
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def _login_as_printed(log: Path, port: int, started: float) -> str:
    """Logs in with the user name and password the demo printed, as a person would."""
    while time.monotonic() - started < 60:
        match = re.search(r"Log in as\s*:\s*(\S+) / (\S+)", log.read_text())
        if match:
            response = httpx.post(
                f"http://127.0.0.1:{port}/api/v1/auth/login",
                json={"username": match.group(1), "password": match.group(2)},
                timeout=10,
            )
            assert response.status_code == 200, response.text
            return str(response.json()["token"])
        time.sleep(0.5)
    raise AssertionError("the demo printed no login:\n" + log.read_text())


def test_demo_comes_up_and_readings_grow(tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "demo.log").open("wb")
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools.demo",
            "--port",
            str(port),
            "--state-dir",
            str(tmp_path / "state"),
            "--rate",
            "2",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        started = time.monotonic()
        token = _login_as_printed(tmp_path / "demo.log", port, started)
        first = None
        while time.monotonic() - started < 60:
            stats = _stats(port, token)
            if stats and set(stats["machines"]) >= {"A", "B", "C"}:
                first = stats
                break
            assert demo.poll() is None, (tmp_path / "demo.log").read_text()
            time.sleep(1)
        assert first is not None, (
            "no readings for A, B and C within 60 s:\n" + (tmp_path / "demo.log").read_text()
        )
        time.sleep(3)
        later = _stats(port, token)
        assert later is not None
        for machine in ("A", "B", "C"):
            assert (
                later["machines"][machine]["total_readings"]
                > first["machines"][machine]["total_readings"]
            )
            assert len(later["machines"][machine]["latest"]) == 50
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(60)
        except subprocess.TimeoutExpired:
            demo.kill()
    assert demo.returncode == 0, (tmp_path / "demo.log").read_text()
    # Nothing is left running: the embedded PostgreSQL stops with the cloud.
    import psutil

    state = str(tmp_path / "state")
    leftovers = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any(state in part for part in (p.info["cmdline"] or []))
    ]
    assert leftovers == []
