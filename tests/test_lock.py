"""The lock files say what pyproject.toml asks for: `make lock` was run after the last change
of a dependency, and a change without relocking is caught with the command to run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tools import lock

ROOT = Path(__file__).resolve().parents[1]


def test_lock_files_match_pyproject() -> None:
    problems = lock.stale_locks()
    assert not problems, f"{problems}: run `make lock` and commit the requirements*.lock files"


def test_a_dependency_changed_without_relocking_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ["pyproject.toml", *lock.LOCKS]:
        shutil.copy(ROOT / name, tmp_path / name)
    assert lock.stale_locks(tmp_path) == []
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('"orjson>=3.10,<4",', '"orjson>=3.10,<4",\n    "rich>=13",')
    )
    assert len(lock.stale_locks(tmp_path)) == len(lock.LOCKS)
    monkeypatch.setattr(lock, "ROOT", tmp_path)
    assert lock.main(["--check"]) == 1
    assert "run `make lock`" in capsys.readouterr().err


def test_every_locked_requirement_has_hashes() -> None:
    for name in lock.LOCKS:
        text = (ROOT / name).read_text()
        pins = [line for line in text.splitlines() if "==" in line and not line.startswith(" ")]
        assert pins, name
        hashes = text.count("--hash=sha256:")
        assert hashes >= len(pins), f"{name}: {len(pins)} pins, {hashes} hashes"
