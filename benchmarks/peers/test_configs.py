"""The configurations bench-peers hands each tool describe the same 50 values of the same
device at the same poll interval, in a form each tool accepts; and the downstream counters
count values, not messages."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import yaml

from benchmarks.peers import (
    DEVICE_NAME,
    UNIT_ID,
    line_protocol_values,
    rig_edge_config,
    sensors,
    tb_telemetry_values,
    telegraf_config,
    thingsboard_configs,
)
from edge.config import load_edge_config
from simulator.register_map import HOLDING_REGISTERS


def test_the_device_is_fifty_float32_values_inside_the_holding_registers() -> None:
    addresses = [addr for _, addr in sensors()]
    assert len(addresses) == 50 and len({name for name, _ in sensors()}) == 50
    assert addresses == list(range(addresses[0], addresses[0] + 100, 2))
    assert addresses[-1] + 1 < HOLDING_REGISTERS


def test_rig_edge_config_is_valid_and_reads_every_poll(tmp_path: Path) -> None:
    doc = rig_edge_config(5020, 0.01, "http://127.0.0.1:1/api/v1/ingest", tmp_path / "b.db", 9)
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(doc))
    config = load_edge_config(path, log_deprecations=False)
    (source,) = config.inputs.modbus
    (device,) = source.devices
    assert device.unit_id == UNIT_ID and device.poll_interval_s == 0.01
    assert device.sample_counter is None  # acquires on every poll, as the peers do
    assert [(f.name, f.address) for f in device.fields] == sensors()


def test_telegraf_config_is_toml_with_the_same_registers_and_interval(tmp_path: Path) -> None:
    conf = tomllib.loads(telegraf_config(5020, 0.1, tmp_path / "out.lp", tmp_path / "t.log"))
    assert conf["agent"]["interval"] == "100ms"
    (modbus,) = conf["inputs"]["modbus"]
    assert modbus["slave_id"] == UNIT_ID and modbus["controller"] == "tcp://127.0.0.1:5020"
    registers = modbus["holding_registers"]
    assert [(r["name"], r["address"]) for r in registers] == [
        (name, [addr, addr + 1]) for name, addr in sensors()
    ]
    assert {(r["data_type"], r["byte_order"]) for r in registers} == {("FLOAT32-IEEE", "ABCD")}
    assert conf["outputs"]["file"][0]["files"] == [str(tmp_path / "out.lp")]


def test_thingsboard_configs_are_json_with_the_same_registers_and_period() -> None:
    files = {name: json.loads(text) for name, text in thingsboard_configs(5020, 1.0, 1883).items()}
    gateway = files["tb_gateway.json"]
    assert gateway["thingsboard"]["port"] == 1883
    assert gateway["connectors"][0]["configuration"] == "modbus.json"
    (slave,) = files["modbus.json"]["master"]["slaves"]
    assert (slave["port"], slave["unitId"], slave["pollPeriod"]) == (5020, UNIT_ID, 1000)
    assert (slave["byteOrder"], slave["wordOrder"]) == ("BIG", "BIG")
    assert [(t["tag"], t["address"]) for t in slave["timeseries"]] == sensors()
    assert {(t["type"], t["objectsCount"], t["functionCode"]) for t in slave["timeseries"]} == {
        ("32float", 2, 3)
    }
    assert files["logs.json"]["version"] == 1


def test_counters_count_values() -> None:
    line = f"modbus,name={DEVICE_NAME},slave_id=1 a=1.5,b=2,c=-3e-05 1700000000000000000"
    assert line_protocol_values(line) == 3
    assert line_protocol_values("") == 0 and line_protocol_values("modbus,name=x a=1") == 0
    payload = {DEVICE_NAME: [{"ts": 1, "values": {"a": 1, "b": 2}}, {"ts": 2, "values": {"a": 3}}]}
    assert tb_telemetry_values(json.dumps(payload).encode()) == 3
    assert tb_telemetry_values(json.dumps({DEVICE_NAME: [{"a": 1}]}).encode()) == 1
