"""Ctrl-C at the terminal stops `make demo` cleanly: the demo runs under a real pseudo
terminal behind a shell (as make runs it), the terminal's interrupt character is typed, and
the demo stops its children in order and exits 0, the shell above it untouched."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import shlex
import sys
import time
from pathlib import Path

import pytest

from tests.support.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[1]


def _read_until(fd: int, text: str, seen: bytearray, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text.encode() in seen:
            return True
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the terminal closed: everything has exited
                break
            if not chunk:
                break
            seen.extend(chunk)
    return text.encode() in seen


def test_ctrl_c_stops_the_demo_with_exit_0(tmp_path: Path) -> None:
    demo = [
        sys.executable, "-m", "tools.demo", "--port", str(free_port()),
        "--state-dir", str(tmp_path / "state"), "--rate", "2",
    ]  # fmt: skip
    # The shell stands in for make: it must get no SIGINT and print the demo's exit code.
    script = f"cd {shlex.quote(str(ROOT))} && {shlex.join(demo)}; echo DEMO_EXIT=$?"
    pid, fd = pty.fork()
    if pid == 0:  # the child: a new session whose controlling terminal is the pty
        os.execvp("bash", ["bash", "-c", script])
    seen = bytearray()
    try:
        assert _read_until(fd, "Press Ctrl-C to stop.", seen, 150), seen.decode(errors="replace")
        os.write(fd, b"\x03")  # the terminal driver turns it into SIGINT for the foreground
        assert _read_until(fd, "DEMO_EXIT=", seen, 90), seen.decode(errors="replace")
        _read_until(fd, "\n", seen, 1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(fd)
    out = seen.decode(errors="replace")
    assert "DEMO_EXIT=0" in out, out
    assert "exited unexpectedly" not in out, out
    assert "stopped" in out, out
    lines = [line.strip() for line in out.split("stopping …", 1)[1].splitlines()]
    order = [name for name in lines if name.startswith("rig-")]
    # The reverse of the start: the edge first (it flushes to the cloud), the simulator last.
    assert order[0] == "rig-edge" and order[-1] == "rig-sim", out
    assert order.index("rig-cloud") == len(order) - 2, out
