"""The shared config vocabulary: secrets are named, never inlined, and every failure names the
setting; strict models name the keys they refuse."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.configtypes import SecretRef, StrictModel


class _Example(StrictModel):
    port: int = 1
    password: SecretRef | None = None


def test_secret_from_env() -> None:
    ref = SecretRef(env="RIG_TEST_SECRET", env_label="password_env")
    assert ref.problem({"RIG_TEST_SECRET": "s3cret"}) is None
    assert ref.read({"RIG_TEST_SECRET": "s3cret"}) == "s3cret"


def test_secret_from_file_strips_the_newline(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("s3cret\n", encoding="utf-8")
    ref = SecretRef(file=path)
    assert ref.problem({}) is None
    assert ref.read({}) == "s3cret"


def test_file_wins_over_env_as_with_name_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("from-file", encoding="utf-8")
    ref = SecretRef.from_environ("DB", {"DB": "from-env", "DB_FILE": str(path)})
    assert ref is not None
    assert ref.read({"DB": "from-env"}) == "from-file"


def test_from_environ_unset_is_none() -> None:
    assert SecretRef.from_environ("DB", {}) is None
    assert SecretRef.from_environ("DB", {"DB": ""}) is None


def test_missing_env_names_the_setting() -> None:
    ref = SecretRef(env="RIG_TEST_UNSET", env_label="api_key_env")
    assert "api_key_env=RIG_TEST_UNSET" in (ref.problem({}) or "")
    with pytest.raises(ValueError, match=r"api_key_env=RIG_TEST_UNSET: .* not set"):
        ref.read({})


def test_missing_file_names_the_setting(tmp_path: Path) -> None:
    ref = SecretRef(file=tmp_path / "nope", file_label="api_key_file")
    assert (ref.problem() or "").endswith("no such file")
    with pytest.raises(ValueError, match=r"api_key_file=.*nope: no such file"):
        ref.check()
    with pytest.raises(ValueError, match=r"api_key_file=.*nope: no such file"):
        ref.read()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file_names_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("s3cret", encoding="utf-8")
    path.chmod(0)
    ref = SecretRef(file=path, file_label="DATABASE_URL_FILE")
    with pytest.raises(ValueError, match=r"DATABASE_URL_FILE=.*: not readable"):
        ref.check()
    with pytest.raises(ValueError, match=r"DATABASE_URL_FILE=.*: cannot read"):
        ref.read()


def test_a_directory_is_not_a_secret_file(tmp_path: Path) -> None:
    ref = SecretRef(file=tmp_path, file_label="password_file")
    with pytest.raises(ValueError, match=r"password_file=.*: not a regular file"):
        ref.check()
    with pytest.raises(ValueError, match=r"password_file=.*: cannot read"):
        ref.read()


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"file is empty"):
        SecretRef(file=path).read()


def test_inline_secret_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"never written inline"):
        _Example.model_validate({"password": "hunter2"})


def test_a_reference_needs_a_source() -> None:
    with pytest.raises(ValidationError, match=r"set env or file"):
        _Example.model_validate({"password": {}})
    with pytest.raises(ValidationError, match=r"env"):
        SecretRef(env="not a variable name")


def test_nested_reference_validates(tmp_path: Path) -> None:
    model = _Example.model_validate({"password": {"file": str(tmp_path / "p")}})
    assert model.password == SecretRef(file=tmp_path / "p")


def test_strict_base_refuses_unknown_keys_by_name() -> None:
    with pytest.raises(ValidationError) as info:
        _Example.model_validate({"port": 2, "colour": "blue", "prot": 3})
    errors = {err["loc"][0]: err["type"] for err in info.value.errors()}
    assert errors == {"colour": "extra_forbidden", "prot": "extra_forbidden"}
    with pytest.raises(ValidationError, match=r"password.mode"):
        _Example.model_validate({"password": {"env": "X", "mode": "inline"}})
