"""Local threshold pins (``thresholds:``) and ``models.thresholds_poll_s`` in the edge YAML:
valid ones load, invalid ones are refused naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import load_edge_config
from shared.catalog import Thresholds
from shared.configfile import ConfigError

BASE = """
edge_id: rig-1
buffer: {path: BUF}
inputs:
  modbus:
    - host: 127.0.0.1
      port: 5020
      devices:
        - machine_id: A
          fields: [{name: temperature, address: 10}]
output: {kind: http, url: "http://127.0.0.1:8080/api/v1/ingest", api_key_env: KEY}
models:
  cloud_url: http://127.0.0.1:8080
  api_key_env: KEY
  public_key_file: /etc/rig-edge/signing.pub
  thresholds_poll_s: POLL
thresholds:
  A:
    temperature: PIN
"""

GOOD_PIN = "{critical_low: -10, critical_high: 95.5, warn_high: 90}"


def _write(tmp_path: Path, pin: str = GOOD_PIN, poll: str = "2", machine: str = "A") -> Path:
    text = BASE.replace("BUF", str(tmp_path / "buf.db")).replace("PIN", pin)
    text = text.replace("POLL", poll).replace("\n  A:\n", f"\n  {machine}:\n")
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    return path


def test_pins_and_poll_interval_load(tmp_path: Path) -> None:
    config = load_edge_config(_write(tmp_path))
    assert config.models is not None and config.models.thresholds_poll_s == 2.0
    assert config.threshold_pins() == {"A": {"temperature": Thresholds(-10.0, 95.5, None, 90.0)}}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"pin": "{critical_low: 5, critical_high: 1}"}, "critical_high: must be greater"),
        ({"pin": "{warn_high: 3}"}, "critical_high: give at least one"),
        ({"pin": "{critical_high: .nan}"}, "thresholds.A.temperature.critical_high"),
        ({"pin": "{critical_high: 1e13}"}, "critical_high: is out of range"),
        ({"pin": "{critical_high: 9, warn_high: 10}"}, "warn_high: must not be above"),
        ({"pin": "{critical_high: 9, colour: red}"}, "thresholds.A.temperature.colour"),
        ({"machine": "Z"}, "thresholds.Z: machine 'Z' is read by no input"),
        ({"machine": "'A B'"}, "thresholds.'A B': not a machine id"),
        ({"poll": "0.1"}, "models.thresholds_poll_s"),
    ],
)
def test_bad_pins_name_file_and_field(
    tmp_path: Path, changes: dict[str, str], expected: str
) -> None:
    path = _write(tmp_path, **changes)
    with pytest.raises(ConfigError) as info:
        load_edge_config(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_a_pin_on_a_sensor_that_is_not_core_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path)
    path.write_text(path.read_text().replace("    temperature:", "    my_probe:"))
    with pytest.raises(ConfigError, match=r"thresholds.A.my_probe: not a core sensor name"):
        load_edge_config(path)
