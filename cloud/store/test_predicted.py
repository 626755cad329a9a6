"""Predicted anomalies on PostgreSQL: raised by the newest platform verdict over the bound
(once per machine, not once per reading), confirmed by an actual anomaly within the horizon,
expired without one; a client's claimed probability raises nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from cloud.storage import store_readings
from cloud.store.predicted import list_predicted, track
from shared.message import Reading

pytestmark = pytest.mark.integration


def _reading(machine: str, seq: int, at: datetime, **detection: Any) -> Reading:
    return Reading(
        machine,
        "rig-p",
        seq,
        at,
        {"vibration": 2.0},
        detection={
            "method": "lstm",
            "is_anomaly": False,
            "score": 0.3,
            "sensors": [],
            "warnings": [],
            "model_version": "m-1",
            **detection,
        },
    )


def _pass(url: str, readings: list[Reading]) -> dict[str, str]:
    with psycopg.connect(url) as conn, conn.transaction():
        if readings:
            store_readings(conn, readings)
        track(conn, 0.8, window_s=300, horizon_s=30)
        return {p.machine_id: p.state for p in list_predicted(conn, None)}


def test_predicted_then_confirmed_or_expired(database_url: str) -> None:
    now = datetime.now(UTC)
    states = _pass(
        database_url,
        [
            _reading("P1", 1, now - timedelta(seconds=2), probability_ahead=0.95),
            _reading("P2", 2, now - timedelta(seconds=2), probability_ahead=0.4),
            # The horizon of this one has passed already when it is judged: it expires.
            _reading("P3", 3, now - timedelta(seconds=120), probability_ahead=0.9),
        ],
    )
    assert states == {"P1": "predicted", "P3": "predicted"}
    # Still over the bound: the same prediction, not a second one.
    states = _pass(database_url, [_reading("P1", 4, now, probability_ahead=0.97)])
    assert states == {"P1": "predicted", "P3": "expired"}
    anomaly = _reading("P1", 5, now + timedelta(seconds=1), probability_ahead=0.5)
    assert anomaly.detection is not None
    anomaly.detection.update(is_anomaly=True, score=2.5, sensors=["vibration"])
    assert _pass(database_url, [anomaly]) == {"P1": "confirmed", "P3": "expired"}
    with psycopg.connect(database_url) as conn:
        (p1,) = list_predicted(conn, ["P1"])
        assert p1.confirmed_by is not None and p1.model_version == "m-1"
        assert p1.probability == 0.95 and p1.settled_at is not None
        assert list_predicted(conn, ["P9"]) == []
