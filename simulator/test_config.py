"""Simulator settings and the CLI's one-line errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from simulator.cli import main as sim_main
from simulator.config import SimConfig


def test_defaults() -> None:
    config = SimConfig()
    assert config.machines == ["A", "B", "C"]
    assert config.rate_hz == 1.0 and config.seed == 42
    assert (config.modbus_host, config.modbus_port) == ("127.0.0.1", 5020)
    assert config.record_path is None


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"machines": ["A", "A"]}, "machines"),
        ({"machines": ["A", "b/c"]}, "machines"),
        ({"machines": ["-A"]}, "machines"),
        ({"machines": []}, "machines"),
        ({"rate_hz": 0}, "rate_hz"),
        ({"rate_hz": 1001}, "rate_hz"),
        ({"modbus_port": 0}, "modbus"),
        ({"modbus_port": 65536}, "modbus"),
    ],
)
def test_bad_settings_are_refused(settings: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        SimConfig.model_validate(settings)
    assert info.value.errors()[0]["loc"][0] == field


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--rate", "-1"], "--rate (rate_hz): Input should be greater than 0"),
        (["--machines", "A,A"], "--machines (machines): machine ids must be unique"),
        (["--machines", "A,b/c"], "--machines (machines): machine id 'b/c' must be"),
        (["--modbus-port", "70000"], "--modbus-port (modbus.port):"),
    ],
)
def test_cli_config_errors_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    assert sim_main(["run", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rig-sim: ") and expected in err, err


def test_register_map_json_is_the_edge_source_config(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    args = ["register-map", "--format", "json", "--machines", "A,B", "--port", "5021"]
    assert sim_main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["port"] == 5021 and [d["unit_id"] for d in doc["devices"]] == [1, 2]
    assert doc["devices"][1]["block"] == {"start": 0, "count": 110}
