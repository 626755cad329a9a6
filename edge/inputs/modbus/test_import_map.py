"""``rig-edge import-map``: the sample PLC CSV becomes a config that ``check-config --probe``
accepts against a real ``rig-sim``; CSV mistakes and wrong units are refused by name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge.cli import main as edge_main
from edge.inputs.modbus.import_map import MapImportError, csv_to_devices, sensor_name
from tests.support.pipeline import start_simulator
from tools.kafka_broker import KafkaBroker

SAMPLE = Path(__file__).with_name("sample_plc.csv")
BASE = {
    "edge_id": "import-check",
    "output": {"kind": "http", "url": "http://127.0.0.1:1/x", "api_key_env": "PATH"},
}


def _edge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_sensor_names_from_tags() -> None:
    assert sensor_name("Bearing Temp") == "bearing_temp"
    assert sensor_name("CoolantTemp") == "coolant_temp"
    assert sensor_name("RPM") == "rpm"
    assert sensor_name(" PT-101 / Pressure ") == "pt_101_pressure"


def test_sample_csv_maps_as_documented() -> None:
    [device] = csv_to_devices(SAMPLE.read_text(), machine_id="A")
    fields = {f["name"]: f for f in device["fields"]}
    assert device["address_notation"] == "modicon"
    assert device["sample_counter"] == {"address": "40001", "type": "uint32"}
    assert fields["machine_running"] == {"name": "machine_running", "address": "40003", "bit": 1}
    assert fields["coolant_temp"] == {
        "name": "coolant_temp",
        "address": "30021",
        "type": "int16",
        "scale": 0.01,
        "unit": "degF",
    }


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ("Tag,Data Type\nx,REAL\n", "no 'address' column"),
        ("Tag;Address;Data Type\nspeed;40001;REEL\n", "line 2: data type 'REEL'"),
        ("Tag,Address,Unit\nPressure,40001,degC\n", "line 2: field 'pressure': unit 'degC'"),
        ("Tag,Address\nTemperature,2\n", "line 2:"),
        ("Tag,Address,Data Type\nLabel,40001,STRING\n", "line 2: a STRING needs its length"),
    ],
)
def test_csv_mistakes_name_the_line(csv: str, message: str) -> None:
    with pytest.raises(MapImportError) as excinfo:
        csv_to_devices(csv, machine_id="A")
    assert message in str(excinfo.value)


def test_wrong_unit_is_refused_by_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A °C register mapped to the bar sensor is a config error naming the field, not a
    stream of anomalies once running."""
    device = {
        "machine_id": "A",
        "fields": [
            {"name": "temperature", "address": 10, "unit": "degC"},
            {"name": "pressure", "address": 12, "unit": "degC"},
        ],
    }
    doc = {**BASE, "inputs": {"modbus": [{"host": "127.0.0.1", "devices": [device]}]}}
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    assert edge_main(["check-config", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "inputs.modbus[0].devices[0].fields[1]" in err
    assert "field 'pressure': unit 'degC' (temperature) does not fit sensor 'pressure'" in err

    device["fields"][1]["unit"] = "psi"  # a pressure unit: converted, accepted
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    assert edge_main(["check-config", "-c", str(path)]) == 0


def test_4xxxx_looking_offset_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device = {"machine_id": "A", "fields": [{"name": "temperature", "address": 40011}]}
    doc = {**BASE, "inputs": {"modbus": [{"host": "127.0.0.1", "devices": [device]}]}}
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    assert edge_main(["check-config", "-c", str(path)]) == 0
    err = capsys.readouterr().err
    assert "warning: inputs.modbus[0].devices[0].fields[0] (temperature): address 40011" in err
    assert "address_notation: modicon" in err


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_imported_sample_csv_passes_check_config_probe_against_rig_sim(
    tmp_path: Path, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    sim, port = start_simulator(tmp_path, None, ["A"], rate_hz=5)
    try:
        base = tmp_path / "base.yaml"
        # A whole edge config: the probe also asks the output (a real broker and topic).
        output = {
            "kind": "kafka",
            "bootstrap_servers": kafka_broker.bootstrap,
            "topic": kafka_topic,
        }
        doc = {"edge_id": "import-check", "output": output}
        base.write_text(
            yaml.safe_dump({**doc, "buffer": {"path": str(tmp_path / "buffer.db")}}),
            encoding="utf-8",
        )
        out = tmp_path / "edge.yaml"
        made = _edge(
            "import-map",
            str(SAMPLE),
            "--machine-id",
            "A",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--name",
            "rig-plc",
            "--base",
            str(base),
            "-o",
            str(out),
        )
        assert made.returncode == 0, made.stderr
        doc = yaml.safe_load(out.read_text())
        assert [e["name"] for e in doc["inputs"]["modbus"]] == ["rig-plc"]
        probed = _edge("check-config", "-c", str(out), "--probe")
        assert probed.returncode == 0, probed.stdout + probed.stderr
        assert "ok   rig-plc: unit 1 (A): 12 values read" in probed.stdout
        assert "ok   output kafka" in probed.stdout, probed.stdout
        assert "warning" not in probed.stderr
    finally:
        sim.stop()
