"""The real processes of one fault scenario and the services all scenarios share.

``Infra`` starts what outlives scenarios: an embedded PostgreSQL, a Kafka broker (with a
second listener on a veth pair when a network namespace can be made). ``Scenario`` starts what
one scenario needs — ``rig-sim --record``, ``rig-edge``, ``rig-cloud aggregate`` ×N,
``rig-cloud serve`` — on a topic, edge id and machine ids of its own, injects the fault, and
ends with ``finish()``: simulator stopped, the edge drained and stopped, the aggregators
stopped, and the numbers of ``benchmarks.faults.accounting``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml

from benchmarks.faults.accounting import Ledger, account, dead_letters, read_buffer_file
from benchmarks.faults.netns import Netns, NetnsUnavailable
from cloud.db.embedded import EmbeddedPostgres
from cloud.db.migrate import apply_migrations
from simulator.edge_config import simulator_edge_config
from tools.kafka_broker import KafkaBroker

ROOT = Path(__file__).resolve().parents[2]


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ScenarioFailed(RuntimeError):
    """The scenario could not be carried out (a process did not start, a wait timed out)."""


class Proc:
    """One child process (``python -m MODULE ...``), optionally inside a network namespace,
    with its output in a log file."""

    def __init__(
        self,
        name: str,
        args: list[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        self.name = name
        self.args = args
        self.log_path = log_dir / f"{name}.log"
        self.env = {**os.environ, **(env or {})}
        self.prefix = prefix or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.killed_on_purpose = False

    def start(self) -> Proc:
        self.killed_on_purpose = False
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=ROOT,
                start_new_session=True,
            )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def kill(self) -> None:
        """SIGKILL: no clean-up code of the process runs."""
        self.killed_on_purpose = True
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def events(self, event: str) -> list[dict[str, Any]]:
        """The JSON log lines with this ``event``."""
        found = []
        for line in self.log_text().splitlines():
            if f'"{event}"' not in line:
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                continue
            if doc.get("event") == event:
                found.append(doc)
        return found


def log_time(doc: dict[str, Any]) -> float:
    """Epoch seconds of a JSON log line's ``ts`` (2026-11-29T11:14:21.098Z)."""
    from datetime import datetime

    return datetime.fromisoformat(str(doc["ts"]).replace("Z", "+00:00")).timestamp()


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    procs: list[Proc] | None = None,
    interval: float = 0.2,
) -> float:
    """Wait until ``predicate()``; returns the seconds waited. Raises ``ScenarioFailed`` on
    timeout or when one of ``procs`` exits."""
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        for proc in procs or []:
            if proc.proc is not None and proc.proc.poll() is not None:
                raise ScenarioFailed(
                    f"{proc.name} exited with {proc.proc.returncode} while waiting for {what}:\n"
                    f"{proc.tail()}"
                )
        if time.monotonic() - started > timeout:
            raise ScenarioFailed(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {metric name: sum over its label sets}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


def metric_values(text: str, name: str, by: str = "result", **match: str) -> dict[str, float]:
    """Values of one metric family keyed by the label ``by``, for series whose other labels
    equal ``match`` (``metric_values(text, "x_total", machine="A")`` -> {"refused": 2.0})."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        labels_part, _, value = line.rpartition(" ")
        labels = {}
        for pair in labels_part[len(name) + 1 : -1].split(","):
            key, _, raw = pair.partition("=")
            labels[key.strip()] = raw.strip().strip('"')
        if all(labels.get(k) == v for k, v in match.items()) and by in labels:
            out[labels[by]] = out.get(labels[by], 0.0) + float(value)
    return out


class Infra:
    """PostgreSQL, Kafka (and the network namespace) shared by every scenario."""

    def __init__(self, work: Path, want_netns: bool = True) -> None:
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pg = EmbeddedPostgres(work / "pg")
        self.netns: Netns | None = None
        self.netns_error: str | None = None
        if want_netns:
            try:
                self.netns = Netns()
            except (NetnsUnavailable, OSError) as exc:
                self.netns_error = str(exc)
        extra = (self.netns.host_address, 0) if self.netns is not None else None
        self.broker = KafkaBroker(
            work / "kafka", log_file=self.logs / "kafka.log", extra_listener=extra
        )
        self.database_url = ""
        self.bootstrap = ""

    def start(self) -> None:
        self.pg.start()
        self.database_url = self.pg.url
        apply_migrations(self.database_url)
        self.bootstrap = self.broker.start()

    def stop(self) -> None:
        try:
            self.broker.stop(timeout=20)
        finally:
            try:
                self.pg.stop("immediate")
            finally:
                if self.netns is not None:
                    self.netns.close()


class Scenario:
    """One scenario's processes, its ground truth and its fault timeline."""

    def __init__(
        self,
        infra: Infra,
        name: str,
        *,
        machines: int = 3,
        rate_hz: float = 5.0,
        poll_interval_s: float = 0.05,
    ) -> None:
        self.infra = infra
        self.name = name
        self.dir = infra.work / name
        self.logs = self.dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.topic = f"faults-{name}-{uuid.uuid4().hex[:6]}"
        self.edge_id = f"fault-{name}"
        self.machines = [f"{name[:24]}-{i}" for i in range(1, machines + 1)]
        self.rate_hz = rate_hz
        self.poll_interval_s = poll_interval_s
        self.record = self.dir / "served.db"
        self.sim_port = 0
        self.sim_started = time.time()
        self.buffer_path = self.dir / "buffer" / "buffer.db"
        self.edge_cfg = self.dir / "edge.yaml"
        self.metrics_port = free_port()
        self.ledger = Ledger(self.edge_id)
        self.procs: list[Proc] = []
        self.sim: Proc | None = None
        self.edge: Proc | None = None
        self.api: Proc | None = None
        self.api_url = ""
        self.aggregators: list[Proc] = []
        self.netns: Netns | None = None
        self.fault_ends: list[float] = []
        self.recovered: list[float | None] = []
        self.notes: dict[str, Any] = {}
        self.extra: dict[str, int] = {"lost": 0, "duplicated": 0, "dropped_counted": 0}
        # The log event after which the edge's source delivers readings.
        self.connect_event = "modbus connected"
        # Push sources with a persistent session: the broker keeps what is published while
        # the edge is down, so every sample served after this moment must arrive.
        self.push_from: float | None = None
        self._edge_down_since: float | None = None
        # Run after every process is gone (unmounting a tmpfs, say), newest first.
        self.teardown: list[Callable[[], None]] = []
        infra.broker.create_topic(self.topic, partitions=3)

    # -- processes ----------------------------------------------------------------------
    def _proc(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Proc:
        # The simulator runs beside the edge, so a cut between edge and Kafka leaves polling
        # untouched.
        inside = self.netns is not None and name in ("rig-sim", "rig-edge")
        proc = Proc(name, args, self.logs, env, self.netns.prefix() if inside else None)
        self.procs.append(proc)
        return proc

    def cloud_env(self, **extra: str) -> dict[str, str]:
        return {
            "DATABASE_URL": self.infra.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.infra.bootstrap,
            "KAFKA_TOPIC": self.topic,
            "KAFKA_CONSUMER_GROUP": f"group-{self.topic}",
            "KAFKA_DEAD_LETTER_TOPIC": f"{self.topic}-dlq",
            **extra,
        }

    def start_aggregator(self, env: dict[str, str] | None = None) -> Proc:
        index = len(self.aggregators) + 1
        proc = self._proc(
            f"aggregator-{index}",
            ["cloud.cli", "--log-level", "INFO", "aggregate", "--batch-size", "500"],
            self.cloud_env(**(env or {})),
        ).start()
        self.aggregators.append(proc)
        return proc

    def start_api(self, env: dict[str, str] | None = None) -> str:
        port = free_port()
        self.api = self._proc(
            "cloud-api",
            ["cloud.cli", "--log-level", "INFO", "serve", "--port", str(port)],
            self.cloud_env(**(env or {})),
        ).start()
        self.api_url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{self.api_url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 90, "the cloud API", [self.api])
        return self.api_url

    def start_sim(self, extra_args: list[str] | None = None) -> None:
        self.sim_port = free_port()
        args = [
            "simulator.cli",
            "run",
            "--log-level",
            "INFO",
            "--machines",
            ",".join(self.machines),
            "--rate",
            str(self.rate_hz),
            "--modbus-port",
            str(self.sim_port),
            "--seed",
            str(zlib.crc32(self.name.encode()) % 10_000),
            "--record",
            str(self.record),
            *(extra_args or []),
        ]
        self.sim = self._proc("rig-sim", args).start()
        self.sim_started = time.time()

        def listening() -> bool:
            return self._tcp_open(self.sim_port)

        wait_for(listening, 30, "the simulator's Modbus port", [self.sim])

    def _tcp_open(self, port: int) -> bool:
        if self.netns is not None:
            probe = f"exec 3<>/dev/tcp/127.0.0.1/{port}"
            cmd = [*self.netns.prefix(), "bash", "-c", probe]
            return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0
        import socket

        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    def edge_config(
        self,
        *,
        bootstrap: str | None = None,
        buffer: dict[str, Any] | None = None,
        models: dict[str, Any] | None = None,
        output: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        config = simulator_edge_config(
            sim_host="127.0.0.1",
            sim_port=self.sim_port,
            machines=self.machines,
            output=output
            or {
                "kind": "kafka",
                "bootstrap_servers": bootstrap or self.infra.bootstrap,
                "topic": self.topic,
                "linger_ms": 5,
                "message_timeout_ms": 15_000,
            },
            buffer_path=self.buffer_path,
            poll_interval_s=self.poll_interval_s,
            edge_id=self.edge_id,
            metrics_port=self.metrics_port,
        )
        config["forwarding"]["retry_max_s"] = 2.0
        config["buffer"].update(buffer or {})
        if models is not None:
            config["models"] = models
        if inputs is not None:
            config["inputs"] = inputs
        return config

    def write_edge_config(self, **kwargs: Any) -> None:
        self.edge_cfg.write_text(yaml.safe_dump(self.edge_config(**kwargs), sort_keys=False))

    def start_edge(self, env: dict[str, str] | None = None, wait: bool = True) -> Proc:
        if not self.edge_cfg.exists():
            self.write_edge_config()
        self.buffer_path.parent.mkdir(parents=True, exist_ok=True)
        if self.edge is None:
            self.edge = self._proc(
                "rig-edge", ["edge.cli", "run", "-c", str(self.edge_cfg), "--log-level", "INFO"]
            )
        edge = self.edge
        edge.env = {**os.environ, **(env or {})}
        before = len(edge.events("edge starting"))
        connects = len(edge.events(self.connect_event))
        down_since = self._edge_down_since or self.sim_started
        edge.start()
        if not wait:
            return edge
        wait_for(
            lambda: len(edge.events("edge starting")) > before,
            60,
            "the edge to start",
            [edge],
        )
        start = edge.events("edge starting")[-1]
        self.ledger.started(int(start["next_seq"]))
        # Polling starts once the source is connected: the down window ends there.
        try:
            wait_for(
                lambda: len(edge.events(self.connect_event)) > connects,
                15,
                "the edge's source connection",
            )
            polling_from = log_time(edge.events(self.connect_event)[-1])
        except ScenarioFailed:
            polling_from = time.time()
        self.ledger.down.append((down_since, polling_from))
        self._edge_down_since = None
        return self.edge

    def kill_edge(self) -> None:
        assert self.edge is not None
        self._edge_down_since = time.time()
        self.edge.kill()

    def mark_edge_down(self) -> None:
        """The edge stopped polling now (a clean stop, or before a start that may fail)."""
        self._edge_down_since = time.time()

    def pause_sim(self, paused: bool) -> None:
        """SIGSTOP/SIGCONT the simulator: no new samples (and no answers) while paused."""
        assert self.sim is not None and self.sim.proc is not None
        os.kill(self.sim.proc.pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def ledger_close_from_file(self) -> None:
        """The edge is stopped and its buffer file is about to go: its range ends here."""
        next_seq, dropped, rejected, rejected_dropped = read_buffer_file(self.buffer_path)
        self.ledger.close(next_seq, dropped, rejected, rejected_dropped)

    def edge_died(self) -> None:
        """The edge ended itself (a failpoint): its down window starts now (at the latest)."""
        assert self.edge is not None and self.edge.proc is not None
        self.edge.proc.wait(30)
        # The failpoint logs its name and the moment just before the process ends itself.
        died = [d for d in self.edge.log_text().splitlines() if '"failpoint ' in d]
        self._edge_down_since = time.time() - 0.5
        if died:
            with contextlib.suppress(json.JSONDecodeError, KeyError, ValueError):
                self._edge_down_since = log_time(json.loads(died[-1]))

    # -- observing ----------------------------------------------------------------------
    def _edge_get(self, path: str) -> str | None:
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        if self.netns is not None:
            cmd = [*self.netns.prefix(), "curl", "-s", "-m", "3", url]
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return result.stdout if result.returncode == 0 and result.stdout else None
        try:
            return httpx.get(url, timeout=3).text
        except httpx.HTTPError:
            return None

    def edge_health(self) -> dict[str, Any] | None:
        text = self._edge_get("/healthz")
        if text is None:
            return None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            return None
        return doc if isinstance(doc, dict) else None

    def edge_metrics_text(self) -> str | None:
        return self._edge_get("/metrics")

    def edge_metrics(self) -> dict[str, float] | None:
        text = self._edge_get("/metrics")
        return None if text is None else parse_metrics(text)

    def stored_count(self) -> int:
        with psycopg.connect(self.infra.database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM sensor_readings WHERE edge_id = %s", (self.edge_id,)
            ).fetchone()
        return int(row[0]) if row else 0

    def wait_flowing(self, count: int = 20, timeout: float = 90) -> None:
        # A process armed with a failpoint may die meanwhile: that is its job, not a failure.
        live = [
            p
            for p in (self.sim, self.edge, *self.aggregators)
            if p is not None and "RIG_FAILPOINTS" not in p.env
        ]
        wait_for(lambda: self.stored_count() >= count, timeout, "readings to flow", live)

    def committed_mark(self) -> int | None:
        health = self.edge_health()
        if health is None:
            return None
        return int(health["buffer"]["next_seq"])

    def _accounted_below(self, mark: int) -> bool:
        """Every sequence number this lineage assigned below ``mark`` is stored, dead-lettered
        or counted as dropped/rejected."""
        start = self.ledger.lineages[-1].start
        with psycopg.connect(self.infra.database_url) as conn:
            stored = conn.execute(
                "SELECT count(DISTINCT seq) FROM sensor_readings "
                "WHERE edge_id = %s AND seq >= %s AND seq < %s",
                (self.edge_id, start, mark),
            ).fetchone()[0]
        lettered = sum(
            1
            for d in dead_letters(self.infra.database_url, self.topic)
            if d.edge_id == self.edge_id and d.seq is not None and start <= d.seq < mark
        )
        buffer = (self.edge_health() or {}).get("buffer", {})
        counted = int(buffer.get("dropped_total", 0)) + int(buffer.get("rejected", 0) or 0)
        return int(stored) + lettered + counted >= mark - start

    def fault_ended(self, timeout: float = 180) -> float | None:
        """The fault is over now: wait until the pipeline has caught up with everything the
        edge had committed by now; returns (and records) the seconds that took."""
        ended = time.monotonic()
        self.fault_ends.append(time.time())
        mark: int | None = None
        deadline = ended + timeout
        while time.monotonic() < deadline:
            if mark is None:
                mark = self.committed_mark()
            if mark is not None and self._accounted_below(mark):
                took = round(time.monotonic() - ended, 2)
                self.recovered.append(took)
                return took
            time.sleep(0.25)
        self.recovered.append(None)
        return None

    # -- ending -------------------------------------------------------------------------
    def drained_now(self) -> bool:
        return self._drained()

    def _drained(self) -> bool:
        health = self.edge_health()
        if health is None or health["buffer"]["depth"] != 0:
            return False
        return self._accounted_below(int(health["buffer"]["next_seq"]))

    def finish(self, drain_timeout: float = 120) -> dict[str, Any]:
        """Stop the simulator, let the edge deliver everything, stop the rest, account."""
        if self.sim is not None:
            # The last samples served just before the simulator stops may never be polled.
            self.ledger.down.append((time.time(), time.time() + 60.0))
            self.sim.stop()
        final_metrics: dict[str, float] | None = None
        if self.edge is not None and self.edge.running:
            try:
                wait_for(self._drained, drain_timeout, "the edge to drain", [self.edge])
            except ScenarioFailed as exc:
                self.notes["drain"] = str(exc).splitlines()[0]
            final_metrics = self.edge_metrics()
            self.notes["edge_exit"] = self.edge.stop()
        elif self.edge is not None and not self.edge.killed_on_purpose:
            # It ended by itself, and not at a failpoint this scenario armed: a finding.
            self.notes["edge_died"] = {"exit": self.edge.returncode, "log": self.edge.tail(5)}
        if self.buffer_path.exists() and self.ledger.lineages:
            next_seq, dropped, rejected, rejected_dropped = read_buffer_file(self.buffer_path)
            self.ledger.close(next_seq, dropped, rejected, rejected_dropped)
        exits = {}
        for agg in self.aggregators:
            if not agg.running and not agg.killed_on_purpose:
                exits[agg.name] = agg.returncode
            agg.stop()
        if exits:
            self.notes["aggregator_exits"] = exits
        if self.api is not None:
            self.api.stop()
        far = self._far_partitions()
        if far:
            self.notes["partitions_far_ahead"] = far
        result = account(
            database_url=self.infra.database_url,
            record=self.record,
            ledger=self.ledger,
            topic=self.topic,
            final_metrics=final_metrics,
            push_from=self.push_from,
        )
        for key, value in self.extra.items():
            result[key] = result.get(key, 0) + value
        known = [r for r in self.recovered if r is not None]
        result["recovered_s"] = max(known) if known and len(known) == len(self.recovered) else None
        if len(self.recovered) > 1:
            result["recovered_each_s"] = self.recovered
        if self.notes:
            result["notes"] = self.notes
        return result

    def _far_partitions(self) -> list[str]:
        """Daily partitions more than a month ahead: a timestamp from a wrong clock or a
        hostile client got as far as partition maintenance."""
        from datetime import UTC, datetime, timedelta

        from cloud.db.partitions import existing_partitions

        limit = (datetime.now(UTC) + timedelta(days=31)).date()
        with psycopg.connect(self.infra.database_url) as conn:
            days = existing_partitions(conn)
        return sorted(name for name, day in days.items() if day > limit)[:5]

    def cleanup(self) -> None:
        for proc in reversed(self.procs):
            if proc.running:
                proc.kill()
        while self.teardown:
            try:
                self.teardown.pop()()
            except Exception as exc:  # one failed clean-up must not skip the others
                say(f"  clean-up of {self.name} failed: {exc}")
