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


def test_key_is_edge_and_seq_whatever_the_timestamp(database_url: str) -> None:
    """A reused (edge_id, seq) with another timestamp or other values is a conflict naming
    both versions, never a second row; the identical redelivery is a duplicate; repeats
    inside one batch are judged against what the table keeps."""
    first = Reading("A", "e1", 1, NOW, {"rpm": 1.0}, {"arm_torque": 2.0})
    later = Reading("A", "e1", 1, NOW + timedelta(seconds=5), {"rpm": 1.0}, {"arm_torque": 2.0})
    other = Reading("A", "e1", 1, NOW, {"rpm": 1.0}, {"arm_torque": 3.0})
    fresh = Reading("A", "e1", 2, NOW, {"rpm": 5.0})
    with psycopg.connect(database_url) as conn:
        with conn.transaction():
            assert store_readings(conn, [first]).inserted == 1
        with conn.transaction():
            result = store_readings(conn, [later, first, fresh, other, first])
        assert (result.received, result.inserted, result.duplicates) == (5, 1, 2)
        assert [c.index for c in result.conflicts] == [0, 3]
        timestamp, values = result.conflicts
        assert "another timestamp" in timestamp.reason
        assert timestamp.detail["stored"]["ts"] == first.to_wire()["ts"]
        assert timestamp.detail["received"]["ts"] == later.to_wire()["ts"]
        assert "custom.arm_torque stored 2.0, this message 3.0" in values.reason
        rows = conn.execute("SELECT seq, count(*) FROM sensor_readings GROUP BY seq ORDER BY seq")
        assert rows.fetchall() == [(1, 1), (2, 1)]


def test_rows_loaded_around_the_keys_are_still_kept_once(database_url: str) -> None:
    """A bulk load (COPY straight into sensor_readings) leaves rows without keys: storing the
    same reading again falls back to the guarded statement and counts it a duplicate, and
    other content under that key is a conflict."""
    reading = Reading("A", "bulk", 7, NOW, {"rpm": 1.0})
    with psycopg.connect(database_url) as conn:
        conn.execute(
            'INSERT INTO sensor_readings (edge_id, seq, machine_id, "timestamp", rpm, '
            "custom_sensors) VALUES ('bulk', 7, 'A', %s, 1.0, '{}')",
            (NOW,),
        )
        conn.commit()
        with conn.transaction():
            again = store_readings(conn, [reading, Reading("A", "bulk", 8, NOW, {"rpm": 2.0})])
        assert (again.inserted, again.duplicates, again.conflicts) == (1, 1, ())
        changed = Reading("A", "bulk", 7, NOW, {"rpm": 9.0})
        with conn.transaction():
            result = store_readings(conn, [changed])
        assert result.inserted == 0 and len(result.conflicts) == 1
        assert "values.rpm stored 1.0, this message 9.0" in result.conflicts[0].reason
        assert conn.execute("SELECT count(*) FROM sensor_readings").fetchone()[0] == 2
