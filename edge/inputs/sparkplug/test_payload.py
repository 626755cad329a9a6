"""The Sparkplug B wire decoder against payloads a third-party implementation encoded, every
truncation of them, random bytes, and the rebirth command it encodes."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.inputs.sparkplug.payload import (
    REBIRTH_METRIC,
    DataType,
    SparkplugDecodeError,
    _encode_varint,
    _key,
    _len_field,
    decode_payload,
    rebirth_request,
)

TS = 1764400000123
# Encoded by pysparkplug 0.6.1 (PyPI; protobuf code generated from the official
# sparkplug_b.proto): DData(TS, seq=255, metrics=(...,)).encode(include_dtypes=True).hex(),
# NBirth(TS, seq=0, ...), NDeath(TS, bd_seq_metric=...). Regenerate with the peer venv
# (tests/peers/sparkplug.py) if the peer is upgraded.
PYSPARKPLUG = {
    "int8_neg": "08fbd8bdf3ac3312120a026938100118fbd8bdf3ac33200150fb0118ff01",
    "int16_neg": "08fbd8bdf3ac3312140a03693136100218fbd8bdf3ac33200250d4fd0318ff01",
    "int32_neg": "08fbd8bdf3ac3312160a03693332100318fbd8bdf3ac3320035090ddfbff0f18ff01",
    "int64_neg": "08fbd8bdf3ac33121b0a03693634100418fbd8bdf3ac332004588080808080e0ffffff0118ff01",
    "uint8": "08fbd8bdf3ac3312100a02753818fbd8bdf3ac33200550fa0118ff01",
    "uint32": "08fbd8bdf3ac3312140a0375333218fbd8bdf3ac3320075080d0acf30e18ff01",
    "uint64": "08fbd8bdf3ac3312190a0375363418fbd8bdf3ac332008588580808080808080800118ff01",
    "float": "08fbd8bdf3ac3312110a016618fbd8bdf3ac332009650000c03f18ff01",
    "double": "08fbd8bdf3ac3312150a016418fbd8bdf3ac33200a690000000000d051c018ff01",
    "bool": "08fbd8bdf3ac33120e0a016218fbd8bdf3ac33200b700118ff01",
    "string": "08fbd8bdf3ac3312160a017318fbd8bdf3ac33200c7a0837322e3520c2b04618ff01",
    "alias_only": "08fbd8bdf3ac331214100718fbd8bdf3ac33200a690000000000000a4018ff01",
    "null": "08fbd8bdf3ac33120e0a016e18fbd8bdf3ac33200a380118ff01",
    "historical": "08fbd8bdf3ac3312170a016818f3b1bdf3ac33200a280169000000000000224018ff01",
    "nbirth": (
        "08fbd8bdf3ac3312120a05626453657118fbd8bdf3ac332004580312290a1353656e736f72732f54656d"
        "7065726174757265100118fbd8bdf3ac33200a6900000000008051401800"
    ),
    "ndeath": "08fbd8bdf3ac3312120a05626453657118fbd8bdf3ac3320045803",
}

EXPECTED = {
    "int8_neg": ("i8", 1, DataType.INT8, -5),
    "int16_neg": ("i16", 2, DataType.INT16, -300),
    "int32_neg": ("i32", 3, DataType.INT32, -70000),
    "int64_neg": ("i64", 4, DataType.INT64, -(2**40)),
    "uint8": ("u8", None, DataType.UINT8, 250),
    "uint32": ("u32", None, DataType.UINT32, 4_000_000_000),
    "uint64": ("u64", None, DataType.UINT64, 2**63 + 5),
    "float": ("f", None, DataType.FLOAT, 1.5),
    "double": ("d", None, DataType.DOUBLE, -71.25),
    "bool": ("b", None, DataType.BOOLEAN, True),
    "string": ("s", None, DataType.STRING, "72.5 °F"),
    "alias_only": (None, 7, DataType.DOUBLE, 3.25),
    "null": ("n", None, DataType.DOUBLE, None),
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_every_datatype_a_third_party_encoded(case: str) -> None:
    payload = decode_payload(bytes.fromhex(PYSPARKPLUG[case]))
    assert (payload.timestamp, payload.seq) == (TS, 255)
    [metric] = payload.metrics
    name, alias, datatype, value = EXPECTED[case]
    assert (metric.name, metric.alias, metric.datatype) == (name, alias, datatype)
    assert metric.timestamp == TS
    assert metric.value() == value
    assert type(metric.value()) is type(value)


def test_flags_births_and_deaths() -> None:
    null = decode_payload(bytes.fromhex(PYSPARKPLUG["null"])).metrics[0]
    assert null.is_null and null.value() is None
    hist = decode_payload(bytes.fromhex(PYSPARKPLUG["historical"])).metrics[0]
    assert hist.is_historical and hist.timestamp == TS - 5000 and hist.value() == 9.0
    birth = decode_payload(bytes.fromhex(PYSPARKPLUG["nbirth"]))
    assert birth.seq == 0
    assert [(m.name, m.alias, m.value()) for m in birth.metrics] == [
        ("bdSeq", None, 3),
        ("Sensors/Temperature", 1, 70.0),
    ]
    death = decode_payload(bytes.fromhex(PYSPARKPLUG["ndeath"]))
    assert death.seq is None and [(m.name, m.value()) for m in death.metrics] == [("bdSeq", 3)]


def _metric(*fields: bytes) -> bytes:
    return _len_field(2, b"".join(fields))


@pytest.mark.parametrize(
    ("datatype", "wire_value", "expected"),
    [
        # Tahu's Java encoder sign-extends Int8/Int16 to 32 bits; others mask to the width.
        (DataType.INT8, 0xFFFFFFFB, -5),
        (DataType.INT8, 0xFB, -5),
        (DataType.INT16, 0xFFFFFED4, -300),
        (DataType.INT8, 127, 127),
        (DataType.INT32, 0x7FFFFFFF, 2**31 - 1),
        (DataType.INT32, 0x80000000, -(2**31)),
        # protobuf writes a negative int32 as a 10-byte varint (64-bit sign extension).
        (DataType.INT32, 0xFFFFFFFFFFFFFFFF, -1),
        (DataType.UINT16, 65535, 65535),
        (DataType.BOOLEAN, 1, True),
    ],
)
def test_signed_integers_whatever_the_encoder_did(
    datatype: DataType, wire_value: int, expected: int
) -> None:
    raw = _metric(_key(4, 0) + _encode_varint(datatype), _key(10, 0) + _encode_varint(wire_value))
    assert decode_payload(raw).metrics[0].value() == expected


def test_unknown_fields_metadata_and_properties_are_skipped() -> None:
    metric = (
        _len_field(1, b"x")
        + _len_field(8, b"\x08\x01")  # metadata
        + _len_field(9, b"\x0a\x01a")  # properties
        + _key(99, 5)
        + b"\0\0\0\0"  # a fixed32 field of a later spec
        + _key(4, 0)
        + _encode_varint(DataType.DOUBLE)
        + _key(13, 1)
        + struct.pack("<d", 2.5)
    )
    payload = decode_payload(_len_field(2, metric) + _key(77, 1) + b"\0" * 8 + _len_field(5, b"z"))
    assert payload.metrics[0].value() == 2.5
    assert payload.body == b"z"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x08", "truncated varint"),
        (b"\x12\x05ab", "runs past the end"),
        (b"\x0b", "wire type 3"),
        (b"\x08" + b"\xff" * 11, "varint"),
        (b"\x12\x02\x0a\xff", "metric 0 field 1: truncated varint"),
        (_metric(_len_field(1, b"\xff\xfe")), "not UTF-8"),
        (_metric(_key(13, 0) + b"\x01"), "wire type 0, expected 1"),
        (b"\x0a\x00", "wire type 2, expected 0"),
        (b"\x00", "field number 0"),
    ],
)
def test_malformed_payloads_name_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(SparkplugDecodeError, match=message):
        decode_payload(data)


def test_json_is_not_a_payload() -> None:
    with pytest.raises(SparkplugDecodeError):
        decode_payload(b'{"temperature": 71.2}')


@pytest.mark.parametrize("case", sorted(PYSPARKPLUG))
def test_every_truncation_decodes_or_raises_the_decode_error(case: str) -> None:
    data = bytes.fromhex(PYSPARKPLUG[case])
    for end in range(len(data)):
        with contextlib.suppress(SparkplugDecodeError):
            decode_payload(data[:end])


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_else(data: bytes) -> None:
    try:
        payload = decode_payload(data)
    except SparkplugDecodeError:
        return
    for metric in payload.metrics:
        metric.value()


def test_rebirth_request_is_the_node_control_metric() -> None:
    payload = decode_payload(rebirth_request(TS))
    assert payload.timestamp == TS and payload.seq is None
    [metric] = payload.metrics
    assert (metric.name, metric.datatype, metric.value()) == (
        REBIRTH_METRIC,
        DataType.BOOLEAN,
        True,
    )
