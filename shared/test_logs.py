"""Log lines: JSON for machines, text for a terminal, journald priorities under systemd."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import logs
from shared.logs import configure_logging, log_event


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _emit(monkeypatch: pytest.MonkeyPatch, stream: io.TextIOBase, **kwargs: object) -> None:
    monkeypatch.setattr(logs.sys, "stderr", stream)
    configure_logging("rig-test", "DEBUG", **kwargs)  # type: ignore[arg-type]
    log_event(logging.getLogger("edge.forwarding"), logging.WARNING, "output down", output="http")


def test_json_lines_carry_the_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    _emit(monkeypatch, out, log_format="json")
    doc = json.loads(out.getvalue())
    assert doc["level"] == "warning" and doc["event"] == "output down"
    assert doc["service"] == "rig-test" and doc["output"] == "http"


def test_text_lines_for_a_person(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    _emit(monkeypatch, out, log_format="text")
    line = out.getvalue().strip()
    assert "WARNING edge.forwarding: output down output=http" in line, line
    assert not line.startswith("{")


def test_auto_is_text_on_a_terminal_and_json_otherwise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(logs.LOG_FORMAT_ENV, raising=False)
    master, replica = pty.openpty()
    try:
        with os.fdopen(replica, "w", closefd=False) as tty:
            assert logs.resolve_format(None, tty) == "text"
    finally:
        os.close(master)
        os.close(replica)
    with (tmp_path / "log").open("w") as file:
        assert logs.resolve_format(None, file) == "json"
        monkeypatch.setenv(logs.LOG_FORMAT_ENV, "text")
        assert logs.resolve_format(None, file) == "text"
        assert logs.resolve_format("json", file) == "json"
        monkeypatch.setenv(logs.LOG_FORMAT_ENV, "xml")
        with pytest.raises(ValueError, match="RIG_LOG_FORMAT"):
            logs.resolve_format(None, file)


def test_journald_gets_the_priority_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with (tmp_path / "journal").open("w+") as journal:
        st = os.fstat(journal.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        monkeypatch.setattr(logs.sys, "stderr", journal)
        configure_logging("rig-test", "DEBUG", log_format="json")
        logger = logging.getLogger("t")
        logger.error("broken")
        logger.info("fine")
        logger.debug("detail")
        journal.flush()
        lines = (tmp_path / "journal").read_text().splitlines()
    assert [line[:3] for line in lines] == ["<3>", "<6>", "<7>"], lines
    assert json.loads(lines[0][3:])["event"] == "broken"


def test_no_prefix_when_stderr_is_not_the_journal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")
    out = io.StringIO()
    _emit(monkeypatch, out, log_format="json")
    assert out.getvalue().startswith("{")
