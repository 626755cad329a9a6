"""Faults with ground truth, replays, operating states and scenario-file errors."""

from __future__ import annotations

import asyncio
import csv
import json
import sqlite3
import struct
from datetime import datetime
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from shared.catalog import SENSOR_INDEX
from simulator.cli import main as sim_main
from simulator.config import SimConfig, load_scenario
from simulator.register_map import decode_float32_be
from simulator.server import run_simulator
from tests.support.processes import free_port, shared_data_dir

ROOT = Path(__file__).resolve().parents[1]


def _run(config: SimConfig, seconds: float, during=None) -> None:
    async def scenario() -> None:
        stop, started = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(run_simulator(config, stop, started=started))
        await asyncio.wait_for(started.wait(), 30)
        if during is not None:
            await during()
        else:
            await asyncio.sleep(seconds)
        stop.set()
        await task

    asyncio.run(scenario())


def _series(record: Path, machine: str) -> list[tuple[int, int, list, list, float | None]]:
    conn = sqlite3.connect(record)
    rows = conn.execute(
        'SELECT sample, ts_ms, "values", faults, rul_s FROM samples WHERE machine_id = ? '
        "ORDER BY sample",
        (machine,),
    ).fetchall()
    conn.close()
    return [(s, t, json.loads(v), json.loads(f), r) for s, t, v, f, r in rows]


@pytest.mark.integration
def test_faults_are_visible_where_the_ground_truth_says(tmp_path: Path) -> None:
    rate = 100.0
    config = SimConfig.model_validate(
        {
            "machines": ["A", "B", "C"],
            "rate_hz": rate,
            "seed": 11,
            "modbus": {"port": free_port()},
            "record_path": tmp_path / "rec.db",
            "ground_truth_path": tmp_path / "gt.jsonl",
            "faults": [
                {"kind": "bearing_wear", "machine": "A", "start_s": 0.5, "duration_s": 2.0},
                {
                    "kind": "spike",
                    "machine": "B",
                    "sensors": ["pressure"],
                    "start_s": 1.0,
                    "duration_s": 0.05,
                    "magnitude": 2,
                },
                {
                    "kind": "stuck",
                    "machine": "B",
                    "sensors": ["temperature"],
                    "start_s": 1.5,
                    "duration_s": 0.5,
                },
                {
                    "kind": "dropout",
                    "machine": "C",
                    "sensors": ["humidity"],
                    "start_s": 1.0,
                    "duration_s": 0.3,
                },
                {"kind": "cavitation", "machine": "C", "start_s": 2.0, "duration_s": 0.5},
            ],
        }
    )
    _run(config, 3.2)
    truth = [json.loads(line) for line in (tmp_path / "gt.jsonl").read_text().splitlines()]
    assert [t["kind"] for t in truth] == ["bearing_wear", "spike", "stuck", "dropout", "cavitation"]
    wear = truth[0]
    assert wear["machine"] == "A" and "vibration" in wear["sensors"]
    assert wear["failure_at"] == wear["end"]

    def window(doc: dict) -> tuple[int, int]:
        start = datetime.fromisoformat(doc["start"].replace("Z", "+00:00")).timestamp()
        end = datetime.fromisoformat(doc["end"].replace("Z", "+00:00")).timestamp()
        return int(start * 1000), int(end * 1000)

    vib, bt = SENSOR_INDEX["vibration"], SENSOR_INDEX["bearing_temp"]
    a = _series(tmp_path / "rec.db", "A")
    # Ground truth is in sim time (sample i at (i-1)/rate); labels in the record agree.
    before = [v[vib] for s, _, v, f, _ in a if (s - 1) / rate < 0.5]
    late = [(v[vib], v[bt], r) for s, _, v, f, r in a if 2.3 <= (s - 1) / rate < 2.5]
    assert late and max(before) * 2 < min(x for x, _, _ in late)
    assert min(t for _, t, _ in late) > 180  # bearing temperature past its high limit
    ruls = [r for *_, r in a if r is not None]
    assert ruls == sorted(ruls, reverse=True) and ruls[-1] == 0.0
    after_failure = [v[SENSOR_INDEX["rpm"]] for s, _, v, _, _ in a if (s - 1) / rate > 2.6]
    assert after_failure and all(x == 0.0 for x in after_failure)  # failed: stopped

    b = _series(tmp_path / "rec.db", "B")
    p = SENSOR_INDEX["pressure"]
    spiked = [v[p] for s, _, v, f, _ in b if "spike" in f]
    normal = [v[p] for s, _, v, f, _ in b if not f]
    assert spiked and min(spiked) > max(normal) + 5
    stuck = {v[SENSOR_INDEX["temperature"]] for s, _, v, f, _ in b if "stuck" in f}
    assert len(stuck) == 1

    c = _series(tmp_path / "rec.db", "C")
    dropped = [v[SENSOR_INDEX["humidity"]] for s, _, v, f, _ in c if "dropout" in f]
    assert dropped and all(x is None for x in dropped)
    cav = [v[SENSOR_INDEX["cavitation_index"]] for s, _, v, f, _ in c if "cavitation" in f]
    assert cav and min(cav) > 0.5
    # The fault windows in the ground truth file bracket the labelled samples, in sim time:
    # sample s is due (s - 1) / rate after the first one. Its wall-clock stamp may come late
    # on a busy machine (the simulator skips late ticks instead of bursting), so the samples'
    # own stamps are not what this checks.
    for doc, series in ((truth[1], b), (truth[3], c)):
        lo, hi = window(doc)
        first_ms = series[0][1]
        due = [first_ms + (s - 1) * 1000 / rate for s, _, _, f, _ in series if doc["kind"] in f]
        assert lo - 200 <= min(due) and max(due) <= hi + 200


@pytest.mark.integration
def test_skab_replay_serves_rows_in_order_over_modbus(tmp_path: Path) -> None:
    skab = shared_data_dir() / "skab" / "valve1" / "0.csv"
    config = load_scenario(ROOT / "simulator" / "scenarios" / "skab-replay.yaml")
    config = config.model_copy(
        update={
            "rate_hz": 200.0,
            "record_path": tmp_path / "rec.db",
            "modbus": config.modbus.model_copy(update={"port": free_port()}),
            "replay": [config.replay[0].model_copy(update={"file": skab})],
        }
    )
    with skab.open() as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    f32 = lambda x: struct.unpack(">f", struct.pack(">f", float(x)))[0]  # noqa: E731
    polled: list[tuple[int, list[float]]] = []

    async def poll() -> None:
        client = AsyncModbusTcpClient("127.0.0.1", port=config.modbus.port)
        await client.connect()
        deadline = asyncio.get_running_loop().time() + len(rows) / 200.0 + 2
        while asyncio.get_running_loop().time() < deadline:
            regs = (await client.read_holding_registers(0, count=110, device_id=1)).registers
            polled.append(((regs[0] << 16) | regs[1], decode_float32_be(regs[10:110])))
            await asyncio.sleep(0.003)
        client.close()

    _run(config, 0, during=poll)
    vib, cur = SENSOR_INDEX["vibration"], SENSOR_INDEX["motor_current"]
    counters = [c for c, _ in polled]
    assert counters == sorted(counters) and counters[-1] == len(rows)
    for counter, values in polled:
        row = rows[counter - 1]
        assert values[vib] == f32(row["Accelerometer1RMS"])
        assert values[cur] == f32(row["Current"])
    served = _series(tmp_path / "rec.db", "A")
    assert [s for s, *_ in served] == list(range(1, len(rows) + 1))
    for (_, _, values, _, _), row in zip(served, rows, strict=True):
        assert values[SENSOR_INDEX["flow_rate"]] == f32(row["Volume Flow RateRMS"])
        assert values[SENSOR_INDEX["temperature"]] == f32(row["Temperature"])


def test_stopped_state_freezes_rotation(tmp_path: Path) -> None:
    from simulator.engine import Engine

    engine = Engine(
        SimConfig.model_validate(
            {"machines": ["A"], "states": [{"machine": "A", "at_s": 1.0, "state": "stopped"}]}
        )
    )
    running = engine.tick(0.5, 0)[0]
    stopped = engine.tick(1.5, 0)[0]
    assert running.state == 2 and running.values[SENSOR_INDEX["rpm"]] > 1000
    assert stopped.state == 0 and stopped.values[SENSOR_INDEX["rpm"]] == 0.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rate_hz: -1\n", "rate_hz"),
        ("faults:\n  - {kind: meteor, machine: A, start_s: 1, duration_s: 1}\n", "faults[0].kind"),
        ("faults:\n  - {kind: spike, machine: A, start_s: 1, duration_s: 1}\n", "needs sensors"),
        (
            "faults:\n  - {kind: drift, machine: Z, start_s: 1, duration_s: 1, sensors: [rpm]}\n",
            "faults[0].machine: 'Z'",
        ),
        ("replay:\n  - {machine: A, file: x.csv, columns: {a: warp_core}}\n", "warp_core"),
        ("modbus: {port: 99999}\n", "modbus.port"),
        ("machines: [A, A]\n", "unique"),
        ("machines: [A\n", "not valid YAML"),
    ],
)
def test_bad_scenarios_name_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    assert sim_main(["run", "--scenario", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and expected in err, err


def test_port_in_use_is_reported_by_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert sim_main(["run", "--modbus-port", str(port)]) == 1
    assert f"Modbus port 127.0.0.1:{port} is already in use" in capsys.readouterr().err


def test_cmapss_rows_of_one_engine_in_cycle_order() -> None:
    from simulator.config import ReplaySpec
    from simulator.replay import load_rows

    spec = ReplaySpec.model_validate(
        {
            "machine": "A",
            "file": str(shared_data_dir() / "cmapss/train_FD001.txt"),
            "format": "cmapss",
            "cmapss_unit": 2,
            "columns": {"cycle": "gear_wear", "s_4": "exhaust_temp", "s_11": "fluid_pressure"},
        }
    )
    rows = load_rows(spec)
    assert [r["cycle"] for r in rows] == [float(i) for i in range(1, len(rows) + 1)]
    assert 100 < len(rows) < 400
    assert all(1300 < r["s_4"] < 1500 for r in rows)


def test_replay_errors_name_file_line_and_column(tmp_path: Path) -> None:
    from simulator.config import ReplaySpec
    from simulator.replay import ReplayError, load_rows

    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,oops\n")
    spec = ReplaySpec.model_validate({"machine": "A", "file": str(bad), "columns": {"b": "rpm"}})
    with pytest.raises(ReplayError, match=r"bad.csv:3: column 'b': 'oops' is not a number"):
        load_rows(spec)
    spec = ReplaySpec.model_validate({"machine": "A", "file": str(bad), "columns": {"zz": "rpm"}})
    with pytest.raises(ReplayError, match=r"columns \['zz'\] not in the file"):
        load_rows(spec)
