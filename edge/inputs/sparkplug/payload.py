"""Sparkplug B payloads: a small protobuf wire decoder (and the one encoder the host needs,
for NCMD ``Node Control/Rebirth``), written against the official ``sparkplug_b.proto``
(Eclipse Tahu, ``sparkplug_b/sparkplug_b.proto``, package ``org.eclipse.tahu.protobuf``).

Why not the ``protobuf`` runtime with generated code: the edge reads a handful of scalar
fields of two messages, and the generated module would pin the edge to one protobuf
major version the rest of the stack (onnx, TensorFlow) also pins. The subset decoded here:

``Payload``: 1 timestamp (uint64), 2 metrics (repeated Metric), 3 seq (uint64), 4 uuid
(string), 5 body (bytes); ``Metric``: 1 name (string), 2 alias (uint64), 3 timestamp
(uint64), 4 datatype (uint32), 5 is_historical, 6 is_transient, 7 is_null (bool),
10 int_value (uint32), 11 long_value (uint64), 12 float_value (float), 13 double_value
(double), 14 boolean_value (bool), 15 string_value (string), 16 bytes_value (bytes).
Everything else (metadata, properties, datasets, templates, extensions, unknown fields of a
later spec) is skipped by its wire type, as protobuf requires. A payload that is not valid
protobuf raises ``SparkplugDecodeError`` naming what and where; the decoder never raises
anything else, whatever the bytes (tested with every truncation and random bytes).

Signed datatypes (Int8/16/32 in ``int_value``, Int64 in ``long_value``) travel as the two's
complement of their width; some encoders sign-extend to 32 or 64 bits first (Tahu's Java
does for Int8/Int16). Masking to the datatype's width and then sign-converting reads both.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class SparkplugDecodeError(ValueError):
    """Bytes that are not a Sparkplug B payload."""


class DataType(IntEnum):
    """``DataType`` of sparkplug_b.proto (the values that matter here; others are kept as
    plain ints and read as not numeric)."""

    UNKNOWN = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14


# Signed integer datatypes and their width in bits.
_SIGNED_BITS = {DataType.INT8: 8, DataType.INT16: 16, DataType.INT32: 32, DataType.INT64: 64}
_UNSIGNED_BITS = {DataType.UINT8: 8, DataType.UINT16: 16, DataType.UINT32: 32, DataType.UINT64: 64}

# Metric value fields by number (the ``oneof value`` of Metric).
_VALUE_FIELDS = frozenset({10, 11, 12, 13, 14, 15, 16, 17, 18, 19})
MAX_METRICS = 10_000  # more is not a device talking; refuse before building the list


@dataclass(slots=True)
class Metric:
    name: str | None = None
    alias: int | None = None
    timestamp: int | None = None  # ms since the epoch
    datatype: int = 0
    is_historical: bool = False
    is_transient: bool = False
    is_null: bool = False
    # (field number, raw wire value) of the value oneof; None when the metric has none.
    raw: tuple[int, Any] | None = None

    def value(self) -> float | bool | str | bytes | None:
        """The metric's value as its datatype says (None: null or no value)."""
        if self.is_null or self.raw is None:
            return None
        number, raw = self.raw
        datatype = self.datatype
        if number == 10:  # int_value, uint32 on the wire
            raw &= 0xFFFFFFFF
        elif number == 11:  # long_value, uint64 on the wire
            raw &= 0xFFFFFFFFFFFFFFFF
        if number in (10, 11):
            if datatype in _SIGNED_BITS:
                bits = _SIGNED_BITS[DataType(datatype)]
                raw &= (1 << bits) - 1
                return raw - (1 << bits) if raw >= 1 << (bits - 1) else raw
            if datatype in _UNSIGNED_BITS:
                return raw & ((1 << _UNSIGNED_BITS[DataType(datatype)]) - 1)
            if datatype == DataType.BOOLEAN:
                return bool(raw)
            return int(raw)  # DateTime (ms) and unknown integer types
        if number == 14:
            return bool(raw)
        if number in (12, 13, 15, 16):
            return raw
        return None  # dataset, template, extension: not a scalar

    def name_or_alias(self) -> str:
        return self.name if self.name is not None else f"alias {self.alias}"


@dataclass(slots=True)
class Payload:
    timestamp: int | None = None
    metrics: list[Metric] = field(default_factory=list)
    seq: int | None = None
    uuid: str | None = None
    body: bytes | None = None


def _varint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise SparkplugDecodeError(f"{what}: truncated varint at byte {pos}")
        byte = data[pos]
        pos += 1
        if shift == 63 and byte > 1:
            raise SparkplugDecodeError(f"{what}: varint longer than 64 bits at byte {pos - 1}")
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise SparkplugDecodeError(f"{what}: varint longer than 10 bytes at byte {pos}")


def _fields(data: bytes, what: str) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) of one message; length-delimited values as bytes,
    fixed32/fixed64 as their raw bytes."""
    out: list[tuple[int, int, Any]] = []
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = _varint(data, pos, what)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise SparkplugDecodeError(f"{what}: field number 0 at byte {pos}")
        value: Any
        if wire == 0:
            value, pos = _varint(data, pos, f"{what} field {number}")
        elif wire == 1:
            if pos + 8 > end:
                raise SparkplugDecodeError(f"{what} field {number}: truncated 64-bit value")
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos, f"{what} field {number}")
            if pos + length > end:
                raise SparkplugDecodeError(
                    f"{what} field {number}: length {length} runs past the end ({end - pos} left)"
                )
            value, pos = data[pos : pos + length], pos + length
        elif wire == 5:
            if pos + 4 > end:
                raise SparkplugDecodeError(f"{what} field {number}: truncated 32-bit value")
            value, pos = data[pos : pos + 4], pos + 4
        else:
            # 3/4 are the deprecated groups (never in sparkplug_b.proto), 6/7 do not exist.
            raise SparkplugDecodeError(f"{what} field {number}: wire type {wire} not supported")
        out.append((number, wire, value))
    return out


def _expect(what: str, number: int, wire: int, wanted: int) -> None:
    if wire != wanted:
        raise SparkplugDecodeError(f"{what} field {number}: wire type {wire}, expected {wanted}")


def _text(what: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SparkplugDecodeError(f"{what}: not UTF-8 ({exc.reason})") from None


def _metric(data: bytes, index: int) -> Metric:
    what = f"metric {index}"
    metric = Metric()
    for number, wire, value in _fields(data, what):
        if number == 1:
            _expect(what, number, wire, 2)
            metric.name = _text(f"{what} name", value)
        elif number == 2:
            _expect(what, number, wire, 0)
            metric.alias = value
        elif number == 3:
            _expect(what, number, wire, 0)
            metric.timestamp = value
        elif number == 4:
            _expect(what, number, wire, 0)
            metric.datatype = value & 0xFFFFFFFF
        elif number in (5, 6, 7):
            _expect(what, number, wire, 0)
            setattr(
                metric, {5: "is_historical", 6: "is_transient", 7: "is_null"}[number], bool(value)
            )
        elif number in (10, 11, 14):
            _expect(what, number, wire, 0)
            metric.raw = (number, value)
        elif number == 12:
            _expect(what, number, wire, 5)
            metric.raw = (number, struct.unpack("<f", value)[0])
        elif number == 13:
            _expect(what, number, wire, 1)
            metric.raw = (number, struct.unpack("<d", value)[0])
        elif number == 15:
            _expect(what, number, wire, 2)
            metric.raw = (number, _text(f"{what} string_value", value))
        elif number == 16:
            _expect(what, number, wire, 2)
            metric.raw = (number, bytes(value))
        elif number in _VALUE_FIELDS:
            metric.raw = (number, None)  # dataset/template/extension: present, not scalar
        # 8 metadata, 9 properties and unknown fields: skipped.
    return metric


def decode_payload(data: bytes | bytearray) -> Payload:
    """A Sparkplug B ``Payload`` from its protobuf bytes, or SparkplugDecodeError."""
    payload = Payload()
    raw = bytes(data)
    for number, wire, value in _fields(raw, "payload"):
        if number == 1:
            _expect("payload", number, wire, 0)
            payload.timestamp = value
        elif number == 2:
            _expect("payload", number, wire, 2)
            if len(payload.metrics) >= MAX_METRICS:
                raise SparkplugDecodeError(f"payload: more than {MAX_METRICS} metrics")
            payload.metrics.append(_metric(value, len(payload.metrics)))
        elif number == 3:
            _expect("payload", number, wire, 0)
            payload.seq = value
        elif number == 4:
            _expect("payload", number, wire, 2)
            payload.uuid = _text("payload uuid", value)
        elif number == 5:
            _expect("payload", number, wire, 2)
            payload.body = bytes(value)
    return payload


# -- encoding (what a host application sends) ------------------------------------------


def _encode_varint(value: int) -> bytes:
    if value < 0:
        value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _encode_varint(number << 3 | wire)


def _len_field(number: int, data: bytes) -> bytes:
    return _key(number, 2) + _encode_varint(len(data)) + data


def encode_bool_metric(name: str, value: bool, timestamp: int) -> bytes:
    """One Metric with a Boolean value, the shape of every Node/Device Control command."""
    return (
        _len_field(1, name.encode("utf-8"))
        + _key(3, 0)
        + _encode_varint(timestamp)
        + _key(4, 0)
        + _encode_varint(DataType.BOOLEAN)
        + _key(14, 0)
        + _encode_varint(1 if value else 0)
    )


def encode_payload(timestamp: int, metrics: list[bytes], seq: int | None = None) -> bytes:
    """A Payload of already encoded metrics (``encode_bool_metric``)."""
    out = _key(1, 0) + _encode_varint(timestamp)
    for metric in metrics:
        out += _len_field(2, metric)
    if seq is not None:
        out += _key(3, 0) + _encode_varint(seq)
    return out


REBIRTH_METRIC = "Node Control/Rebirth"


def rebirth_request(timestamp: int) -> bytes:
    """The NCMD payload that asks an edge node to publish its BIRTH certificates again."""
    return encode_payload(timestamp, [encode_bool_metric(REBIRTH_METRIC, True, timestamp)])
