from datetime import UTC, datetime

import pytest

from shared.message import MessageError, Reading, decode_reading, encode_reading, parse_reading


def _reading(**overrides: object) -> Reading:
    fields: dict[str, object] = {
        "machine_id": "A",
        "edge_id": "rig-1",
        "seq": 42,
        "ts": datetime(2026, 1, 7, 12, 34, 56, 123456, tzinfo=UTC),
        "values": {"temperature": 72.5, "rpm": None},
        "custom": {"arm_torque": 3.5},
        "quality": {"rpm": "bad"},
    }
    fields.update(overrides)
    return Reading(**fields)  # type: ignore[arg-type]


def test_wire_round_trip_keeps_every_field() -> None:
    original = _reading(detection={"is_anomaly": False, "score": 0.0})
    decoded = decode_reading(encode_reading(original))
    assert decoded == original


def test_integrator_shape_moves_unknown_fields_to_custom() -> None:
    reading = parse_reading(
        {
            "machine_id": "B",
            "temperature": 70,
            "arm_torque": 5,
            "custom_sensors": {"hydraulic_pressure": 2500},
        },
        default_edge_id="ingest:x",
        default_seq=7,
        now=datetime.now(UTC),
    )
    assert reading.values == {"temperature": 70.0}
    assert reading.custom == {"arm_torque": 5.0, "hydraulic_pressure": 2500.0}
    assert (reading.edge_id, reading.seq) == ("ingest:x", 7)


def test_naive_timestamp_is_taken_as_utc() -> None:
    reading = parse_reading(
        {
            "machine_id": "A",
            "edge_id": "e",
            "seq": 1,
            "timestamp": "2026-01-07T12:34:56",
            "temperature": 1,
        }
    )
    assert reading.ts == datetime(2026, 1, 7, 12, 34, 56, tzinfo=UTC)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"machine_id": "A", "edge_id": "e", "seq": 1, "ts": "x", "temperature": 1}, "$.ts"),
        ({"machine_id": "A b", "edge_id": "e", "seq": 1, "temperature": 1}, "$.machine_id"),
        ({"machine_id": "A", "edge_id": "e", "seq": -1, "temperature": 1}, "$.seq"),
        ({"machine_id": "A", "edge_id": "e", "seq": True, "temperature": 1}, "$.seq"),
        ({"machine_id": "A", "edge_id": "e", "seq": 1, "temperature": "hot"}, "$.temperature"),
        ({"machine_id": "A", "edge_id": "e", "seq": 1, "temperature": True}, "$.temperature"),
        (
            {"machine_id": "A", "edge_id": "e", "seq": 1, "temperature": float("nan")},
            "$.temperature",
        ),
        ({"machine_id": "A", "edge_id": "e", "seq": 1, "temperature": 1e300}, "$.temperature"),
        ({"machine_id": "A", "edge_id": "e", "seq": 1, "Bad-Name": 1}, "$.Bad-Name"),
        ({"machine_id": "A", "edge_id": "e", "seq": 1, "values": {"nope": 1}}, "$.values.nope"),
        ({"machine_id": "A", "edge_id": "e", "seq": 1}, "$"),
        (
            {"machine_id": "A", "edge_id": "e", "seq": 1, "custom_sensors": {"temperature": 1}},
            "$.custom_sensors.temperature",
        ),
    ],
)
def test_bad_readings_name_the_field(doc: dict[str, object], field: str) -> None:
    with pytest.raises(MessageError) as info:
        parse_reading({"ts": "2026-01-01T00:00:00Z", **doc})
    assert info.value.field == field


def test_non_json_is_refused_with_position() -> None:
    with pytest.raises(MessageError, match="not valid JSON"):
        decode_reading(b"{not json")
