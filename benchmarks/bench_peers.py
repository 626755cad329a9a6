"""Peers side by side (issue 17, item 4): Rig Alpha's `rig-edge`, ThingsBoard IoT Gateway
(PyPI, in a venv of its own) and Telegraf's Modbus input (built from the Go module proxy by
`make bench-peers`, optional) read the same simulator Modbus device — unit 1, the 50 float32
sensor values in holding registers 10..109 — at the same poll intervals (1 s, 100 ms, 10 ms),
one tool at a time, in one run against one `rig-sim` process.

What each tool *delivers downstream* is counted there, not what it was configured for:
- rig-edge: readings committed to its SQLite buffer and forwarded by its HTTP output, counted
  by the HTTP receiver of this process (values in the request bodies it acknowledged);
- ThingsBoard gateway: telemetry it publishes to its ThingsBoard MQTT endpoint (a local
  Mosquitto), counted by a subscriber on ``v1/gateway/telemetry``;
- Telegraf: fields its outputs.file writes as line protocol, counted from the file.

CPU is the process tree's utime+stime from /proc/<pid>/stat over the measurement window, per
1,000 values delivered in it; RSS is the tree's VmRSS at the end of the window. The ratio is
Rig Alpha / peer (below 1: Rig Alpha spends less CPU per value). Downstream receivers
(Mosquitto, this process) are not charged to anyone. Progress on stderr; one JSON object on
the last line of stdout. On a shared 2-core machine the CPU figures are noisy (the JSON
carries the load average): compare ratios from one run, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
import yaml

from benchmarks.peers import (
    DEVICE_NAME,
    EDGE_KEY_ENV,
    TB_REQUIREMENTS,
    TB_SESSION_LIMITS,
    TB_TELEMETRY_TOPIC,
    line_protocol_values,
    rig_edge_config,
    sensors,
    tb_telemetry_values,
    telegraf_config,
    thingsboard_configs,
)
from tests.support.pipeline import start_simulator
from tests.support.processes import Mosquitto, free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
TELEGRAF = ROOT / ".cache" / "peers-bin" / "telegraf"
TELEGRAF_BUILD_LOG = ROOT / ".cache" / "peers-bin" / "telegraf-build.log"
POLLS = {"1s": 1.0, "100ms": 0.1, "10ms": 0.01}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TB_RPC_REQUEST = "v1/devices/me/rpc/request/"
START_S = 60.0  # a tool's first value downstream, at the latest


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the peers' installation ----------------------------------------------------------------


def thingsboard_python() -> Path:
    """ThingsBoard gateway's venv, ``<project venv>/peers/thingsboard``, built from PyPI
    (rebuilt when requirements-thingsboard.txt changes; a file lock keeps two runs apart)."""
    venv = Path(sys.prefix) / "peers" / "thingsboard"
    digest = hashlib.sha256(TB_REQUIREMENTS.read_bytes()).hexdigest()[:16]
    stamp = venv / f".requirements-{digest}"
    python = venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / ".thingsboard.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            _say("installing ThingsBoard IoT Gateway from PyPI into its own venv …")
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
                    str(TB_REQUIREMENTS),
                ],
                check=True,
            )
            stamp.touch()
    return python


def _telegraf_or_reason() -> tuple[Path | None, str]:
    if TELEGRAF.exists():
        return TELEGRAF, ""
    tail = ""
    if TELEGRAF_BUILD_LOG.exists():
        lines = TELEGRAF_BUILD_LOG.read_text(errors="replace").strip().splitlines()
        tail = ": " + " | ".join(lines[-3:])
    return None, f"not built from the Go module proxy (make bench-peers builds it){tail}"


def _go_module_version(binary: Path) -> str:
    """The module version `go install` built (Telegraf's own --version says "unknown" when
    built without its release ldflags)."""
    try:
        info = subprocess.run(
            ["go", "version", "-m", str(binary)], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    for line in info.splitlines():
        fields = line.split()
        if fields[:2] == ["mod", "github.com/influxdata/telegraf"] and len(fields) > 2:
            return fields[2]
    return "unknown"


# -- process accounting ----------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    try:
        return [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cpu_s(pids: list[int]) -> float:
    """utime+stime of ``pids`` from /proc/<pid>/stat (fields 14 and 15), in seconds."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            continue
        # The command name (field 2) may hold spaces: count fields after its ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def _rss_mb(pids: list[int]) -> float:
    total_kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total_kb / 1024


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


# -- the downstream counters -----------------------------------------------------------------


class Counter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = 0

    def add(self, values: int) -> None:
        with self._lock:
            self._values += values

    def __call__(self) -> int:
        with self._lock:
            return self._values


class IngestReceiver:
    """The edge's HTTP output's destination: acknowledges every batch (200) and counts the
    values in it; the edge's status reports get their 204."""

    def __init__(self) -> None:
        self.count = Counter()
        count = self.count

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.endswith("/ingest"):
                    doc = json.loads(body)
                    count.add(sum(len(r["values"]) for r in doc["readings"]))
                    reply = json.dumps({"stored": len(doc["readings"])}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                else:
                    self.send_response(204)
                    self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/api/v1/ingest"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ThingsBoardEndpoint:
    """The ThingsBoard side of the gateway's MQTT session, on a real Mosquitto: counts the
    values of the gateway-API telemetry it publishes, and answers its ``getSessionLimits``
    RPC as a ThingsBoard server does (the gateway sends nothing before that answer)."""

    def __init__(self, port: int) -> None:
        self.count = Counter()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-peers-tb")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([(TB_TELEMETRY_TOPIC, 0), (f"{TB_RPC_REQUEST}+", 1)])
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == TB_TELEMETRY_TOPIC:
            self.count.add(tb_telemetry_values(message.payload))
        elif json.loads(message.payload).get("method") == "getSessionLimits":
            request_id = message.topic.removeprefix(TB_RPC_REQUEST)
            client.publish(
                f"v1/devices/me/rpc/response/{request_id}", json.dumps(TB_SESSION_LIMITS), qos=1
            )

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class LineFileCounter:
    """Counts the fields of complete line-protocol lines appended to a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._values = 0

    def __call__(self) -> int:
        if self.path.exists():
            with self.path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1  # a partly written last line waits for next time
            for line in chunk[:end].decode().splitlines():
                self._values += line_protocol_values(line)
            self._offset += end
        return self._values


# -- one measurement -------------------------------------------------------------------------


def measure(
    tool: str,
    poll: str,
    start: Callable[[], subprocess.Popen[bytes]],
    delivered: Callable[[], int],
    window_s: float,
    log: Path,
) -> dict[str, Any]:
    # The counters run for the whole benchmark: this tool's values are those past ``base``.
    base = delivered()
    proc = start()
    try:

        def delivering() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{tool} exited with {proc.returncode}; see {log}")
            return delivered() > base

        note = None
        try:
            wait_until(delivering, START_S, f"{tool} delivering values at {poll}")
        except AssertionError:
            # Running but silent: measured all the same (it delivers 0 values/s), not a failure.
            note = f"nothing delivered in the {START_S:.0f} s after start"
        time.sleep(3.0)  # past the start-up burst: connections, first flushes
        pids = _tree(proc.pid)
        c0, cpu0, t0 = delivered(), _cpu_s(pids), time.perf_counter()
        time.sleep(window_s)
        pids = _tree(proc.pid)
        c1, cpu1, t1 = delivered(), _cpu_s(pids), time.perf_counter()
        rss = _rss_mb(pids)
    finally:
        _stop(proc)
    values = c1 - c0
    configured = len(sensors()) / POLLS[poll]
    result: dict[str, Any] = {
        "delivered_values_per_s": round(values / (t1 - t0), 1),
        "configured_values_per_s": round(configured, 1),
        "cpu_per_1000_values": round(1e6 * (cpu1 - cpu0) / values, 1) if values else None,
        "cpu_cores": round((cpu1 - cpu0) / (t1 - t0), 3),
        "rss_mb": round(rss, 1),
    }
    if note is not None:
        result["note"] = note
    _say(f"  {tool} @ {poll}: {result}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="window per tool and rate")
    parser.add_argument("--polls", default=",".join(POLLS), help="subset of 1s,100ms,10ms")
    args = parser.parse_args()
    polls = args.polls.split(",")
    load_before = os.getloadavg()[0]

    peers: dict[str, dict[str, Any]] = {}
    tb_python: Path | None = None
    try:
        python = thingsboard_python()
        version = subprocess.run(
            [str(python), "-c", "from thingsboard_gateway.version import VERSION; print(VERSION)"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        peers["thingsboard-gateway"] = {"version": version}
        tb_python = python
    except (subprocess.CalledProcessError, OSError) as exc:
        peers["thingsboard-gateway"] = {"not_installed": f"pip install from PyPI failed: {exc}"}
    telegraf, reason = _telegraf_or_reason()
    if telegraf is None:
        peers["telegraf"] = {"not_installed": reason}
    else:
        peers["telegraf"] = {
            "version": _go_module_version(telegraf),
            "plugins": "inputs.modbus, outputs.file",
        }

    rig: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        work = Path(tmp)
        logs = work / "logs"
        logs.mkdir()
        (work / "mosquitto").mkdir()
        broker = Mosquitto(work / "mosquitto")
        broker.start()
        # 100 samples/s on the simulator: the 10 ms poll sees fresh values, as from a fast PLC.
        sim, sim_port = start_simulator(
            logs, None, ["A"], 100.0, extra_args=["--log-level", "WARNING"]
        )
        receiver = IngestReceiver()
        subscriber = ThingsBoardEndpoint(broker.port)
        try:
            for poll in polls:
                poll_s = POLLS[poll]
                _say(f"poll every {poll}, {args.seconds:.0f} s per tool …")
                tag = poll.replace(".", "_")

                edge_log = logs / f"rig-edge-{tag}.log"
                edge_conf = work / f"edge-{tag}.yaml"
                edge_conf.write_text(
                    yaml.safe_dump(
                        rig_edge_config(
                            sim_port, poll_s, receiver.url, work / f"edge-{tag}.db", free_port()
                        )
                    )
                )
                rig[poll] = measure(
                    "rig-alpha",
                    poll,
                    partial(
                        _spawn,
                        [sys.executable, "-m", "edge.cli", "run", "-c", str(edge_conf)],
                        edge_log,
                        env={EDGE_KEY_ENV: "bench-peers-" + "k" * 24},
                    ),
                    receiver.count,
                    args.seconds,
                    edge_log,
                )

                if tb_python is not None:
                    gw = work / f"tb-{tag}"
                    (gw / "config").mkdir(parents=True)
                    for name, text in thingsboard_configs(sim_port, poll_s, broker.port).items():
                        (gw / "config" / name).write_text(text)
                    tb_log = logs / f"thingsboard-{tag}.log"
                    peers["thingsboard-gateway"][poll] = _attempt(
                        "thingsboard-gateway",
                        poll,
                        partial(
                            _spawn,
                            [str(tb_python), "-m", "thingsboard_gateway.tb_gateway"],
                            tb_log,
                            env={"TB_GW_CONFIG_DIR": str(gw / "config")},
                            cwd=gw,
                        ),
                        subscriber.count,
                        args.seconds,
                        tb_log,
                    )

                if telegraf is not None:
                    out = work / f"telegraf-{tag}.lp"
                    conf = work / f"telegraf-{tag}.conf"
                    tg_log = logs / f"telegraf-{tag}.log"
                    conf.write_text(telegraf_config(sim_port, poll_s, out, tg_log))
                    peers["telegraf"][poll] = _attempt(
                        "telegraf",
                        poll,
                        partial(
                            _spawn, [str(telegraf), "--config", str(conf)], logs / f"tg-{tag}.out"
                        ),
                        LineFileCounter(out),
                        args.seconds,
                        tg_log,
                    )
        finally:
            subscriber.close()
            receiver.close()
            sim.stop()
            broker.stop()

    for peer in peers.values():
        for poll in polls:
            result = peer.get(poll)
            if not isinstance(result, dict) or "cpu_per_1000_values" not in result:
                continue
            ours, theirs = rig[poll]["cpu_per_1000_values"], result["cpu_per_1000_values"]
            result["cpu_per_1000_values_ratio"] = (
                round(ours / theirs, 3) if ours is not None and theirs else None
            )
            result["delivered_ratio"] = (
                round(rig[poll]["delivered_values_per_s"] / result["delivered_values_per_s"], 2)
                if result["delivered_values_per_s"]
                else None
            )
    print(
        json.dumps(
            {
                "device": f"rig-sim unit 1 ({DEVICE_NAME}): {len(sensors())} float32 values, "
                "holding registers 10..109, simulator at 100 samples/s",
                "window_s": args.seconds,
                "units": {
                    "delivered_values_per_s": "values that reached each tool's downstream",
                    "cpu_per_1000_values": "CPU milliseconds (user+system, process tree) per "
                    "1,000 values delivered (clock-tick resolution: 10 ms per window)",
                    "rss_mb": "resident memory of the process tree at the end of the window",
                    "cpu_per_1000_values_ratio": "Rig Alpha / peer (below 1: Rig Alpha cheaper)",
                },
                "rig_alpha": rig,
                "peers": peers,
                "load_average_1min": {
                    "before": round(load_before, 2),
                    "after": round(os.getloadavg()[0], 2),
                    "cores": os.cpu_count(),
                },
            }
        )
    )


def _spawn(
    argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,  # its own process group: stopped with its children
        )


def _attempt(
    tool: str,
    poll: str,
    start: Callable[[], subprocess.Popen[bytes]],
    delivered: Callable[[], int],
    window_s: float,
    log: Path,
) -> dict[str, Any]:
    """A peer that fails at one rate is reported with the reason, and the run goes on."""
    try:
        return measure(tool, poll, start, delivered, window_s, log)
    except (RuntimeError, AssertionError) as exc:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
        reason = f"{str(exc).splitlines()[0]} | {' | '.join(tail)}"
        _say(f"  {tool} @ {poll}: FAILED {reason}")
        return {"failed": reason}


if __name__ == "__main__":
    main()
