"""One definition of validity, checked against the database: whatever ``parse_reading``
accepts, ``store_readings`` stores into a real PostgreSQL without raising, and reads back
equal. Generated documents cover both wire shapes, every field the codec knows, edge values
(-0.0, subnormals, ±1e12, the longest names) and stray JSON in any field."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cloud.storage import store_readings, stored_reading
from shared.catalog import CORE_SENSOR_NAMES, SENSOR_INDEX
from shared.message import (
    CUSTOM_NAME_RE,
    DETECTION_METHOD_RE,
    EDGE_ID_RE,
    MACHINE_ID_RE,
    MAX_SEQ,
    MODEL_VERSION_RE,
    MessageError,
    Reading,
    decode_reading,
    encode_reading,
    parse_reading,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NOW = datetime.now(UTC)

numbers = st.one_of(
    st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 1e12, -1e12, 1e-300, 0.1, 2.0**53 + 1]),
)
shares = st.floats(min_value=0.0, max_value=1.0)
custom_names = st.from_regex(CUSTOM_NAME_RE, fullmatch=True).filter(
    lambda name: name not in SENSOR_INDEX
)
any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
zones = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
)


@st.composite
def detections(draw: st.DrawFn, sensors: list[str], nested: bool = False) -> dict[str, Any]:
    names = st.sampled_from(sensors)
    detection: dict[str, Any] = {
        "method": draw(st.from_regex(DETECTION_METHOD_RE, fullmatch=True)),
        "score": draw(numbers),
    }
    if draw(st.booleans()):
        detection["is_anomaly"] = draw(st.booleans())
    for key in ("sensors", "warnings"):
        if draw(st.booleans()):
            detection[key] = draw(st.lists(names, max_size=8))
    if nested:
        return detection
    if draw(st.booleans()):
        detection["missing_sensors"] = draw(
            st.lists(st.sampled_from(CORE_SENSOR_NAMES), max_size=4)
        )
    if draw(st.booleans()):
        detection["contributions"] = draw(
            st.lists(st.fixed_dictionaries({"sensor": names, "share": shares}), max_size=4)
        )
    if draw(st.booleans()):
        detection["model_version"] = draw(st.from_regex(MODEL_VERSION_RE, fullmatch=True))
    if draw(st.booleans()):
        detection["probability_ahead"] = draw(shares)
    if draw(st.booleans()):
        detection["warming_up"] = draw(st.booleans())
    if draw(st.booleans()):
        detection["forecast"] = draw(
            st.dictionaries(names, st.lists(numbers, max_size=5), max_size=3)
        )
    if draw(st.booleans()):
        detection["thresholds"] = draw(detections(sensors, nested=True))
    return detection


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    values = draw(
        st.dictionaries(
            st.sampled_from(CORE_SENSOR_NAMES), st.none() | numbers, max_size=len(CORE_SENSOR_NAMES)
        )
    )
    custom = draw(st.dictionaries(custom_names, numbers, max_size=6))
    if not values and not custom:
        values = {"rpm": 1.0}
    sensors = [*values, *custom]
    ts = draw(
        st.datetimes(
            min_value=(NOW - timedelta(days=399)).replace(tzinfo=None),
            max_value=(NOW + timedelta(minutes=5)).replace(tzinfo=None),
            timezones=zones,
        )
    )
    doc: dict[str, Any] = {
        "machine_id": draw(st.from_regex(MACHINE_ID_RE, fullmatch=True)),
        "edge_id": draw(st.from_regex(EDGE_ID_RE, fullmatch=True)),
        "seq": draw(st.integers(min_value=0, max_value=MAX_SEQ)),
        draw(st.sampled_from(["ts", "timestamp"])): ts.isoformat(),
    }
    if draw(st.booleans()):
        doc["values"] = values
        if custom or draw(st.booleans()):
            doc["custom"] = custom
    else:
        doc.update(values)
        if custom or draw(st.booleans()):
            doc["custom_sensors"] = custom
    quality = draw(
        st.dictionaries(st.sampled_from(sensors), st.sampled_from(["good", "bad", "uncertain"]))
    )
    if quality:
        doc["quality"] = quality
    if draw(st.booleans()):
        doc["detection"] = draw(detections(sensors))
    if draw(st.integers(0, 9)) == 0:
        # Stray JSON in one field: mostly refused, and refused only with MessageError.
        doc[draw(st.sampled_from(sorted(doc)))] = draw(any_json)
    return doc


def _parse(doc: dict[str, Any]) -> Reading | None:
    try:
        return parse_reading(doc)
    except MessageError:
        return None


_examples = itertools.count(1)


def _comparable(reading: Reading) -> tuple[object, ...]:
    return (
        reading.machine_id,
        reading.edge_id,
        reading.seq,
        reading.ts,
        {k: v for k, v in reading.values.items() if v is not None},
        reading.custom,
        reading.quality,
        reading.detection,
    )


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(documents(), min_size=1, max_size=4))
def test_whatever_the_codec_accepts_is_stored_and_reads_back_equal(
    database_url: str, batch: list[dict[str, Any]]
) -> None:
    example = next(_examples)
    readings: list[Reading] = []
    for i, doc in enumerate(batch):
        if isinstance(doc.get("edge_id"), str):
            # One database for every example: keys unique per example, still valid ids.
            doc["edge_id"] = f"{example}x{i}{doc['edge_id']}"[:64]
        reading = _parse(doc)
        if reading is None:
            continue
        # The wire form of an accepted reading is accepted again, unchanged.
        again = decode_reading(encode_reading(reading))
        assert _comparable(again) == _comparable(reading)
        readings.append(reading)
    assume(readings)
    with psycopg.connect(database_url) as conn:
        with conn.transaction():
            result = store_readings(conn, readings)
        assert (result.inserted, result.duplicates, result.conflicts) == (len(readings), 0, ())
        for reading in readings:
            stored = stored_reading(conn, reading.edge_id, reading.seq)
            assert stored is not None
            assert _comparable(stored) == _comparable(reading)
        with conn.transaction():
            again = store_readings(conn, readings)
        assert (again.inserted, again.duplicates) == (0, len(readings))
