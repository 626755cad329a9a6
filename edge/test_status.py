"""The edge's status report: built from /healthz, accepted by the cloud's check as built, due
every interval, and refused by that check when a field is not one an edge writes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from edge.status import StatusReporter, build_status
from shared.edge_status import MAX_STATUS_BYTES, StatusError, parse_status


def _health(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "status": "degraded",
        "uptime_s": 12.5,
        "writer": {"dropped_total": 2},
        "buffer": {"depth": 40, "dropped_total": 3},
        "inputs": {
            "plc-1": {
                "healthy": False,
                "devices": {"10.0.0.5:502": True, "10.0.0.6:502": False},
                "last_reading_age_s": 0.4,
            },
            "broker": {"healthy": True, "devices": {"mqtt": True}, "last_reading_age_s": None},
        },
        "models": {"A": "20261129T101010Z"},
        "edge_id": "rig-1",
    }
    doc.update(over)
    return doc


def test_report_from_health_passes_the_clouds_check() -> None:
    doc = build_status(_health(), {"A": "t7", "B": "catalog+pinned"}, ["B", "A"])
    checked = parse_status(orjson.dumps(doc))
    assert checked["status"] == "degraded" and checked["edge_id"] == "rig-1"
    assert checked["backlog"] == 40
    assert checked["dropped"] == 5  # buffer evictions and refused readings together
    assert checked["inputs"]["plc-1"] == {
        "healthy": False,
        "last_reading_age_s": 0.4,
        "down": ["10.0.0.6:502"],
    }
    assert checked["inputs"]["broker"]["last_reading_age_s"] is None
    assert checked["machines"] == ["A", "B"]
    assert checked["models"] == {"A": "20261129T101010Z"}
    assert checked["thresholds"] == {"A": "t7", "B": "catalog+pinned"}
    assert checked["version"]


def test_names_the_cloud_would_refuse_are_left_out_not_the_report() -> None:
    health = _health(inputs={"plc é": {"healthy": True, "devices": {}}})
    doc = build_status(health, {}, ["ok-machine", "bad machine"])
    checked = parse_status(orjson.dumps(doc))
    assert checked["inputs"] == {} and checked["machines"] == ["ok-machine"]


def test_due_once_per_interval() -> None:
    reporter = StatusReporter(3600, _health, dict, list)
    first = reporter.take()
    assert first is not None and len(first) < MAX_STATUS_BYTES
    assert reporter.take() is None  # not due again within the interval
    reporter.interval_s = 0.0
    assert reporter.take() is not None


def test_a_failing_health_costs_the_report_only() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("disk gone")

    assert StatusReporter(1, broken, dict, list).take() is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"v": 2}, "edge_status.v"),
        ({"status": "fine"}, "edge_status.status"),
        ({"backlog": -1}, "edge_status.backlog"),
        ({"dropped": True}, "edge_status.dropped"),
        ({"at": "yesterday"}, "edge_status.at"),
        ({"at": "2026-11-29T10:00:00"}, "edge_status.at"),
        ({"extra": 1}, "edge_status.extra"),
        ({"machines": ["<script>"]}, "edge_status.machines"),
        ({"models": {"A": "x" * 65}}, "edge_status.models.A"),
        ({"inputs": {"plc": {"healthy": "yes"}}}, "edge_status.inputs.plc.healthy"),
        ({"edge_id": "rig 1"}, "edge_status.edge_id"),
    ],
)
def test_the_cloud_refuses_what_an_edge_does_not_write(change: dict[str, Any], field: str) -> None:
    doc = {**build_status(_health(), {}, ["A"]), **change}
    with pytest.raises(StatusError) as caught:
        parse_status(orjson.dumps(doc))
    assert caught.value.field == field


def test_oversized_or_non_json_reports_are_refused() -> None:
    with pytest.raises(StatusError, match="bytes"):
        parse_status(b" " * (MAX_STATUS_BYTES + 1))
    with pytest.raises(StatusError, match="not JSON"):
        parse_status(b"{")
