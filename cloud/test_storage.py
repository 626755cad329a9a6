"""What storing readings fills besides the rows: the custom-sensor registry and anomaly
detections, each counted once however often a reading is delivered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from cloud.storage import store_readings
from shared.message import Reading

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)


def test_custom_sensors_registered_and_anomalies_kept_once(database_url: str) -> None:
    readings = [
        Reading("A", "e1", 1, NOW, {"rpm": 3000.0}, {"arm_torque": 2.0}),
        Reading(
            "B",
            "e1",
            2,
            NOW + timedelta(seconds=1),
            {"vibration": 9.5},
            {"arm_torque": 6.0, "hydraulic_pressure": 2500.0},
            detection={
                "method": "thresholds",
                "is_anomaly": True,
                "score": 0.36,
                "sensors": ["vibration"],
                "warnings": [],
            },
        ),
        Reading(
            "B",
            "e1",
            3,
            NOW + timedelta(seconds=2),
            {"vibration": 2.0},
            detection={
                "method": "thresholds",
                "is_anomaly": False,
                "score": 0.0,
                "sensors": [],
                "warnings": [],
            },
        ),
    ]
    with psycopg.connect(database_url) as conn:
        for _ in range(2):  # delivered twice
            with conn.transaction():
                store_readings(conn, readings)
        registry = conn.execute(
            "SELECT name, first_machine, samples, min_value, max_value, sum_value "
            "FROM custom_sensors ORDER BY name"
        ).fetchall()
        anomalies = conn.execute(
            "SELECT machine_id, seq, detection_method, anomaly_score, detected_sensors "
            "FROM anomaly_detections"
        ).fetchall()
    assert registry == [
        ("arm_torque", "A", 2, 2.0, 6.0, 8.0),
        ("hydraulic_pressure", "B", 1, 2500.0, 2500.0, 2500.0),
    ]
    assert anomalies == [("B", 2, "thresholds", 0.36, ["vibration"])]
