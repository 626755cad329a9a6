"""Epoch timestamps (seconds or milliseconds, told apart by magnitude) in the one codec."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.message import (
    EPOCH_MAX_MS,
    EPOCH_SECONDS_BELOW,
    MessageError,
    TimeWindow,
    decode_reading,
    parse_reading,
)

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
BASE: dict[str, Any] = {"machine_id": "A", "edge_id": "e1", "seq": 1, "rpm": 3000.0}


def _ts(value: Any, *, key: str = "ts", window: TimeWindow | None = None) -> datetime:
    return parse_reading({**BASE, key: value}, now=NOW, window=window or TimeWindow()).ts


def test_node_red_date_now_milliseconds() -> None:
    millis = int(NOW.timestamp() * 1000) + 123
    assert _ts(millis) == NOW + timedelta(milliseconds=123)
    assert _ts(millis, key="timestamp") == NOW + timedelta(milliseconds=123)


def test_epoch_seconds_integer_and_fractional() -> None:
    assert _ts(int(NOW.timestamp())) == NOW
    assert _ts(NOW.timestamp() + 0.25) == NOW + timedelta(microseconds=250_000)


def test_fractional_milliseconds_keep_microseconds() -> None:
    assert _ts(NOW.timestamp() * 1000 + 0.5) == NOW + timedelta(microseconds=500)


def test_the_boundary_between_seconds_and_milliseconds() -> None:
    anywhere = None
    below = parse_reading({**BASE, "ts": EPOCH_SECONDS_BELOW - 1}, window=anywhere).ts
    at = parse_reading({**BASE, "ts": EPOCH_SECONDS_BELOW}, window=anywhere).ts
    assert below.year == 5138  # seconds
    assert at == datetime(1973, 3, 3, 9, 46, 40, tzinfo=UTC)  # milliseconds


def test_epoch_timestamps_stay_inside_the_time_window() -> None:
    old = int((NOW - timedelta(days=401)).timestamp() * 1000)
    with pytest.raises(MessageError, match="timestamp out of range") as err:
        _ts(old)
    assert err.value.field == "$.ts"
    ahead = int((NOW + timedelta(hours=1)).timestamp())
    with pytest.raises(MessageError, match="in the future"):
        _ts(ahead, key="timestamp")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (int(NOW.timestamp() * 1_000_000), "microseconds or nanoseconds"),
        (int(NOW.timestamp() * 1_000_000_000), "microseconds or nanoseconds"),
        (EPOCH_MAX_MS, "too large"),
        (10**400, "too large"),
        (-1, "before 1970"),
        (-(10**400), "before 1970"),
        (True, "ISO 8601 timestamp string or epoch"),
        ([1], "ISO 8601 timestamp string or epoch"),
    ],
)
def test_bad_epoch_values_name_the_field(value: Any, problem: str) -> None:
    with pytest.raises(MessageError, match=problem) as err:
        parse_reading({**BASE, "ts": value}, window=None)
    assert err.value.field == "$.ts"


def test_decoder_takes_epoch_milliseconds_and_refuses_infinity() -> None:
    millis = int(datetime.now(UTC).timestamp() * 1000)
    raw = f'{{"machine_id":"A","edge_id":"e","seq":1,"ts":{millis},"values":{{"rpm":1}}}}'
    assert decode_reading(raw).ts == datetime.fromtimestamp(millis / 1000, UTC)
    with pytest.raises(MessageError, match="finite") as err:
        parse_reading({**BASE, "ts": float("inf")}, window=None)
    assert err.value.field == "$.ts"
