"""The Sparkplug B peer of the tests: pysparkplug (PyPI), a Sparkplug implementation nobody
here wrote, as an edge node in a process of its own.

pysparkplug requires paho-mqtt<2 while the edge runs paho-mqtt 2, so the peer lives in a
venv of its own, ``<project venv>/peers/sparkplug``, built from the registries on first use
from ``requirements-sparkplug.txt`` (rebuilt when that file changes; a file lock keeps two
test processes from building it at once).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements-sparkplug.txt"
SCRIPT = HERE / "sparkplug_node.py"


def peer_python() -> Path:
    """The peer venv's interpreter, built (or rebuilt) when needed."""
    venv = Path(sys.prefix) / "peers" / "sparkplug"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    stamp = venv / f".requirements-{digest}"
    python = venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / ".sparkplug.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run(
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "-r",
                    str(REQUIREMENTS),
                ],
                check=True,
            )
            stamp.touch()
    return python


class SparkplugPeer:
    """One pysparkplug edge node process; ``send`` a command, ``expect`` an event."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [str(peer_python()), str(SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.commands: list[dict[str, Any]] = []  # NCMDs received, in order
        self.reborn = 0  # rebirths answered (with answer_rebirth)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                doc = json.loads(line)
                if doc.get("event") == "ncmd":
                    self.commands.append(doc)
                elif doc.get("event") == "reborn":
                    self.reborn += 1
                else:
                    self.events.put(doc)

    def send(self, op: str, **args: Any) -> dict[str, Any]:
        """Run one command; its answer (``ok``, or ``skipped`` with the seq skipped)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        try:
            doc = self.events.get(timeout=60)
        except queue.Empty:
            raise AssertionError(f"peer: no answer to {op}; stderr: {self._stderr()}") from None
        if doc.get("event") == "error":
            raise AssertionError(f"peer: {op} failed: {doc['error']}")
        if doc.get("event") == "skipped":
            self.events.get(timeout=60)  # its ok
        return doc

    def _stderr(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()[-2000:]

    def kill(self) -> None:
        """SIGKILL: the broker publishes the node's will (NDEATH)."""
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
