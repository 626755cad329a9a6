from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from shared.message import (
    MAX_READING_BYTES,
    MessageError,
    Reading,
    TimeWindow,
    check_reading,
    decode_reading,
    encode_reading,
    format_ts,
    parse_reading,
)

# Timestamps relative to now: the acceptance window would turn fixed dates into a time bomb.
RECENT = datetime.now(UTC).replace(microsecond=123456) - timedelta(hours=1)


def _reading(**overrides: object) -> Reading:
    fields: dict[str, Any] = {
        "machine_id": "A",
        "edge_id": "rig-1",
        "seq": 42,
        "ts": RECENT,
        "values": {"temperature": 72.5, "rpm": None},
        "custom": {"arm_torque": 3.5},
        "quality": {"rpm": "bad"},
    }
    fields.update(overrides)
    return Reading(**fields)


def test_wire_round_trip_keeps_every_field() -> None:
    original = _reading(
        detection={
            "method": "hybrid_smart",
            "is_anomaly": True,
            "score": 1.7,
            "sensors": ["temperature"],
            "contributions": [{"sensor": "temperature", "share": 0.8}],
            "warnings": [],
            "model_version": "A-3",
            "probability_ahead": 0.25,
            "forecast": {"temperature": [72.6, 72.8]},
            "thresholds": {
                "method": "thresholds",
                "is_anomaly": False,
                "score": 0.0,
                "sensors": [],
                "warnings": ["temperature"],
            },
        }
    )
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
        default_ts=RECENT,
    )
    assert reading.values == {"temperature": 70.0}
    assert reading.custom == {"arm_torque": 5.0, "hydraulic_pressure": 2500.0}
    assert (reading.edge_id, reading.seq, reading.ts) == ("ingest:x", 7, RECENT)


def test_naive_timestamp_is_taken_as_utc() -> None:
    naive = RECENT.replace(tzinfo=None, microsecond=0)
    reading = parse_reading(
        {
            "machine_id": "A",
            "edge_id": "e",
            "seq": 1,
            "timestamp": naive.isoformat(),
            "temperature": 1,
        }
    )
    assert reading.ts == naive.replace(tzinfo=UTC)


BASE = {"machine_id": "A", "edge_id": "e", "seq": 1}


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({**BASE, "ts": "x", "temperature": 1}, "$.ts"),
        ({**BASE, "machine_id": "A b", "temperature": 1}, "$.machine_id"),
        ({**BASE, "seq": -1, "temperature": 1}, "$.seq"),
        ({**BASE, "seq": True, "temperature": 1}, "$.seq"),
        ({**BASE, "temperature": "hot"}, "$.temperature"),
        ({**BASE, "temperature": True}, "$.temperature"),
        ({**BASE, "temperature": float("nan")}, "$.temperature"),
        ({**BASE, "temperature": 1e300}, "$.temperature"),
        ({**BASE, "temperature": 10**400}, "$.temperature"),
        ({**BASE, "values": {"temperature": 10**30}}, "$.values.temperature"),
        ({**BASE, "Bad-Name": 1}, "$.Bad-Name"),
        ({**BASE, "bad\u0000name": 1}, "$.bad\u0000name"),
        ({**BASE, "values": {"nope": 1}}, "$.values.nope"),
        (BASE, "$"),
        ({**BASE, "custom_sensors": {"temperature": 1}}, "$.custom_sensors.temperature"),
    ],
)
def test_bad_readings_name_the_field(doc: dict[str, object], field: str) -> None:
    with pytest.raises(MessageError) as info:
        parse_reading({"ts": format_ts(RECENT), **doc})
    assert info.value.field == field


_D = {"method": "x", "score": 1}
_RUL = {"rul_hours": 5.0, "low_hours": 2.0, "high_hours": 9.0}


def test_a_rul_estimate_travels_in_the_detection() -> None:
    rul = {
        **_RUL,
        "max_hours": 240.0,
        "capped": False,
        "rows": 30,
        "model_version": "20261129T140000Z",
        "critical_sensors": [{"sensor": "vibration", "share": 0.7}],
    }
    doc = {**BASE, "ts": format_ts(RECENT), "rpm": 1, "detection": {**_D, "rul": rul}}
    reading = decode_reading(orjson.dumps(doc))
    assert reading.detection is not None and reading.detection["rul"] == rul


# The hostile payloads of the fault review: each once broke the consumer with an exception
# other than MessageError (so it was never dead-lettered) or failed later in PostgreSQL.
HOSTILE: list[tuple[dict[str, Any], str]] = [
    ({"rpm": 1, "detection": {"method": "x", "is_anomaly": True, "score": "x"}}, "score"),
    ({"rpm": 1, "detection": {"is_anomaly": True, "score": 1}}, "method"),
    ({"rpm": 1, "detection": {"method": "x", "score": 1, "sensors": [1]}}, "sensors[0]"),
    ({"rpm": 1, "detection": {"method": "x", "score": 1, "sensors": ["nope"]}}, "sensors[0]"),
    ({"rpm": 1, "detection": {"method": "x", "score": 1, "x": "\u0000"}}, "detection.x"),
    ({"rpm": 1, "detection": {"method": "x\u0000", "score": 1}}, "method"),
    ({"rpm": 1, "detection": {"method": "x", "score": float("inf")}}, "score"),
    ({"rpm": 1, "detection": {"method": "x", "score": 1, "is_anomaly": "yes"}}, "is_anomaly"),
    ({"rpm": 1, "detection": "anomaly"}, "detection"),
    ({"rpm": 1, "detection": {"method": "x", "score": 1, "probability_ahead": 7}}, "ahead"),
    (
        {"rpm": 1, "detection": {"method": "x", "score": 1, "contributions": [{"sensor": 1}]}},
        "contributions[0]",
    ),
    (
        {"rpm": 1, "detection": {"method": "x", "score": 1, "sensors": ["rpm"] * 65}},
        "sensors",
    ),
    ({"rpm": 1, "detection": {**_D, "rul": 12}}, "detection.rul"),
    ({"rpm": 1, "detection": {**_D, "rul": {"low_hours": 1, "high_hours": 2}}}, "rul_hours"),
    ({"rpm": 1, "detection": {**_D, "rul": {**_RUL, "rul_hours": "5"}}}, "rul.rul_hours"),
    ({"rpm": 1, "detection": {**_D, "rul": {**_RUL, "rul_hours": True}}}, "rul.rul_hours"),
    ({"rpm": 1, "detection": {**_D, "rul": {**_RUL, "low_hours": 7}}}, "detection.rul"),
    ({"rpm": 1, "detection": {**_D, "rul": {**_RUL, "high_hours": 1e300}}}, "high_hours"),
    ({"rpm": 1, "detection": {**_D, "rul": {**_RUL, "low_hours": -1}}}, "low_hours"),
    ({"rpm": 1, "detection": {**_D, "rul": {**_RUL, "rows": 1.5}}}, "rul.rows"),
    ({"rpm": 1, "detection": {**_D, "rul": {**_RUL, "capped": "no"}}}, "rul.capped"),
    ({"rpm": 1, "detection": {**_D, "rul": {**_RUL, "model_version": "x\u0000"}}}, "version"),
    ({"rpm": 1, "detection": {**_D, "rul": {**_RUL, "\u0000": 1}}}, "detection.rul"),
    (
        {"rpm": 1, "detection": {**_D, "rul": {**_RUL, "critical_sensors": [{"sensor": 1}]}}},
        "critical_sensors[0]",
    ),
    (
        {
            "rpm": 1,
            "detection": {
                **_D,
                "rul": {**_RUL, "critical_sensors": [{"sensor": "Bad Name", "share": 0.5}]},
            },
        },
        "critical_sensors[0].sensor",
    ),
    ({"rpm": 1, "quality": {"rpm": []}}, "quality.rpm"),
    ({"rpm": 1, "quality": {"rpm": {"a": 1}}}, "quality.rpm"),
    ({"rpm": 1, "quality": []}, "quality"),
    ({"rpm": 1, "ts": "0001-01-01T00:00:00+01:00"}, "ts"),
    ({"rpm": 1, "ts": "9999-12-31T00:00:00Z"}, "ts"),
    ({"rpm": 1, "ts": "1970-01-01T00:00:00Z"}, "ts"),
    ({"rpm": 1, "ts": 1700000000}, "ts"),
    ({"rpm": 1, "custom_sensors": {f"s{i}": 1 for i in range(300)}}, "custom_sensors"),
    ({"rpm": 1, "custom_sensors": []}, "custom_sensors"),
    ({"rpm": 1, "v": [1]}, "v"),
    ({"rpm": 1, "machine_id": ["A"]}, "machine_id"),
    ({"rpm": 1, "machine_id": "A\u0000"}, "machine_id"),
    ({"rpm": 1, "edge_id": "e" * 65}, "edge_id"),
    ({"rpm": 1, "seq": 2**63}, "seq"),
    ({"rpm": 1, "seq": 1.5}, "seq"),
]


@pytest.mark.parametrize(("extra", "where"), HOSTILE)
def test_hostile_payloads_raise_message_error_naming_the_field(
    extra: dict[str, Any], where: str
) -> None:
    doc = {**BASE, "ts": format_ts(RECENT), **extra}
    raw = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY) if "inf" not in str(extra) else None
    with pytest.raises(MessageError) as info:
        parse_reading(doc)
    assert where in info.value.field, info.value
    if raw is not None:
        with pytest.raises(MessageError):
            decode_reading(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"[]",
        b"null",
        b'"text"',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"machine_id": "A", "seq": 1' + b"9" * 5000 + b"}",
        b"\xff\xfe",
        b"",
        b'{"a": 1}' + b" " * MAX_READING_BYTES,
    ],
)
def test_any_bytes_decode_or_raise_message_error(raw: bytes) -> None:
    with pytest.raises(MessageError):
        decode_reading(raw)


def test_time_window_is_relative_to_the_receivers_clock() -> None:
    window = TimeWindow(max_age=timedelta(days=1), max_ahead=timedelta(minutes=5))
    now = datetime.now(UTC)
    for ts, ok in [
        (now, True),
        (now - timedelta(hours=23), True),
        (now - timedelta(days=2), False),
        (now + timedelta(minutes=4), True),
        (now + timedelta(minutes=6), False),
    ]:
        doc = {**BASE, "ts": format_ts(ts), "rpm": 1}
        if ok:
            assert parse_reading(doc, window=window, now=now).ts == ts
        else:
            with pytest.raises(MessageError, match="timestamp out of range"):
                parse_reading(doc, window=window, now=now)
    # A backfill of a year is inside the default window; no window accepts anything.
    old = {**BASE, "ts": format_ts(now - timedelta(days=365)), "rpm": 1}
    assert parse_reading(old).machine_id == "A"
    ancient = {**BASE, "ts": "1999-01-01T00:00:00Z", "rpm": 1}
    assert parse_reading(ancient, window=None).ts.year == 1999


def test_check_reading_applies_the_same_rules_to_readings_built_in_process() -> None:
    assert decode_reading(check_reading(_reading())) == _reading()
    future = _reading(ts=datetime.now(UTC) + timedelta(days=365 * 100))
    with pytest.raises(MessageError, match="timestamp out of range"):
        check_reading(future)
    too_big = _reading(custom={f"s{i}": float(i) for i in range(257)})
    with pytest.raises(MessageError, match="custom sensors"):
        check_reading(too_big)
    unencodable = _reading(ts=datetime(1, 1, 1, tzinfo=UTC))
    with pytest.raises(MessageError):
        check_reading(unencodable)


@pytest.mark.parametrize("field", ["machine_id", "edge_id"])
def test_ids_with_a_trailing_newline_are_refused(field: str) -> None:
    # re's "$" also matches before a final newline: "A\n" must not become a machine.
    doc = {**BASE, "ts": format_ts(RECENT), "rpm": 1, field: "A\n"}
    with pytest.raises(MessageError) as info:
        parse_reading(doc)
    assert info.value.field == f"$.{field}"
    with pytest.raises(MessageError):
        parse_reading({**BASE, "ts": format_ts(RECENT), "rpm\n": 1})
