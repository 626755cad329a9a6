"""Running the product's real processes (rig-sim, rig-edge, rig-cloud) from tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

# The line a Service writes into its process's log when the test kills it: the exactly-once
# checker (tests/support/pipeline.py) reads it as the moment that run of the process ended.
HARNESS_KILL_EVENT = "SIGKILL sent by the test harness"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """One child process with its output in a log file (shown when a test fails)."""

    def __init__(
        self, name: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.args = args
        self.log_path = log_dir / f"{name}.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL: no clean-up code of the process runs. The moment is written to the
        process's log (after it is dead, so no line of its own is cut in half)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        sent = time.time()
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._mark_kill(sent)

    def _mark_kill(self, sent: float) -> None:
        assert self.proc is not None
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sent))
        line = {
            "ts": f"{stamp}.{int(sent * 1000) % 1000:03d}Z",
            "level": "info",
            "service": "test-harness",
            "event": HARNESS_KILL_EVENT,
            "pid": self.proc.pid,
        }
        with self.log_path.open("a") as log:
            log.write(json.dumps(line) + "\n")

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                sent = time.time()
                self.proc.kill()
                self.proc.wait(10)
                self._mark_kill(sent)
        return self.proc.returncode

    def wait_failpoint(self, name: str, timeout: float = 60) -> None:
        """Wait until the process stopped itself at failpoint ``name`` (shared/failpoints.py):
        it must have died by SIGKILL right after logging that it reached exactly that line."""
        assert self.proc is not None, f"{self.name} was never started"
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not reach failpoint {name} within {timeout}s:\n{self.tail()}"
            ) from None
        assert self.proc.returncode == -signal.SIGKILL, (
            f"{self.name} exited with {self.proc.returncode}, not by its failpoint's SIGKILL:\n"
            f"{self.tail()}"
        )
        assert f"failpoint {name} reached" in self.log_path.read_text(errors="replace"), (
            f"{self.name} died by SIGKILL without logging failpoint {name}:\n{self.tail()}"
        )

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.2,
    services: list[Service] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        for service in services or []:
            if service.proc is not None and service.proc.poll() is not None:
                raise AssertionError(
                    f"{service.name} exited with {service.proc.returncode} while waiting for "
                    f"{what}:\n{service.tail()}"
                )
        time.sleep(interval)
    details = "\n".join(f"--- {s.name}\n{s.tail()}" for s in services or [])
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{details}")


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


class Mosquitto:
    """A real Mosquitto broker (Debian's package) on a loopback port, restartable on the same
    port with its persistence, so persistent sessions survive a broker restart."""

    def __init__(
        self, base: Path, port: int | None = None, tls: tuple[Path, Path, Path] | None = None
    ) -> None:
        """``tls``: (CA, server certificate, server key) PEM files; the one listener then
        speaks TLS only."""
        import shutil

        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(self.binary).exists():
            raise RuntimeError("mosquitto is not installed: apt-get install -y mosquitto")
        self.base = base
        self.port = port or free_port()
        self.conf = base / "mosquitto.conf"
        listener = f"listener {self.port} 127.0.0.1\n"
        if tls is not None:
            ca, cert, key = tls
            listener += f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
        if os.geteuid() == 0:
            # Started as root, mosquitto drops to its own user before it reads certificates
            # or writes its persistence file, and that user cannot open the test's private
            # (0700) temporary folders: persistent sessions would not survive a restart.
            listener += "user root\n"
        self.conf.write_text(
            f"{listener}allow_anonymous true\n"
            f"persistence true\npersistence_location {base}/\nautosave_interval 1\n"
            "max_queued_messages 100000\nmax_inflight_messages 1000\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.base / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start; see {self.base / 'mosquitto.log'}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def shared_data_dir() -> Path:
    """The project's data sets (SKAB, C-MAPSS): ``$RIG_SHARED_DATA`` or ``../shared/data``
    beside the checkout, as on every developer machine and in CI."""
    import os

    root = Path(__file__).resolve().parents[2]
    path = Path(os.environ.get("RIG_SHARED_DATA", root.parent / "shared" / "data"))
    if not path.is_dir():
        raise AssertionError(f"data sets not found at {path}: set RIG_SHARED_DATA")
    return path
