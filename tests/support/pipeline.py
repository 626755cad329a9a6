"""Wiring the real processes into a pipeline for end-to-end tests and benchmarks, and the
exactly-once checker that judges what the pipeline delivered.

The checker's ground truth is the simulator's record (``rig-sim --record``: every sample it
served) and the edge's own log (one ``edge starting`` line per run of the daemon, with the
first sequence number that run assigns; the moment each source came up; how the run ended).
From those it proves that what PostgreSQL holds is exactly what the simulator served while
the edge was looking, from the first sample on; see ``verify_exactly_once``.
"""

from __future__ import annotations

import json
import sqlite3
import struct
import time
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import psycopg
import yaml

from shared.catalog import CORE_SENSOR_NAMES
from simulator.edge_config import simulator_edge_config
from tests.support.processes import HARNESS_KILL_EVENT, Service, free_port, wait_until


def f32(value: float) -> float:
    """The value as it travels in a float32 register."""
    return float(struct.unpack(">f", struct.pack(">f", value))[0])


def edge_config(
    tmp: Path,
    *,
    sim_port: int,
    machines: list[str],
    output: dict[str, Any],
    poll_interval_s: float,
    edge_id: str = "edge-e2e",
    metrics_port: int | None = None,
) -> Path:
    config = simulator_edge_config(
        sim_host="127.0.0.1",
        sim_port=sim_port,
        machines=machines,
        output=output,
        buffer_path=tmp / f"{edge_id}-buffer.db",
        poll_interval_s=poll_interval_s,
        edge_id=edge_id,
        metrics_port=metrics_port or free_port(),
    )
    config["forwarding"]["retry_max_s"] = 2.0
    path = tmp / f"{edge_id}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_simulator(
    log_dir: Path,
    record: Path | None,
    machines: list[str],
    rate_hz: float,
    seed: int = 7,
    extra_args: list[str] | None = None,
    wait_modbus: bool = True,
) -> tuple[Service, int]:
    """A real `rig-sim` process; returns it and its Modbus TCP port once that port listens."""
    port = free_port()
    args = [
        "simulator.cli",
        "run",
        "--machines",
        ",".join(machines),
        "--rate",
        str(rate_hz),
        "--modbus-port",
        str(port),
        "--seed",
        str(seed),
        *(extra_args or []),
    ]
    if record is not None:
        args += ["--record", str(record)]
    sim = Service("rig-sim", args, log_dir).start()

    def listening() -> bool:
        import socket

        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    if wait_modbus:
        wait_until(listening, 30, "simulator Modbus port", services=[sim])
    return sim, port


# -- the edge's health endpoint --------------------------------------------------------------


def _health_url(config_path: Path) -> str:
    config = yaml.safe_load(config_path.read_text())
    return f"http://127.0.0.1:{config['metrics']['port']}/healthz"


def edge_health(config_path: Path, timeout: float = 5.0) -> dict[str, Any] | None:
    """One read of the edge's /healthz (any status code), or None if it does not answer.
    Use ``wait_health`` to wait for a state: a busy edge may answer late."""
    try:
        return httpx.get(_health_url(config_path), timeout=timeout).json()
    except (httpx.HTTPError, json.JSONDecodeError):
        return None


def wait_health(
    config_path: Path,
    predicate: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float = 60,
    services: list[Service] | None = None,
) -> dict[str, Any]:
    """Poll /healthz until ``predicate(doc)`` holds; return that document."""
    seen: list[dict[str, Any]] = []

    def check() -> bool:
        doc = edge_health(config_path)
        if doc is None:
            return False
        seen[:] = [doc]
        try:
            return bool(predicate(doc))
        except (KeyError, TypeError):
            return False

    try:
        wait_until(check, timeout, what, services=services)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nlast /healthz: {seen[0] if seen else None}") from None
    return seen[0]


def stored_count(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return int(conn.execute("SELECT count(*) FROM sensor_readings").fetchone()[0])


# -- what the edge's log says about its runs ---------------------------------------------------

# Log events that say a source delivers: the moment of the first one in a run bounds when
# the edge first looked at that source. Modbus reports per machine; OPC-UA and MQTT per
# source (``"*"``: every machine the run reads through it).
_SOURCE_UP = {"modbus device healthy": "machine", "opcua subscribed": None, "mqtt connected": None}


@dataclass
class Incarnation:
    """One run of ``rig-edge``, as its log tells it."""

    started_ms: int
    first_seq: int  # the sequence number this run assigns first (``next_seq`` at start)
    buffered_at_start: int  # readings an earlier run committed and had not forwarded
    up_ms: dict[str, int] = field(default_factory=dict)  # machine or "*" -> first delivery
    ended_ms: int | None = None  # None: still running when the log was read
    end: str = "running"  # "failpoint <name>", "SIGKILL", "stopped"

    def up(self, machine: str) -> int | None:
        return self.up_ms.get(machine, self.up_ms.get("*"))


def _ts_ms(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def parse_edge_log(path: Path) -> list[Incarnation]:
    """Every run of the edge daemon recorded in ``path`` (a Service log: runs append)."""
    runs: list[Incarnation] = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            doc = json.loads(line)
            at = _ts_ms(doc["ts"])
        except (json.JSONDecodeError, KeyError, ValueError):
            continue
        event = str(doc.get("event", ""))
        current = runs[-1] if runs and runs[-1].ended_ms is None else None
        if event == "edge starting":
            if current is not None:
                raise AssertionError(
                    f"{path}: a run of the edge ended without a clean stop, a failpoint or a "
                    f"kill by the test (started at {current.started_ms}); it crashed?"
                )
            runs.append(
                Incarnation(
                    started_ms=at,
                    first_seq=int(doc["next_seq"]),
                    buffered_at_start=int(doc.get("buffered", 0)),
                )
            )
        elif current is None:
            continue
        elif event in _SOURCE_UP:
            key = _SOURCE_UP[event]
            who = str(doc.get(key, "*")) if key else "*"
            current.up_ms.setdefault(who, at)
        elif event.startswith("failpoint ") and " reached" in event:
            current.ended_ms, current.end = at, " ".join(event.split()[:2])
        elif event == HARNESS_KILL_EVENT:
            current.ended_ms, current.end = at, "SIGKILL"
        elif event == "edge stopping":
            current.ended_ms, current.end = at, "stopped"
    if not runs:
        raise AssertionError(f"{path}: no 'edge starting' line: is this the edge's log?")
    return runs


@dataclass(frozen=True)
class EdgeRun:
    """Where one edge's config and log are (every run of it appends to the same log)."""

    config: Path
    log: Path

    @classmethod
    def of(cls, config: Path, log_dir: Path, name: str = "rig-edge") -> EdgeRun:
        return cls(config, log_dir / f"{name}.log")

    @classmethod
    def discover(cls, where: Path, edge_id: str) -> EdgeRun:
        """The layout every test here uses: ``<tmp>/<edge_id>.yaml`` from ``edge_config`` and
        ``<tmp>/logs/rig-edge.log`` from a Service in the ``log_dir`` fixture."""
        run = cls(where / f"{edge_id}.yaml", where / "logs" / "rig-edge.log")
        if not (run.config.exists() and run.log.exists()):
            raise AssertionError(
                f"no edge config/log at {run.config} and {run.log}: pass edge=EdgeRun(...)"
            )
        return run

    @property
    def doc(self) -> dict[str, Any]:
        return yaml.safe_load(self.config.read_text())

    @property
    def edge_id(self) -> str:
        return str(self.doc["edge_id"])

    @property
    def buffer(self) -> Path:
        return Path(self.doc["buffer"]["path"])

    def incarnations(self) -> list[Incarnation]:
        return parse_edge_log(self.log)

    def first_seq(self) -> int:
        """The first sequence number this edge ever assigned (its first run's start)."""
        return self.incarnations()[0].first_seq


@dataclass(frozen=True)
class BufferFacts:
    """What the edge's buffer file says once the edge is idle."""

    next_seq: int
    dropped_total: int
    rejected: dict[int, str]  # seq -> reason: committed, then refused for good downstream
    # Readings set aside before they got a sequence number (could not be encoded or
    # scored): (machine, timestamp in ms, reason), from the kept payload.
    set_aside: list[tuple[str, int, str]] = field(default_factory=list)


def read_buffer_facts(path: Path) -> BufferFacts:
    from edge.buffer import read_stats_readonly

    stats = read_stats_readonly(path)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rejected: dict[int, str] = {}
    set_aside: list[tuple[str, int, str]] = []
    try:
        for seq, reason, payload in conn.execute("SELECT seq, reason, payload FROM rejected"):
            if seq is not None:
                rejected[int(seq)] = str(reason)
                continue
            try:
                doc = json.loads(payload)
                at = _ts_ms(str(doc["ts"]))
                set_aside.append((str(doc["machine_id"]), at, str(reason)))
            except (TypeError, ValueError, KeyError):
                set_aside.append(("?", 0, str(reason)))
    finally:
        conn.close()
    return BufferFacts(stats.next_seq, stats.dropped_total, rejected, set_aside)


# -- the exactly-once checker --------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """One sample the simulator served (a row of its record)."""

    machine: str
    sample: int
    ts_ms: int
    values: tuple[float | None, ...]  # catalog order, float32-exact; None: dropped out


@dataclass(frozen=True)
class Stored:
    """One row PostgreSQL holds for the edge under test."""

    seq: int
    machine: str
    ts_ms: int
    values: tuple[float | None, ...]
    where: str = ""  # which database (when readings went to several)


Delivery = Literal["latest", "queued"]


@dataclass
class Verification:
    stored: int
    per_machine: dict[str, int]
    runs: dict[str, list[tuple[int, int]]]  # machine -> unbroken runs of stored samples
    incarnations: list[Incarnation]
    required: dict[str, int]  # machine -> samples the edge had to deliver
    unseen: dict[str, list[int]]  # machine -> samples served while the edge could not look
    rejected: dict[int, str]
    set_aside: list[tuple[str, int, str]]


def check_delivery(
    served: Iterable[Served],
    stored: Iterable[Stored],
    incarnations: Sequence[Incarnation],
    *,
    next_seq: int,
    rejected: dict[int, str] | None = None,
    set_aside: Sequence[tuple[str, int, str]] = (),
    dropped_total: int = 0,
    delivery: Delivery = "latest",
    kill_window_s: float = 1.0,
    first_delivery_s: float = 0.0,
    until_ms: dict[str, int] | None = None,
    max_runs: int | None = None,
) -> Verification:
    """Served = stored, from the first sample on; raises AssertionError saying what differs.

    Sequence numbers (what the edge committed): PostgreSQL holds every number from the
    first run's first one to ``next_seq - 1`` exactly once, except those the edge set aside
    in its ``rejected`` table; nothing below, nothing above. Losing the head of the stream
    (the first readings ever committed) therefore fails, as does any gap or repeat.

    Samples (what the edge acquired): every stored row is a sample the simulator served,
    with identical values, and no sample is stored twice. Every sample the edge could see
    is stored. What it could see depends on how the source delivers:

    - ``latest`` (Modbus polling, OPC-UA subscriptions: the device shows its latest sample):
      in each run, from the sample current when the source first delivered (the log's
      ``modbus device healthy`` / ``opcua subscribed``) to the last one served at least
      ``kill_window_s`` before the run ended (a kill loses what was acquired but not yet
      committed: the stated window). Samples served between two runs were never on the
      device while the edge was looking: reported in ``unseen``, not required. Where the
      log line precedes the first delivery (an OPC-UA subscription delivers its first values
      one publishing interval after it is created), ``first_delivery_s`` says by how much:
      the first sample required is the one on show that long after the line.
    - ``queued`` (MQTT, persistent session, QoS 1): the broker keeps what the edge has not
      acknowledged, so from the first delivery of the first run on, nothing is excused.

    A sample whose reading the edge set aside with a reason before numbering it (it could
    not be encoded or scored: ``set_aside``) has its fate too and is not required.

    The tail of the record (samples served in the last ``kill_window_s`` before the
    simulator stopped, or after ``until_ms[machine]``) is not required: the simulator may stop
    between serving a sample and the edge's next poll.
    """
    if not incarnations:
        raise AssertionError("no run of the edge to judge")
    rejected = rejected or {}
    stored = list(stored)
    problems: list[str] = []

    # 1. Sequence numbers: exactly [first, next_seq) minus rejected, each once.
    first_seq = incarnations[0].first_seq
    seq_counts: dict[int, int] = defaultdict(int)
    for row in stored:
        seq_counts[row.seq] += 1
    repeated = sorted(s for s, n in seq_counts.items() if n > 1)
    if repeated:
        problems.append(f"(edge_id, seq) stored more than once: {repeated[:10]}")
    expected = set(range(first_seq, next_seq)) - set(rejected)
    have = set(seq_counts)
    missing = sorted(expected - have)
    if missing:
        head = [s for s in missing if s < min(have, default=next_seq)]
        where = f" (the first {len(head)} the edge ever committed)" if head else ""
        problems.append(
            f"{len(missing)} committed sequence numbers missing in PostgreSQL{where}: "
            f"{_ranges(missing)} (first assigned {first_seq}, next {next_seq})"
        )
    extra = sorted(have - expected)
    if extra:
        problems.append(
            f"sequence numbers stored that this edge never committed or had rejected: "
            f"{_ranges(extra)} (first assigned {first_seq}, next {next_seq})"
        )
    if dropped_total:
        problems.append(f"the edge's buffer dropped {dropped_total} readings (its disk cap)")

    # 2. Each stored row is a served sample, values identical, each sample once.
    by_key: dict[tuple[str, int], Served] = {}
    by_machine: dict[str, list[Served]] = defaultdict(list)
    for sample in served:
        by_key[(sample.machine, sample.ts_ms)] = sample
        by_machine[sample.machine].append(sample)
    for samples in by_machine.values():
        samples.sort(key=lambda s: s.sample)
    got: dict[str, dict[int, int]] = defaultdict(dict)  # machine -> sample -> seq
    for row in stored:
        sample = by_key.get((row.machine, row.ts_ms))
        if sample is None:
            problems.append(
                f"seq {row.seq}: machine {row.machine} reading at {row.ts_ms} was never served"
            )
            continue
        expected_values = tuple(None if v is None else f32(v) for v in sample.values)
        if row.values != expected_values:
            diff = [
                f"{name}: stored {a!r}, served {b!r}"
                for name, a, b in zip(CORE_SENSOR_NAMES, row.values, expected_values, strict=True)
                if a != b
            ]
            problems.append(
                f"seq {row.seq}: values differ from {row.machine}#{sample.sample}: {diff[:3]}"
            )
        earlier = got[row.machine].get(sample.sample)
        if earlier is not None:
            problems.append(
                f"sample {row.machine}#{sample.sample} stored twice: seq {earlier} and {row.seq}"
            )
        got[row.machine][sample.sample] = row.seq

    # 3. Every sample the edge could see was stored.
    window_ms = int(kill_window_s * 1000)
    required: dict[str, int] = {}
    unseen: dict[str, list[int]] = {}
    for machine, samples in by_machine.items():
        times = [s.ts_ms for s in samples]
        tail = (until_ms or {}).get(machine, times[-1] - window_ms)
        need: set[int] = set()
        if delivery == "queued":
            ups = [u for inc in incarnations if (u := inc.up(machine)) is not None]
            if ups:
                need = {s.sample for s in samples if ups[0] < s.ts_ms <= tail}
        else:
            for inc in incarnations:
                up = inc.up(machine)
                if up is None:
                    continue
                # The sample current when the source first delivered: the last one served
                # before that moment (the device had it on show; the first poll read it).
                seen_from = up + int(first_delivery_s * 1000)
                start = max(0, bisect_right(times, seen_from - 1) - 1)
                end = tail if inc.ended_ms is None else min(tail, inc.ended_ms - window_ms)
                need |= {s.sample for s in samples[start:] if s.ts_ms <= end}
        aside = {
            by_key[(m, t)].sample for m, t, _ in set_aside if m == machine and (m, t) in by_key
        }
        need -= aside
        required[machine] = len(need)
        lost = sorted(need - set(got[machine]))
        if lost:
            problems.append(
                f"machine {machine}: {len(lost)} samples the edge could see are not stored: "
                f"{_ranges(lost)}; runs of the edge (start, first delivery, end): "
                + ", ".join(
                    f"({i.started_ms}, {i.up(machine)}, {i.ended_ms} {i.end})" for i in incarnations
                )
                + f"; first sample served at {times[0]}"
            )
        unseen[machine] = sorted(
            s.sample
            for s in samples
            if s.sample not in need and s.sample not in got[machine] and s.sample not in aside
        )
    for machine in set(got) - set(by_machine):
        problems.append(f"machine {machine} stored but never served")

    runs: dict[str, list[tuple[int, int]]] = {}
    for machine, samples_got in got.items():
        ordered = sorted(samples_got)
        if not ordered:
            continue
        machine_runs = [(ordered[0], ordered[0])]
        for s in ordered[1:]:
            if s == machine_runs[-1][1] + 1:
                machine_runs[-1] = (machine_runs[-1][0], s)
            else:
                machine_runs.append((s, s))
        runs[machine] = machine_runs
        if max_runs is not None and len(machine_runs) > max_runs:
            problems.append(f"{machine}: samples missing between {machine_runs}")

    if not stored:
        problems.append("nothing was stored")
    if problems:
        raise AssertionError("delivery is not exactly-once:\n- " + "\n- ".join(problems[:30]))
    return Verification(
        stored=len(stored),
        per_machine={m: len(s) for m, s in got.items()},
        runs=runs,
        incarnations=list(incarnations),
        required=required,
        unseen=unseen,
        rejected=dict(rejected),
        set_aside=list(set_aside),
    )


def _ranges(numbers: Sequence[int]) -> str:
    """[1,2,3,7] -> '1..3, 7' (first 8 runs)."""
    out: list[str] = []
    start = prev = numbers[0]
    for n in numbers[1:]:
        if n == prev + 1:
            prev = n
            continue
        out.append(str(start) if start == prev else f"{start}..{prev}")
        start = prev = n
    out.append(str(start) if start == prev else f"{start}..{prev}")
    more = f" (+{len(out) - 8} more runs)" if len(out) > 8 else ""
    return ", ".join(out[:8]) + more


def read_record(record: Path) -> list[Served]:
    """Every sample in the simulator's record."""
    sim = sqlite3.connect(f"file:{record}?mode=ro", uri=True)
    try:
        rows = sim.execute('SELECT machine_id, sample, ts_ms, "values" FROM samples').fetchall()
    finally:
        sim.close()
    out = []
    for machine, sample, ts_ms, values in rows:
        decoded = json.loads(values)
        vector = decoded if isinstance(decoded, list) else [decoded[n] for n in CORE_SENSOR_NAMES]
        out.append(Served(str(machine), int(sample), int(ts_ms), tuple(vector)))
    return out


def read_stored(database_urls: str | Sequence[str], edge_id: str) -> list[Stored]:
    """The edge's rows in one or more databases (several when its output was switched)."""
    urls = [database_urls] if isinstance(database_urls, str) else list(database_urls)
    cols = ", ".join(CORE_SENSOR_NAMES)
    out: list[Stored] = []
    for url in urls:
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                f'SELECT seq, machine_id, round(extract(epoch FROM "timestamp") * 1000)::bigint,'
                f" {cols} FROM sensor_readings WHERE edge_id = %s",
                (edge_id,),
            ).fetchall()
        name = url.rsplit("/", 1)[-1]
        out += [Stored(int(r[0]), str(r[1]), int(r[2]), tuple(r[3:]), name) for r in rows]
    return out


def verify_exactly_once(
    database_url: str | Sequence[str],
    record: Path,
    edge_id: str = "edge-e2e",
    max_runs: int | None = None,
    *,
    edge: EdgeRun | None = None,
    delivery: Delivery = "latest",
    kill_window_s: float = 1.0,
    first_delivery_s: float = 0.0,
    until_ms: dict[str, int] | None = None,
    next_seq: int | None = None,
) -> Verification:
    """PostgreSQL against the simulator's record and the edge's log and buffer: see
    ``check_delivery``. Call it once the edge has forwarded everything (``wait_all_stored``)
    and the simulator has stopped. ``edge`` defaults to the standard test layout beside the
    record (``EdgeRun.discover``); ``next_seq`` to what the edge's buffer file says."""
    edge = edge or EdgeRun.discover(record.parent, edge_id)
    facts = read_buffer_facts(edge.buffer)
    return check_delivery(
        read_record(record),
        read_stored(database_url, edge_id),
        edge.incarnations(),
        next_seq=facts.next_seq if next_seq is None else next_seq,
        rejected=facts.rejected,
        set_aside=facts.set_aside,
        dropped_total=facts.dropped_total,
        delivery=delivery,
        kill_window_s=kill_window_s,
        first_delivery_s=first_delivery_s,
        until_ms=until_ms,
        max_runs=max_runs,
    )


def wait_all_stored(
    database_url: str | Sequence[str],
    edge_cfg: Path,
    services: list[Service],
    edge_id: str = "edge-e2e",
    timeout: float = 120,
    *,
    edge: EdgeRun | None = None,
) -> None:
    """Wait until the edge's buffer is empty and PostgreSQL holds every sequence number the
    edge ever committed, from the first one its first run assigned to ``next_seq - 1``,
    except those it set aside as rejected."""
    edge = edge or EdgeRun.discover(edge_cfg.parent, edge_id)
    first = edge.first_seq()
    urls = [database_url] if isinstance(database_url, str) else list(database_url)
    state: dict[str, Any] = {}

    def complete() -> bool:
        health = edge_health(edge_cfg)
        if health is None or health["buffer"]["depth"] != 0:
            state["health"] = health
            return False
        next_seq = int(health["buffer"]["next_seq"])
        rejected = {s for s in read_buffer_facts(edge.buffer).rejected if first <= s < next_seq}
        count = 0
        for url in urls:
            with psycopg.connect(url) as conn:
                count += int(
                    conn.execute(
                        "SELECT count(*) FROM sensor_readings "
                        "WHERE edge_id = %s AND seq >= %s AND seq < %s",
                        (edge_id, first, next_seq),
                    ).fetchone()[0]
                )
        state.update(health=health, stored=count, expected=next_seq - first - len(rejected))
        return count == next_seq - first - len(rejected)

    try:
        wait_until(complete, timeout, "every committed reading in PostgreSQL", services=services)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nlast state: {state}") from None


def wait_stored_beyond(
    database_url: str, services: list[Service], by: int, what: str, timeout: float = 90
) -> None:
    """Wait until PostgreSQL holds ``by`` more readings than now (progress, not a count)."""
    start = stored_count(database_url)
    wait_until(lambda: stored_count(database_url) >= start + by, timeout, what, services=services)


def wait_log(
    path: Path, text: str, what: str, timeout: float = 60, services: list[Service] | None = None
) -> None:
    """Wait until ``text`` appears in a log file."""

    def found() -> bool:
        return path.exists() and text in path.read_text(errors="replace")

    wait_until(found, timeout, what, services=services)


def kafka_messages(bootstrap: str, topic: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Every reading message in ``topic`` from the beginning, decoded (a fresh consumer
    group); status reports sent alone are left out."""
    import uuid

    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"inspect-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {}
        for p in metadata.partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        positions = {p: 0 for p in ends}
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while any(positions[p] < ends[p] for p in ends):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end: {positions} / {ends}")
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None:
                continue
            positions[msg.partition()] = msg.offset() + 1
            if not msg.value():
                # An edge's status report sent alone (an empty value with the edge_status
                # header, when it had no readings to carry it): not a reading.
                continue
            out.append(json.loads(msg.value()))
        return out
    finally:
        consumer.close()


def kafka_output(bootstrap: str, topic: str, **extra: Any) -> dict[str, Any]:
    """The edge's output section for Kafka, tuned for tests (short linger)."""
    return {
        "kind": "kafka",
        "bootstrap_servers": bootstrap,
        "topic": topic,
        "linger_ms": 5,
        "message_timeout_ms": 10_000,
        **extra,
    }


def start_aggregator(
    log_dir: Path,
    database_url: str,
    bootstrap: str,
    topic: str,
    *,
    name: str = "aggregator",
    failpoints: str | None = None,
    args: Sequence[str] = (),
) -> Service:
    """A real ``rig-cloud aggregate`` process consuming ``topic`` into ``database_url``;
    ``failpoints`` arms RIG_FAILPOINTS (shared/failpoints.py) in it."""
    env = {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_CONSUMER_GROUP": f"g-{topic}",
    }
    if failpoints:
        env["RIG_FAILPOINTS"] = failpoints
    return Service(name, ["cloud.cli", "aggregate", *args], log_dir, env).start()


def start_edge(cfg: Path, log_dir: Path, *, failpoints: str | None = None) -> Service:
    """A real ``rig-edge run`` process; every run appends to ``<log_dir>/rig-edge.log``,
    which the exactly-once checker reads."""
    env = {"RIG_FAILPOINTS": failpoints} if failpoints else None
    return Service("rig-edge", ["edge.cli", "run", "-c", str(cfg)], log_dir, env).start()


def last_log_event(path: Path, event: str) -> dict[str, Any]:
    """The last JSON log line of ``path`` with this event."""
    found: dict[str, Any] | None = None
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            doc = json.loads(line)
            if doc.get("event") == event:
                found = doc
    assert found is not None, f"no {event!r} line in {path}"
    return found


def topic_size(bootstrap: str, topic: str) -> int:
    """Messages in ``topic`` (sum of its partitions' high watermarks)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "rig-tests-inspect"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        )
    finally:
        consumer.close()


def buffered_documents(path: Path) -> list[dict[str, Any]]:
    """The wire documents waiting in an edge's buffer file, oldest first, read beside a
    running edge; none while the file or its tables do not exist yet (a daemon starting)."""
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT payload FROM readings ORDER BY seq").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()
    return [json.loads(payload) for (payload,) in rows]


def read_buffered(path: Path) -> list[Stored]:
    """The readings waiting in an edge's buffer file, as the checker's rows (for tests whose
    edge forwards nothing: the buffer is then the destination)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT seq, payload FROM readings ORDER BY seq").fetchall()
    finally:
        conn.close()
    out = []
    for seq, payload in rows:
        doc = json.loads(payload)
        values = tuple(doc["values"].get(name) for name in CORE_SENSOR_NAMES)
        out.append(Stored(int(seq), str(doc["machine_id"]), _ts_ms(doc["ts"]), values, "buffer"))
    return out
