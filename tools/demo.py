"""``make demo``: the whole system on one machine with embedded defaults.

Starts the cloud (API and dashboard on http://127.0.0.1:8080 with an embedded PostgreSQL
under var/demo/), the alerting service, the rig simulator (Modbus TCP), the model trainer, and
an edge gateway that polls the simulator, forwards over HTTP to the cloud's ingest API and runs
the models the trainer ships.

The simulator injects faults on the schedule of simulator/scenarios/demo.yaml, counted from its
start (the banner prints the times): a pressure spike on A after a minute (the edge's
thresholds catch it, so the first anomaly needs no model), cavitation on B later, and C's
bearing wearing out over the first hour (a RUL model trained on simulated run-to-failure fleets
is signed, gated and shipped to the edge at start, and the dashboard's EST. LIFE countdown of C
falls towards zero). ``rig-cloud alerts`` runs with rules that fire on those faults and
delivers to a mail catcher and a webhook receiver the demo serves itself on 127.0.0.1
(tools/demo_alerts.py), which append what they receive to var/demo/alerts/mail.log and
webhook.log. The anomaly feed (/anomalies) shows the anomalies, the alerts and the acknowledge
and resolve steps. ``--schedule-scale`` (or RIG_DEMO_SCHEDULE_SCALE) shrinks or stretches the
schedule. Ctrl-C stops everything (exit 0); data persists in var/demo/ for the next run.

Ctrl-C at a terminal goes to the terminal's foreground process group: make, this process and
(before) the children, so the simulator died first and the demo reported it as a crash while
make reported an interrupt. Now the children run in sessions of their own and this process
takes the terminal's foreground for itself while it runs: Ctrl-C reaches only the demo, which
stops the children in order and exits 0, and make with it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import yaml

from simulator.edge_config import simulator_edge_config
from tools.demo_alerts import (
    MAIL_TO,
    AlertReceivers,
    configure_alerting,
    scaled_scenario,
    schedule_lines,
)

ROOT = Path(__file__).resolve().parents[1]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Child:
    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        handle = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            # Not in the terminal's process group: Ctrl-C is for the demo, which stops the
            # children itself, in order.
            start_new_session=True,
        )
        handle.close()
        self.log = log

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@contextlib.contextmanager
def terminal_foreground() -> Iterator[None]:
    """While inside, this process alone is the terminal's foreground process group (so
    Ctrl-C reaches neither make nor the children); the previous group is restored after.
    Nothing happens without a terminal or when run in the background."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        yield
        return
    restore: Callable[[], None] | None = None
    try:
        previous = os.tcgetpgrp(fd)
        if previous == os.getpgrp() and os.getpid() != os.getsid(0):
            os.setpgid(0, 0)
            # tcsetpgrp from a background group raises SIGTTOU: ignored for the call.
            old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            try:
                os.tcsetpgrp(fd, os.getpgrp())
            finally:
                signal.signal(signal.SIGTTOU, old)

            def restore() -> None:
                old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
                try:
                    os.tcsetpgrp(fd, previous)
                finally:
                    signal.signal(signal.SIGTTOU, old)

    except OSError:
        restore = None
    try:
        yield
    finally:
        if restore is not None:
            with contextlib.suppress(OSError):
                restore()
        os.close(fd)


def _last_event(log: Path) -> str:
    """The last thing a child logged (its JSON lines' event), to show while waiting."""
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "starting"
    for line in reversed(lines):
        try:
            return str(json.loads(line).get("event", line))[:80]
        except (ValueError, AttributeError):
            continue
    return "starting"


ML_ON = (
    "  ML detectors  : trained from the stored history once each machine has ~1,900\n"
    "                  readings (~16 min at 2 Hz; the trainer retries every 6 min),\n"
    "                  validated, then shipped to the edge (GET /api/v1/models)\n"
    "  EST. LIFE     : machine C's bearing wears out over the first hour; the RUL\n"
    "                  model (trained on simulated run-to-failure fleets, ~3 min)\n"
    "                  counts it down on the overview (GET /api/v1/rul)\n"
)
ML_OFF = "  ML detectors  : off (--without-ml): the edge judges by thresholds only\n"


def _announce_alert(text: str) -> None:
    """A line on the demo's console for each alert the receivers get."""
    print(f"  [{datetime.now(UTC):%H:%M:%S}] alert delivered: {text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    with terminal_foreground():
        return _run(argv)


def _run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8080, help="dashboard/API port")
    parser.add_argument("--rate", type=float, default=2.0, help="simulator samples/s/machine")
    parser.add_argument("--state-dir", type=Path, default=ROOT / "var" / "demo")
    parser.add_argument(
        "--duration", type=float, default=0, help="stop after this many seconds (0: until Ctrl-C)"
    )
    parser.add_argument(
        "--schedule-scale",
        type=float,
        default=float(os.environ.get("RIG_DEMO_SCHEDULE_SCALE") or 1.0),
        help="multiply the fault schedule's times by this (0.1: the first fault after 6 s "
        "instead of 60 s); default RIG_DEMO_SCHEDULE_SCALE or 1",
    )
    parser.add_argument(
        "--without-ml",
        action="store_true",
        help="no model training (thresholds only): a lighter demo, for tests",
    )
    args = parser.parse_args(argv)
    if not args.schedule_scale > 0:
        parser.error(f"--schedule-scale: must be > 0, not {args.schedule_scale}")

    state: Path = args.state_dir
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if not _port_free(args.port):
        print(
            f"port {args.port} on 127.0.0.1 is in use; stop what uses it or pass --port",
            file=sys.stderr,
        )
        return 1

    key_file = state / "ingest-api-key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(32))
        key_file.chmod(0o600)
    password_file = state / "admin-password"
    if not password_file.exists():
        password_file.write_text(secrets.token_urlsafe(12))
        password_file.chmod(0o600)
    env = {
        **os.environ,
        "RIG_INGEST_API_KEY_FILE": str(key_file),
        "RIG_BOOTSTRAP_ADMIN_PASSWORD_FILE": str(password_file),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DATABASE_URL", None)  # the demo always uses its embedded PostgreSQL
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)

    sim_port = _free_port()
    db_port = _free_port()
    machines = ["A", "B", "C"]
    # The model-signing key pair: the trainer signs bundles, the edge verifies them.
    signing_key, signing_pub = state / "model-signing.key", state / "model-signing.pub"
    if not signing_key.exists():
        from shared.model_bundle import generate_keypair

        private, public = generate_keypair()
        signing_key.write_bytes(private)
        signing_key.chmod(0o600)
        signing_pub.write_bytes(public)
    children: list[Child] = []
    receivers: AlertReceivers | None = None

    def shutdown(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, shutdown)
    # Set, not inherited: a shell starts background jobs with SIGINT ignored, and Ctrl-C (or
    # kill -INT) must stop the demo however it was started.
    signal.signal(signal.SIGINT, shutdown)
    try:
        print("starting the cloud (embedded PostgreSQL) …", flush=True)
        children.append(
            Child(
                "rig-cloud",
                [
                    "cloud.cli",
                    "serve",
                    "--port",
                    str(args.port),
                    "--embedded",
                    "--data-dir",
                    str(state / "postgres"),
                    "--db-port",
                    str(db_port),
                ],
                logs / "rig-cloud.log",
                env,
            )
        )
        base = f"http://127.0.0.1:{args.port}"
        waiting_since = time.monotonic()
        deadline = waiting_since + 90
        next_note = waiting_since + 3
        print(f"waiting for the cloud to answer {base}/readyz …", flush=True)
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            for child in children:
                if not child.alive():
                    print(f"{child.name} exited; see {child.log}", file=sys.stderr)
                    return 1
            if time.monotonic() > deadline:
                print(f"the cloud did not become ready; see {logs}", file=sys.stderr)
                return 1
            if time.monotonic() >= next_note:
                # What the cloud is doing (first start: initdb, migrations) while we wait.
                elapsed = time.monotonic() - waiting_since
                note = _last_event(logs / "rig-cloud.log")
                print(f"  … {elapsed:3.0f} s, the cloud: {note}", flush=True)
                next_note += 5
            time.sleep(0.3)
        print(
            "the cloud is ready; starting alerting, the simulator, the trainer and the edge …",
            flush=True,
        )
        database_url = f"postgresql://postgres@127.0.0.1:{db_port}/rigalpha"
        # Alerts go to receivers the demo serves itself (nothing to set up, nothing leaves
        # the machine), through channels and rules it keeps pointed at them.
        receivers = AlertReceivers(
            state / "alerts", smtp_port=_free_port(), announce=_announce_alert
        ).start()
        try:
            configure_alerting(database_url, receivers.smtp_port, receivers.webhook_url)
        except (psycopg.Error, ValueError) as exc:
            # An admin may have reshaped the demo's channels or rules: the demo runs on.
            print(f"could not set up the demo's alert channels and rules: {exc}", file=sys.stderr)
        children.append(
            Child(
                "rig-cloud-alerts",
                ["cloud.cli", "alerts", "--tick", "5"],
                logs / "rig-cloud-alerts.log",
                {**env, "DATABASE_URL": database_url},
            )
        )
        # The simulator starts only now: its fault schedule counts from its start, and the
        # edge must be polling when the first fault comes (a first start of the cloud, with
        # initdb and migrations, takes a while).
        scenario = scaled_scenario(
            ROOT / "simulator" / "scenarios" / "demo.yaml", args.schedule_scale
        )
        scenario_path = state / "scenario.yaml"
        scenario_path.write_text(yaml.safe_dump(scenario, sort_keys=False))
        sim_started = datetime.now(UTC)
        # First in the list: stopped last, after the edge has flushed.
        children.insert(
            0,
            Child(
                "rig-sim",
                [
                    "simulator.cli",
                    "run",
                    "--scenario",
                    str(scenario_path),
                    "--ground-truth",
                    str(state / "ground-truth.jsonl"),
                    "--machines",
                    ",".join(machines),
                    "--rate",
                    str(args.rate),
                    "--modbus-port",
                    str(sim_port),
                ],
                logs / "rig-sim.log",
                env,
            ),
        )

        edge_cfg = simulator_edge_config(
            sim_host="127.0.0.1",
            sim_port=sim_port,
            machines=machines,
            output={"kind": "http", "url": f"{base}/api/v1/ingest", "api_key_file": str(key_file)},
            buffer_path=state / "edge-buffer.db",
            poll_interval_s=min(1.0, 0.5 / args.rate),
            edge_id="demo-edge",
            metrics_port=_free_port(),
        )
        edge_cfg["models"] = {
            "cloud_url": base,
            "api_key_file": str(key_file),
            "public_key_file": str(signing_pub),
            "directory": str(state / "edge-models"),
            "poll_interval_s": 30,
        }
        # The trainer learns each machine's normal behaviour from what has been stored,
        # retrying every few minutes until there is enough, then ships the models.
        trainer_env = {
            **env,
            "DATABASE_URL": database_url,
            "RIG_MODEL_SIGNING_KEY_FILE": str(signing_key),
        }
        if not args.without_ml:
            children.append(
                Child(
                    "rig-cloud-trainer",
                    ["cloud.cli", "trainer", "--interval-hours", "0.1", "--days", "1"],
                    logs / "rig-cloud-trainer.log",
                    trainer_env,
                )
            )
            # The RUL model: one training on a simulated fleet (a few minutes), then signed,
            # gated and registered for every machine; the edge picks it up at its next poll.
            children.append(
                Child(
                    "rig-cloud-train-rul",
                    [
                        "cloud.cli",
                        "model",
                        "train-rul",
                        *machines,
                        "--runs",
                        "32",
                        "--epochs",
                        "25",
                    ],
                    logs / "rig-cloud-train-rul.log",
                    trainer_env,
                )
            )
        edge_path = state / "edge.yaml"
        edge_path.write_text(yaml.safe_dump(edge_cfg, sort_keys=False))
        children.append(
            Child("rig-edge", ["edge.cli", "run", "-c", str(edge_path)], logs / "rig-edge.log", env)
        )

        print(
            "\nRig Alpha demo is running.\n"
            f"  Dashboard     : {base}/\n"
            f"  Log in as     : admin / {password_file.read_text().strip()}"
            f"  (password kept in {password_file})\n"
            f"  Statistics    : {base}/api/stats (after logging in)\n"
            f"  API docs      : {base}/docs\n"
            f"  Ingest key    : {key_file} (header X-API-KEY for POST {base}/api/v1/ingest)\n"
            f"  Edge health   : http://127.0.0.1:{edge_cfg['metrics']['port']}/healthz\n"
            + (ML_OFF if args.without_ml else ML_ON)
            + f"  Anomaly feed  : {base}/anomalies (anomalies, alerts; acknowledge and resolve)\n"
            "  Alerts        : rules 'demo critical anomaly' and 'demo remaining life under\n"
            "                  30 min' (GET /api/v1/alerting/rules), run by `rig-cloud alerts`,\n"
            "                  deliver each alert (one per fault: FIRING, then RESOLVED) to\n"
            f"    e-mail      : {MAIL_TO} via the demo's mail catcher"
            f" smtp://127.0.0.1:{receivers.smtp_port}\n"
            f"                  -> {receivers.mail_log}\n"
            f"    webhook     : POST {receivers.webhook_url}\n"
            f"                  -> {receivers.webhook_log}\n"
            "                  (and a line here for each delivery)\n"
            f"  Fault schedule: (simulator/scenarios/demo.yaml x {args.schedule_scale:g})\n"
            + "".join(f"    {line}\n" for line in schedule_lines(scenario, sim_started))
            + f"  Logs          : {logs}/\n"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        started = time.monotonic()
        while True:
            time.sleep(1)
            for child in children:
                if child.name == "rig-cloud-train-rul" and not child.alive():
                    continue  # a one-off job: it ends when the model is registered
                if not child.alive():
                    print(f"{child.name} exited unexpectedly; see {child.log}", file=sys.stderr)
                    return 1
            if args.duration and time.monotonic() - started > args.duration:
                break
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C must not cut the orderly stop short (the buffer and the embedded
        # database shut down cleanly).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("stopping …", flush=True)
        for child in reversed(children):
            print(f"  {child.name}", flush=True)
            child.stop()
        if receivers is not None:
            receivers.stop()
        print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
