"""``detection.thresholds_version`` (top level and in the nested threshold verdict): a short
token of the wire's id characters, anything else refused naming the field (MessageError only)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from shared.message import MessageError, decode_reading, format_ts


def _raw(detection: dict[str, Any]) -> bytes:
    doc = {
        "machine_id": "A",
        "edge_id": "rig-1",
        "seq": 1,
        "ts": format_ts(datetime.now(UTC)),
        "values": {"temperature": 70.0},
        "detection": detection,
    }
    return orjson.dumps(doc)


BASE = {"method": "thresholds", "is_anomaly": True, "score": 0.5, "sensors": ["temperature"]}


@pytest.mark.parametrize("version", ["catalog", "99a12841d0f49a3b", "99a12841d0f49a3b+pinned"])
def test_a_thresholds_version_travels(version: str) -> None:
    reading = decode_reading(_raw({**BASE, "thresholds_version": version}))
    assert reading.detection is not None and reading.detection["thresholds_version"] == version
    nested = {
        "method": "hybrid",
        "score": 0.1,
        "thresholds": {**BASE, "thresholds_version": version},
    }
    assert decode_reading(_raw(nested)).detection == nested


@pytest.mark.parametrize(
    ("detection", "field"),
    [
        ({**BASE, "thresholds_version": 1}, "$.detection.thresholds_version"),
        ({**BASE, "thresholds_version": ""}, "$.detection.thresholds_version"),
        ({**BASE, "thresholds_version": "v\n"}, "$.detection.thresholds_version"),
        ({**BASE, "thresholds_version": "-v"}, "$.detection.thresholds_version"),
        ({**BASE, "thresholds_version": "v" * 65}, "$.detection.thresholds_version"),
        ({**BASE, "thresholds_version": None, "x": 1}, "$.detection.x"),
        (
            {"method": "hybrid", "score": 0.1, "thresholds": {**BASE, "thresholds_version": []}},
            "$.detection.thresholds.thresholds_version",
        ),
    ],
)
def test_a_bad_thresholds_version_is_refused_naming_the_field(
    detection: dict[str, Any], field: str
) -> None:
    with pytest.raises(MessageError) as info:
        decode_reading(_raw(detection))
    assert info.value.field == field
