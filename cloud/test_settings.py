"""Cloud settings are declared once and validated at the boundary: a bad value names its
variable, every secret also comes from NAME_FILE, the database is required where needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cloud.settings import CloudSettings, DatabaseSettings, SettingsError
from shared.configtypes import KAFKA_CONSUMER_GROUP, KAFKA_DEAD_LETTER_TOPIC, KAFKA_TOPIC


def test_defaults_are_the_shared_ones() -> None:
    settings = CloudSettings.from_env({})
    assert settings.database_url is None
    assert (settings.topic, settings.dead_letter_topic, settings.consumer_group) == (
        KAFKA_TOPIC,
        KAFKA_DEAD_LETTER_TOPIC,
        KAFKA_CONSUMER_GROUP,
    )
    assert settings.pool_max == 10


def test_values_come_from_their_variables() -> None:
    settings = CloudSettings.from_env(
        {
            "DATABASE_URL": "postgresql://db/rig",
            "KAFKA_BROKER_URL": "k:9092",
            "KAFKA_TOPIC": "plant-3",
            "RIG_DB_POOL_MAX": "20",
            "RIG_RETENTION_DAYS": "",  # empty counts as unset
        }
    )
    assert settings.database_url == "postgresql://db/rig"
    assert settings.kafka_bootstrap == "k:9092"
    assert settings.topic == "plant-3"
    assert settings.pool_max == 20
    assert settings.retention_days == 0


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"RIG_DB_POOL_MAX": "ten"}, "RIG_DB_POOL_MAX='ten'"),
        ({"RIG_DB_POOL_MAX": "501"}, "RIG_DB_POOL_MAX='501'"),
        ({"RIG_MAX_BODY_BYTES": "12"}, "RIG_MAX_BODY_BYTES='12'"),
        ({"KAFKA_TOPIC": "two words"}, "KAFKA_TOPIC='two words'"),
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL='TLS'"),
        ({"RIG_ACCEPT_MAX_AHEAD_S": "-1"}, "RIG_ACCEPT_MAX_AHEAD_S='-1'"),
    ],
)
def test_a_bad_value_names_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named.replace("(", r"\(")) as info:
        CloudSettings.from_env(env)
    assert str(info.value).startswith(named)


def test_every_bad_variable_is_named_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        CloudSettings.from_env({"RIG_DB_POOL_MIN": "x", "RIG_DB_POOL_MAX": "y"})
    assert "RIG_DB_POOL_MIN='x'" in str(info.value)
    assert "RIG_DB_POOL_MAX='y'" in str(info.value)


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("DATABASE_URL", "database_url"),
        ("RIG_INGEST_API_KEY", "ingest_api_key"),
        ("KAFKA_SASL_PASSWORD", "kafka_sasl_password"),
        ("RIG_BOOTSTRAP_ADMIN_PASSWORD", "bootstrap_admin_password"),
    ],
)
def test_every_secret_accepts_name_file(tmp_path: Path, name: str, field: str) -> None:
    # Long enough for every secret (the bootstrap ingest key needs 32 bytes).
    in_file, in_env = "from-the-file-7f3a9c2e5b1d4f6a8c0e2b", "from-env-7f3a9c2e5b1d4f6a8c0e2b4d6f"
    path = tmp_path / "secret"
    path.write_text(in_file + "\n", encoding="utf-8")
    settings = CloudSettings.from_env({f"{name}_FILE": str(path)})
    assert getattr(settings, field) == in_file
    # The file wins over the variable, as with the official container images.
    both = CloudSettings.from_env({name: in_env, f"{name}_FILE": str(path)})
    assert getattr(both, field) == in_file
    assert getattr(CloudSettings.from_env({name: in_env}), field) == in_env


def test_a_missing_or_empty_secret_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"DATABASE_URL_FILE=.*nope: no such file"):
        CloudSettings.from_env({"DATABASE_URL_FILE": str(tmp_path / "nope")})
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    with pytest.raises(SettingsError, match=r"RIG_INGEST_API_KEY_FILE=.*empty: file is empty"):
        CloudSettings.from_env({"RIG_INGEST_API_KEY_FILE": str(tmp_path / "empty")})


def test_secrets_stay_out_of_repr_and_errors(tmp_path: Path) -> None:
    settings = CloudSettings.from_env({"DATABASE_URL": "postgresql://u:hunter2@db/x"})
    assert "hunter2" not in repr(settings)
    with pytest.raises(SettingsError) as info:
        CloudSettings.from_env({"RIG_INGEST_API_KEY": "hunter2", "RIG_DB_POOL_MAX": "x"})
    assert "hunter2" not in str(info.value)


def test_kafka_security_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret", encoding="utf-8")
    settings = CloudSettings.from_env(
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": "rig",
            "KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "pw"),
        }
    )
    assert settings.kafka_client_config == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "rig",
        "sasl.password": "s3cret",
    }


def test_the_database_is_required_where_it_is_needed() -> None:
    settings = CloudSettings.from_env({})
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        settings.require_database_url()
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        settings.with_database()
    embedded = settings.with_database("postgresql://127.0.0.1:5433/x")
    assert isinstance(embedded, DatabaseSettings)
    assert embedded.database_url == "postgresql://127.0.0.1:5433/x"
    assert embedded.pool_max == settings.pool_max
    configured = CloudSettings.from_env({"DATABASE_URL": "postgresql://db/x"}).with_database()
    assert configured.database_url == "postgresql://db/x"


def test_rig_cloud_exits_2_naming_the_variable(tmp_path: Path) -> None:
    """At the command line: configuration error, exit code 2, the variable named."""
    result = subprocess.run(
        [sys.executable, "-m", "cloud.cli", "migrate", "--data-dir", str(tmp_path / "pg")],
        env={"PATH": "/usr/bin:/bin", "RIG_DB_POOL_MAX": "many"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 2, result.stderr
    assert "RIG_DB_POOL_MAX='many'" in result.stderr
    assert not (tmp_path / "pg").exists()
