"""Wiring the real processes into a pipeline for end-to-end tests and benchmarks."""

from __future__ import annotations

import json
import sqlite3
import struct
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml

from shared.catalog import CORE_SENSOR_NAMES
from simulator.edge_config import simulator_edge_config
from tests.support.processes import Service, free_port, wait_until


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

    wait_until(listening, 30, "simulator Modbus port", services=[sim])
    return sim, port


def edge_health(config_path: Path) -> dict[str, Any] | None:
    config = yaml.safe_load(config_path.read_text())
    url = f"http://127.0.0.1:{config['metrics']['port']}/healthz"
    try:
        return httpx.get(url, timeout=1).json()  # type: ignore[no-any-return]
    except (httpx.HTTPError, json.JSONDecodeError):
        return None


def stored_count(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return int(conn.execute("SELECT count(*) FROM sensor_readings").fetchone()[0])


@dataclass
class Verification:
    stored: int
    per_machine: dict[str, int]
    runs: dict[str, list[tuple[int, int]]]


def verify_exactly_once(
    database_url: str, record: Path, edge_id: str, max_runs: int
) -> Verification:
    """Every stored row is a sample the simulator served, with identical values; every
    (edge, seq) once; the edge's sequence has no gaps (nothing committed at the edge was
    lost); each machine's samples form at most ``max_runs`` unbroken runs (one per edge
    incarnation)."""
    cols = ", ".join(CORE_SENSOR_NAMES)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            f'SELECT edge_id, seq, machine_id, (extract(epoch FROM "timestamp") * 1000)::bigint,'
            f" {cols} FROM sensor_readings ORDER BY seq"
        ).fetchall()
    assert rows, "nothing was stored"
    keys = [(r[0], r[1]) for r in rows]
    assert len(keys) == len(set(keys)), "an (edge_id, seq) key is stored twice"
    seqs = [r[1] for r in rows if r[0] == edge_id]
    missing = sorted(set(range(seqs[0], seqs[-1] + 1)) - set(seqs))
    assert not missing, f"edge sequence numbers missing in PostgreSQL: {missing[:20]}"

    sim = sqlite3.connect(f"file:{record}?mode=ro", uri=True)
    served: dict[tuple[str, int], tuple[int, list[float]]] = {}
    for machine, sample, ts_ms, values in sim.execute(
        'SELECT machine_id, sample, ts_ms, "values" FROM samples'
    ):
        decoded = json.loads(values)
        vector = decoded if isinstance(decoded, list) else [decoded[n] for n in CORE_SENSOR_NAMES]
        served[(machine, int(ts_ms))] = (int(sample), vector)
    sim.close()

    samples_by_machine: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        machine, ts_ms, values = row[2], int(row[3]), list(row[4:])
        assert (machine, ts_ms) in served, f"machine {machine} reading at {ts_ms} never served"
        sample, expected = served[(machine, ts_ms)]
        assert values == [f32(v) for v in expected], f"values differ for {machine}#{sample}"
        samples_by_machine[machine].append(sample)

    runs: dict[str, list[tuple[int, int]]] = {}
    for machine, samples in samples_by_machine.items():
        assert len(samples) == len(set(samples)), f"a sample of {machine} is stored twice"
        ordered = sorted(samples)
        machine_runs = [(ordered[0], ordered[0])]
        for s in ordered[1:]:
            if s == machine_runs[-1][1] + 1:
                machine_runs[-1] = (machine_runs[-1][0], s)
            else:
                machine_runs.append((s, s))
        runs[machine] = machine_runs
        assert len(machine_runs) <= max_runs, f"{machine}: samples missing between {machine_runs}"
    return Verification(len(rows), {m: len(s) for m, s in samples_by_machine.items()}, runs)


def wait_all_stored(
    database_url: str,
    edge_cfg: Path,
    services: list[Service],
    edge_id: str = "edge-e2e",
    timeout: float = 120,
) -> None:
    """Wait until the edge's buffer is empty and PostgreSQL holds every sequence number the
    edge ever committed: the last one (next_seq - 1) and no gap below it."""

    def complete() -> bool:
        health = edge_health(edge_cfg)
        if health is None or health["buffer"]["depth"] != 0:
            return False
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT count(*), min(seq), max(seq) FROM sensor_readings WHERE edge_id = %s",
                (edge_id,),
            ).fetchone()
        count, low, high = row if row else (0, None, None)
        return (
            bool(count) and high == health["buffer"]["next_seq"] - 1 and (count == high - low + 1)
        )

    wait_until(complete, timeout, "every committed reading in PostgreSQL", services=services)
