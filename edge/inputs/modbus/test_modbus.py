"""The Modbus input: register decoding, read planning, and polling the simulator's real
server (plus a dead device beside it)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.inputs.modbus.config import ModbusDevice, ModbusInputConfig
from edge.inputs.modbus.input import ModbusInput, decode_registers, plan_reads
from edge.metrics import EdgeMetrics
from shared.catalog import CORE_SENSOR_NAMES
from shared.message import Reading
from simulator.config import SimConfig
from simulator.edge_config import simulator_edge_config
from simulator.server import run_simulator
from tests.support.processes import free_port


def _words(fmt: str, value: float | int) -> list[int]:
    raw = struct.pack(">" + fmt, value)
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


@pytest.mark.parametrize(
    ("fmt", "dtype", "value"),
    [
        ("f", "float32", 72.5),
        ("d", "float64", -1.25e-3),
        ("i", "int32", -123456),
        ("I", "uint32", 4_000_000_000),
        ("h", "int16", -2),
        ("Q", "uint64", 2**60 + 5),
    ],
)
def test_decode_every_type_and_order(fmt: str, dtype: str, value: float) -> None:
    words = _words(fmt, value)
    assert decode_registers(words, dtype) == value
    assert decode_registers(list(reversed(words)), dtype, word_order="little") == value
    swapped = [int.from_bytes(w.to_bytes(2, "big")[::-1], "big") for w in words]
    assert decode_registers(swapped, dtype, byte_order="little") == value


def test_fields_are_grouped_into_block_reads() -> None:
    device = ModbusDevice.model_validate(
        {
            "machine_id": "A",
            "fields": [
                {"name": "temperature", "address": 10},
                {"name": "pressure", "address": 12},
                {"name": "rpm", "address": 40},
                {"name": "vibration", "address": 300},
                {"name": "voltage", "address": 0, "register": "input", "type": "int16"},
            ],
            "sample_counter": {"address": 0},
        }
    )
    plans = [(p.register, p.start, p.count) for p in plan_reads(device)]
    assert plans == [("holding", 0, 14), ("holding", 40, 2), ("holding", 300, 2), ("input", 0, 1)]


def test_reads_never_exceed_125_registers() -> None:
    fields = [{"name": f"c{i}", "address": 2 * i} for i in range(100)]
    device = ModbusDevice.model_validate({"machine_id": "A", "fields": fields})
    assert all(p.count <= 125 for p in plan_reads(device))
    assert len(plan_reads(device)) == 2


async def _until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for a condition inside the event loop (never for a fixed time)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def _served(record: Path) -> dict[str, list[tuple[int, int, list[float | None]]]]:
    """machine -> [(sample, ts_ms, values)] in sample order, from the simulator's record."""
    conn = sqlite3.connect(f"file:{record}?mode=ro", uri=True)
    out: dict[str, list[tuple[int, int, list[float | None]]]] = {}
    for machine, sample, ts_ms, values in conn.execute(
        'SELECT machine_id, sample, ts_ms, "values" FROM samples ORDER BY machine_id, sample'
    ):
        out.setdefault(machine, []).append((sample, ts_ms, json.loads(values)))
    conn.close()
    return out


def _as_samples(
    readings: list[Reading], served: dict[str, list[tuple[int, int, list[float | None]]]]
) -> dict[str, list[int]]:
    """Each reading mapped to the sample it must be (same machine and timestamp, identical
    values): machine -> sample numbers in the order they were read."""
    by_ts = {(m, ts): (n, v) for m, rows in served.items() for n, ts, v in rows}
    out: dict[str, list[int]] = {}
    for reading in readings:
        key = (reading.machine_id, round(reading.ts.timestamp() * 1000))
        assert key in by_ts, f"{key} was never served"
        sample, values = by_ts[key]
        assert [reading.values[n] for n in CORE_SENSOR_NAMES] == values, key
        out.setdefault(reading.machine_id, []).append(sample)
    return out


@pytest.mark.integration
def test_polls_the_simulator_and_survives_a_dead_device(tmp_path: Path) -> None:
    port = free_port()
    dead_port = free_port()  # nothing listens here
    record = tmp_path / "rec.db"
    config = simulator_edge_config(
        sim_host="127.0.0.1",
        sim_port=port,
        machines=["A", "B"],
        output={},
        buffer_path=tmp_path / "b.db",
        poll_interval_s=0.02,
    )
    live = ModbusInputConfig.model_validate(config["inputs"]["modbus"][0])
    dead = ModbusInputConfig.model_validate(
        {
            "name": "dead",
            "host": "127.0.0.1",
            "port": dead_port,
            "timeout_s": 0.2,
            "devices": [
                {
                    "machine_id": "Z",
                    "poll_interval_s": 0.05,
                    "fields": [{"name": "temperature", "address": 10}],
                }
            ],
        }
    )
    readings: list[Reading] = []
    metrics = EdgeMetrics()
    sim_config = SimConfig(machines=["A", "B"], rate_hz=5, modbus_port=port, record_path=record)

    async def scenario() -> None:
        stop_sim, stop_edge, started = asyncio.Event(), asyncio.Event(), asyncio.Event()
        sim = asyncio.create_task(run_simulator(sim_config, stop_sim, started=started))
        await asyncio.wait_for(started.wait(), 30)
        connectors = [
            ModbusInput(s, "e1", lambda r, *a, **k: readings.append(r), metrics)
            for s in (live, dead)
        ]
        tasks = [asyncio.create_task(c.run(stop_edge)) for c in connectors]

        def count(machine: str) -> int:
            return sum(r.machine_id == machine for r in readings)

        await _until(lambda: count("A") >= 10 and count("B") >= 10, 60, "10 samples each")
        await _until(
            lambda: metrics.source_errors.labels("dead", "Z")._value.get() >= 3,
            60,
            "errors counted for the dead device",
        )
        assert connectors[0].health() == {"A": True, "B": True}
        assert connectors[1].health() == {"Z": False}
        stop_edge.set()
        await asyncio.gather(*tasks)
        stop_sim.set()
        await sim

    asyncio.run(scenario())
    assert not [r for r in readings if r.machine_id == "Z"]
    # Polled four times per sample period: every sample from the first one read is there,
    # once, with the values served (none recorded twice although polled repeatedly).
    samples = _as_samples(readings, _served(record))
    for machine in ("A", "B"):
        got = samples[machine]
        assert got == list(range(got[0], got[0] + len(got))), (machine, got)
        assert got[0] <= 2  # polling began as the simulator served its first sample
    assert all(len(r.values) == 50 and not r.quality for r in readings)


@pytest.mark.integration
def test_recovers_after_the_modbus_server_restarts(tmp_path: Path) -> None:
    port = free_port()
    config = simulator_edge_config(
        sim_host="127.0.0.1",
        sim_port=port,
        machines=["A"],
        output={},
        buffer_path=tmp_path / "b.db",
        poll_interval_s=0.05,
    )
    source = ModbusInputConfig.model_validate({**config["inputs"]["modbus"][0], "timeout_s": 0.3})
    readings: list[Reading] = []
    connector = ModbusInput(source, "e1", lambda r, *a, **k: readings.append(r), EdgeMetrics())

    async def scenario() -> None:
        stop_edge = asyncio.Event()
        edge = asyncio.create_task(connector.run(stop_edge))
        for run in range(2):
            stop_sim = asyncio.Event()
            sim_config = SimConfig(
                machines=["A"], rate_hz=10, modbus_port=port, record_path=tmp_path / f"r{run}.db"
            )
            sim = asyncio.create_task(run_simulator(sim_config, stop_sim))
            before = len(readings)
            await _until(
                # The default binds this run's count (B023); mypy cannot infer such a lambda.
                lambda before=before: len(readings) >= before + 5,  # type: ignore[misc]
                60,
                f"readings after the server (re)start {run}",
            )
            assert connector.health() == {"A": True}
            stop_sim.set()
            await sim
            await _until(lambda: connector.health() == {"A": False}, 30, "the device marked down")
        stop_edge.set()
        await edge

    asyncio.run(scenario())
    # Both server runs count their samples from 1: each reading is one of its run's samples,
    # with the values served.
    for run in range(2):
        served = _served(tmp_path / f"r{run}.db")
        stamps = {ts for _, ts, _ in served["A"]}
        mine = [r for r in readings if round(r.ts.timestamp() * 1000) in stamps]
        assert len(mine) >= 5
        _as_samples(mine, served)


@pytest.mark.integration
def test_modbus_rtu_source_reads_the_simulator_over_a_serial_line(tmp_path: Path) -> None:
    link = tmp_path / "ttyRIG"
    record = tmp_path / "rec.db"
    config = simulator_edge_config(
        sim_host="127.0.0.1",
        sim_port=1,
        machines=["A", "B"],
        output={},
        buffer_path=tmp_path / "b.db",
        poll_interval_s=0.2,
    )
    doc = config["inputs"]["modbus"][0]
    doc.update(transport="rtu", serial_port=str(link), baudrate=115200, timeout_s=1.0)
    doc.pop("host")
    source = ModbusInputConfig.model_validate(doc)
    readings: list[Reading] = []

    async def scenario() -> None:
        stop_sim, stop_edge, started = asyncio.Event(), asyncio.Event(), asyncio.Event()
        sim_config = SimConfig.model_validate(
            {
                "machines": ["A", "B"],
                "rate_hz": 5,
                "record_path": record,
                "modbus": {"enabled": False},
                "modbus_rtu": {"enabled": True, "link": str(link), "baudrate": 115200},
            }
        )
        sim = asyncio.create_task(run_simulator(sim_config, stop_sim, started=started))
        await asyncio.wait_for(started.wait(), 30)
        connector = ModbusInput(source, "e1", lambda r, *a, **k: readings.append(r), EdgeMetrics())
        task = asyncio.create_task(connector.run(stop_edge))
        await _until(
            lambda: {r.machine_id for r in readings} == {"A", "B"} and len(readings) >= 6,
            60,
            "readings of both machines over the serial line",
        )
        stop_edge.set()
        await task
        stop_sim.set()
        await sim

    asyncio.run(scenario())
    assert all(len(r.values) == 50 and not r.quality for r in readings)
    _as_samples(readings, _served(record))  # every reading is a served sample, values exact


def _device(**fields: object) -> ModbusDevice:
    return ModbusDevice.model_validate({"machine_id": "A", **fields})


def test_modicon_notation_sets_table_and_offset() -> None:
    device = _device(
        address_notation="modicon",
        fields=[
            {"name": "temperature", "address": "40011"},
            {"name": "pressure", "address": 30001, "type": "int16"},
            {"name": "motor_on", "address": "00001"},
            {"name": "door_closed", "address": "100017"},
        ],
        sample_counter={"address": "40001"},
    )
    got = [(f.register_kind, f.address, f.data_type) for f in device.fields]
    assert got == [
        ("holding", 10, "float32"),
        ("input", 0, "int16"),
        ("coil", 0, "bool"),
        ("discrete_input", 16, "bool"),
    ]
    assert device.sample_counter is not None and device.sample_counter.address == 0


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ({"fields": [{"name": "temperature", "address": "40011"}]}, "address_notation: modicon"),
        (
            {
                "address_notation": "modicon",
                "fields": [{"name": "temperature", "address": "40011", "register": "input"}],
            },
            "fields[0] (temperature): address '40011' is a holding address",
        ),
        (
            {"address_notation": "modicon", "fields": [{"name": "temperature", "address": "2"}]},
            "is not Modicon numbering",
        ),
        ({"fields": [{"name": "pressure", "address": 0, "unit": "degC"}]}, "'pressure'"),
        ({"fields": [{"name": "pressure", "address": 0, "unit": "furlong"}]}, "'furlong'"),
        ({"fields": [{"name": "x_on", "address": 0, "register": "coil", "type": "int16"}]}, "bool"),
        ({"fields": [{"name": "x_on", "address": 0, "bit": 12, "bits": 8}]}, "exceeds 16"),
        ({"fields": [{"name": "x_text", "address": 0, "type": "string"}]}, "length"),
    ],
)
def test_config_errors_name_the_field(device: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        _device(**device)
    assert message in str(excinfo.value)


def test_offsets_that_look_like_4xxxx_are_warned_about() -> None:
    config = ModbusInputConfig.model_validate(
        {
            "host": "h",
            "devices": [
                {
                    "machine_id": "A",
                    "fields": [
                        {"name": "temperature", "address": 40011},
                        {"name": "pressure", "address": 30001, "register": "input"},
                        {"name": "rpm", "address": 10},
                    ],
                }
            ],
        }
    )
    warnings = config.warnings()
    assert len(warnings) == 2
    assert "devices[0].fields[0] (temperature): address 40011" in warnings[0]
    assert "offset 10" in warnings[0] and "address_notation: modicon" in warnings[0]


def test_bit_tables_plan_their_own_reads() -> None:
    device = _device(
        fields=[
            {"name": "a_on", "address": 0, "register": "coil"},
            {"name": "b_on", "address": 100, "register": "coil"},
            {"name": "c_on", "address": 5000, "register": "coil"},
            {"name": "d_on", "address": 3, "register": "discrete_input"},
            {"name": "e_text", "address": 20, "type": "string", "length": 4},
            {"name": "f_bit", "address": 2, "bit": 3},
        ]
    )
    plans = [(p.register, p.start, p.count) for p in plan_reads(device)]
    assert plans == [
        ("holding", 2, 1),
        ("holding", 20, 4),
        ("coil", 0, 101),
        ("coil", 5000, 1),
        ("discrete_input", 3, 1),
    ]


def test_bcd_and_string_decoding() -> None:
    from edge.inputs.modbus.input import DecodeError, decode_bcd, decode_string

    assert decode_bcd([0x1234]) == 1234
    assert decode_bcd([0x3456, 0x0012], word_order="little") == 123456
    with pytest.raises(DecodeError):
        decode_bcd([0x12AB])
    words = [int.from_bytes(b"71", "big"), int.from_bytes(b".2", "big"), 0x3500]
    assert decode_string(words) == "71.25"
    assert decode_string([int.from_bytes(b"17", "big")], byte_order="little") == "71"
