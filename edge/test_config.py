from pathlib import Path

import pytest

from edge.cli import main
from edge.config import load_edge_config
from edge.inputs.modbus.config import ModbusInputConfig
from edge.outputs.http.config import HttpOutputConfig
from shared.configfile import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy/edge-systemd/edge.example.yaml"

GOOD = """
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
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(text.replace("BUF", str(tmp_path / "buf.db")))
    return path


def test_example_config_is_valid() -> None:
    config = load_edge_config(EXAMPLE)
    assert config.output.kind == "kafka"
    modbus = config.inputs.of_kind("modbus")[0]
    assert isinstance(modbus, ModbusInputConfig)
    assert modbus.devices[0].fields[-1].scale == 0.1
    assert config.deprecations == []


def test_defaults_match_the_cloud_and_the_example(tmp_path: Path) -> None:
    """The edge's time window defaults to the cloud's, and the example states the defaults."""
    from shared.message import DEFAULT_WINDOW

    default = load_edge_config(_write(tmp_path, GOOD))
    assert default.time_window.window() == DEFAULT_WINDOW
    example = load_edge_config(EXAMPLE)
    for section in ("buffer", "health", "time_window"):
        documented = getattr(example, section).model_dump(exclude={"path"})
        assert documented == getattr(default, section).model_dump(exclude={"path"}), section


def test_good_config_loads(tmp_path: Path) -> None:
    assert load_edge_config(_write(tmp_path, GOOD)).edge_id == "rig-1"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("port: 5020", "port: 70000"), "inputs.modbus[0].port"),
        (("address: 10", "address: -1"), "inputs.modbus[0].devices[0].fields[0].address"),
        (("name: temperature", "name: Temp Sensor"), "inputs.modbus[0].devices[0].fields[0].name"),
        (("machine_id: A", "machine_id: 'A B'"), "inputs.modbus[0].devices[0].machine_id"),
        (("edge_id: rig-1", "edge_id: rig-1\ncolour: blue"), "colour: Extra inputs"),
        (("kind: http", "kind: carrier-pigeon"), "output"),
        ((", api_key_env: KEY", ""), "api_key_env or api_key_file"),
        (("edge_id: rig-1", ""), "edge_id: Field required"),
        (("buffer: {path: BUF}", "buffer: {path: BUF, max_pending_readings: 10}"), "buffer.max_"),
        (("edge_id: rig-1", "edge_id: rig-1\ntime_window: {max_ahead_s: -1}"), "time_window."),
        (("edge_id: rig-1", "edge_id: rig-1\nhealth: {commit_stall_s: 0}"), "health.commit"),
    ],
)
def test_bad_config_names_file_and_field(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    path = _write(tmp_path, GOOD.replace(*change))
    with pytest.raises(ConfigError) as info:
        load_edge_config(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "edge_id: [unclosed\n")
    with pytest.raises(ConfigError, match="line 2"):
        load_edge_config(path)


def test_check_config_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(_write(tmp_path, GOOD))
    # check-config runs on the rig: a secret the daemon could not read fails it, named.
    monkeypatch.delenv("KEY", raising=False)
    assert main(["check-config", "-c", path]) == 2
    assert "output.api_key_env=KEY" in capsys.readouterr().err
    monkeypatch.setenv("KEY", "k" * 32)
    assert main(["check-config", "-c", path]) == 0
    assert main(["check-config", "-c", str(tmp_path / "missing.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_secrets_are_named_never_inline(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("api_key_env: KEY", "api_key: s3cret"))
    with pytest.raises(ConfigError, match="never written in YAML"):
        load_edge_config(path)
    path = _write(tmp_path, GOOD.replace("api_key_env: KEY", "api_key_env: 'not a name'"))
    with pytest.raises(ConfigError, match=r"output\.http\.api_key_env"):
        load_edge_config(path)


def test_check_secrets_names_each_unreadable_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RIG_TEST_EDGE_KEY", raising=False)
    text = GOOD.replace("api_key_env: KEY", "api_key_env: RIG_TEST_EDGE_KEY") + (
        "models: {cloud_url: 'https://cloud', api_key_file: KEYFILE, public_key_file: PUB}\n"
    )
    key_file = tmp_path / "api-key"
    path = _write(tmp_path, text.replace("KEYFILE", str(key_file)).replace("PUB", "/x.pub"))
    # Structure only by default: the file may be provisioned after the config.
    config = load_edge_config(path)
    with pytest.raises(ConfigError) as info:
        load_edge_config(path, check_secrets=True)
    assert "output.api_key_env=RIG_TEST_EDGE_KEY: environment variable" in str(info.value)
    assert f"models.api_key_file={key_file}: no such file" in str(info.value)
    key_file.write_text("edge-key\n", encoding="utf-8")
    monkeypatch.setenv("RIG_TEST_EDGE_KEY", "env-key")
    assert load_edge_config(path, check_secrets=True).secret_problems() == []
    # The HTTP output and the model sync read the key the same way (one ApiKeySource).
    assert isinstance(config.output, HttpOutputConfig)
    assert config.output.api_key() == "env-key"
    assert config.models is not None and config.models.api_key() == "edge-key"
