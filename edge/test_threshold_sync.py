"""Threshold sync against a real HTTP server standing in for the cloud's answers: a new table
is judged by from the next reading, the copy on disk serves a restart without the cloud, pins
win, and a malformed answer is refused whole with the table in use kept."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edge.config import ModelsConfig
from edge.detection import ThresholdDetector
from edge.threshold_sync import (
    FOLDER,
    RefusedThresholdsError,
    ThresholdSync,
    parse_thresholds,
)
from shared.catalog import CORE_SENSORS, Thresholds
from shared.message import Reading

KEY = "k" * 32


class Cloud:
    """Answers ``GET /api/v1/edge/thresholds/{machine}`` with whatever the test set."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, bytes]] = {}
        self.keys: list[str | None] = []
        cloud = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                cloud.keys.append(self.headers.get("X-API-KEY"))
                status, body = cloud.answers.get(self.path, (404, b"{}"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def offer(self, machine: str, version: str, **limits: dict[str, float | None]) -> None:
        table = {
            sensor: {"warn_low": None, "warn_high": None, "source": "machine", **values}
            for sensor, values in limits.items()
        }
        doc = {"machine_id": machine, "version": version, "thresholds": table}
        self.answers[f"/api/v1/edge/thresholds/{machine}"] = (200, json.dumps(doc).encode())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def cloud() -> Iterator[Cloud]:
    server = Cloud()
    yield server
    server.close()


def _config(tmp_path: Path, url: str) -> ModelsConfig:
    (tmp_path / "api-key").write_text(KEY)
    return ModelsConfig(
        cloud_url=url,
        api_key_file=tmp_path / "api-key",
        public_key_file=tmp_path / "unused.pub",
        directory=tmp_path / "models",
        thresholds_poll_s=0.5,
        timeout_s=5.0,
    )


def _reading(machine: str = "A", **values: float) -> Reading:
    base: dict[str, float | None] = {s.name: s.typical for s in CORE_SENSORS}
    base.update(values)
    return Reading(machine, "e", 1, datetime.now(UTC), base)


def test_a_new_table_judges_the_next_reading_and_survives_a_restart_without_cloud(
    tmp_path: Path, cloud: Cloud
) -> None:
    config = _config(tmp_path, cloud.url)
    detector = ThresholdDetector()
    sync = ThresholdSync(config, ["A"], detector)
    try:
        assert detector.score(_reading(temperature=70.0))["thresholds_version"] == "catalog"
        cloud.offer("A", "v1", temperature={"critical_low": 0.0, "critical_high": 50.0})
        assert sync.poll_once() == ["A"]
        verdict = detector.score(_reading(temperature=70.0))
        assert verdict["sensors"] == ["temperature"] and verdict["thresholds_version"] == "v1"
        assert sync.poll_once() == []  # same version: nothing to do
        assert cloud.keys and set(cloud.keys) == {KEY}
    finally:
        sync.stop()
    assert (config.directory / FOLDER / "A.json").is_file()
    # Restart with the cloud gone: the saved table judges from the first reading.
    cloud.close()
    offline = ThresholdDetector()
    again = ThresholdSync(_config(tmp_path, "http://127.0.0.1:9"), ["A"], offline)
    try:
        again.load_saved()
        assert offline.score(_reading(temperature=70.0))["thresholds_version"] == "v1"
        assert again.poll_once() == []
        assert again.health()["consecutive_failures"] == 1
        assert offline.score(_reading(temperature=70.0))["sensors"] == ["temperature"]
    finally:
        again.stop()


def test_a_pin_wins_over_the_cloud_and_the_version_says_so(tmp_path: Path, cloud: Cloud) -> None:
    pins = {"A": {"temperature": Thresholds(0.0, 500.0)}}
    detector = ThresholdDetector(pins=pins)
    sync = ThresholdSync(_config(tmp_path, cloud.url), ["A"], detector)
    try:
        cloud.offer(
            "A",
            "v2",
            temperature={"critical_low": 0.0, "critical_high": 50.0},
            rpm={"critical_low": 0.0, "critical_high": 10.0},
        )
        sync.poll_once()
        verdict = detector.score(_reading(temperature=70.0, rpm=20.0))
        assert verdict["sensors"] == ["rpm"]  # temperature is pinned, rpm comes from the cloud
        assert verdict["thresholds_version"] == "v2+pinned"
        assert detector.score(_reading("B"))["thresholds_version"] == "catalog"
    finally:
        sync.stop()


def test_a_malformed_answer_is_refused_and_the_table_in_use_stays(
    tmp_path: Path, cloud: Cloud
) -> None:
    detector = ThresholdDetector()
    sync = ThresholdSync(_config(tmp_path, cloud.url), ["A"], detector)
    try:
        cloud.offer("A", "v1", temperature={"critical_low": 0.0, "critical_high": 50.0})
        sync.poll_once()
        cloud.offer("A", "v2", temperature={"critical_low": 60.0, "critical_high": 50.0})
        assert sync.poll_once() == []
        health = sync.health()
        assert "thresholds.temperature.critical_high" in health["refused"]["A"]
        assert health["consecutive_failures"] == 0  # the cloud answered; the edge said no
        assert detector.version_of("A") == "v1"
    finally:
        sync.stop()


def test_a_corrupt_copy_on_disk_is_refused_and_the_catalog_judges(tmp_path: Path) -> None:
    config = _config(tmp_path, "http://127.0.0.1:9")
    (config.directory / FOLDER).mkdir(parents=True)
    (config.directory / FOLDER / "A.json").write_text('{"machine_id": "A", "version": ')
    detector = ThresholdDetector()
    sync = ThresholdSync(config, ["A"], detector)
    try:
        sync.load_saved()
        assert "not JSON" in sync.health()["refused"]["A"]
        assert detector.version_of("A") == "catalog"
    finally:
        sync.stop()


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], "$"),
        ({"machine_id": "B", "version": "v", "thresholds": {}}, "machine_id"),
        ({"machine_id": "A", "version": "v\n", "thresholds": {}}, "version"),
        ({"machine_id": "A", "version": "", "thresholds": {}}, "version"),
        ({"machine_id": "A", "version": "v", "thresholds": []}, "thresholds"),
        ({"machine_id": "A", "version": "v", "thresholds": {"Bad Name": {}}}, "thresholds.Bad"),
        (
            {"machine_id": "A", "version": "v", "thresholds": {"rpm": {"critical_high": "9"}}},
            "thresholds.rpm.critical_high",
        ),
        (
            {"machine_id": "A", "version": "v", "thresholds": {"rpm": {"critical_high": True}}},
            "thresholds.rpm.critical_high",
        ),
        (
            {"machine_id": "A", "version": "v", "thresholds": {"rpm": {"critical_low": 1e13}}},
            "thresholds.rpm.critical_low",
        ),
        ({"machine_id": "A", "version": "v", "thresholds": {"rpm": {}}}, "thresholds.rpm"),
    ],
)
def test_answers_are_refused_naming_the_field(doc: Any, field: str) -> None:
    with pytest.raises(RefusedThresholdsError, match="^" + re.escape(field)):
        parse_thresholds(json.dumps(doc).encode(), "A")


def test_custom_sensor_entries_are_checked_but_not_judged_at_the_edge() -> None:
    body = {
        "machine_id": "A",
        "version": "v",
        "thresholds": {"my_probe": {"critical_low": 0.0, "critical_high": 1.0}},
    }
    assert parse_thresholds(json.dumps(body).encode(), "A").thresholds == {}
    with pytest.raises(RefusedThresholdsError, match=r"^\$: \d+ bytes"):
        parse_thresholds(json.dumps(body).encode() + b" " * (300 << 10), "A")


def test_a_cloud_table_with_rule_derived_warnings_that_cross_is_taken() -> None:
    # The cloud derives warnings by the catalog rule: for limits -1000..-999 they cross
    # (warn_low -900 > warn_high -1098.9). The critical band still judges; refusing the
    # table would keep the edge on the old limits.
    entry: dict[str, Any] = {"critical_low": -1000.0, "critical_high": -999.0, "source": "x"}
    entry |= {"warn_low": -900.0, "warn_high": -1098.9}
    body = {"machine_id": "A", "version": "v3", "thresholds": {"temperature": entry}}
    table = parse_thresholds(json.dumps(body).encode(), "A")
    assert table.thresholds["temperature"] == Thresholds(-1000.0, -999.0, -900.0, -1098.9)


def test_reloaded_pins_judge_the_next_reading() -> None:
    detector = ThresholdDetector()
    detector.install_table("A", {"rpm": Thresholds(0.0, 10.0)}, "v4")
    assert detector.score(_reading(rpm=20.0))["sensors"] == ["rpm"]
    detector.set_pins({"A": {"rpm": Thresholds(0.0, 100.0)}})
    verdict = detector.score(_reading(rpm=20.0))
    assert verdict["sensors"] == [] and verdict["thresholds_version"] == "v4+pinned"
    detector.set_pins({})
    assert detector.score(_reading(rpm=20.0))["thresholds_version"] == "v4"


def test_machines_seen_in_the_data_get_their_table_and_keep_it_offline(
    tmp_path: Path, cloud: Cloud
) -> None:
    detector = ThresholdDetector()
    sync = ThresholdSync(_config(tmp_path, cloud.url), [], detector)
    try:
        cloud.offer("M1", "v5", rpm={"critical_low": 0.0, "critical_high": 10.0})
        assert sync.poll_once() == []
        assert sync.observe(["M1", "M1", "not valid!"]) == ["M1"]
        assert sync.observe(["M1"]) == []
        assert sync.poll_once() == ["M1"]
        assert detector.version_of("M1") == "v5"
    finally:
        sync.stop()
    offline = ThresholdDetector()
    again = ThresholdSync(_config(tmp_path, "http://127.0.0.1:9"), [], offline)
    try:
        again.load_saved()  # the saved copy names the machine: served again after a restart
        assert offline.version_of("M1") == "v5"
    finally:
        again.stop()
