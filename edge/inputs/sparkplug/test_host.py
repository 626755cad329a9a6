"""The Sparkplug host logic message by message: births, aliases, seq (with its wrap), bdSeq,
deaths, rebirth reasons, scaling, and what it does with what it cannot read."""

from __future__ import annotations

import struct
import time
from typing import Any

import pytest
from pydantic import ValidationError

from edge.inputs.common import DeviceSanity
from edge.inputs.sparkplug.config import SparkplugInputConfig
from edge.inputs.sparkplug.host import SparkplugHost
from edge.inputs.sparkplug.payload import DataType, _encode_varint, _key, _len_field
from edge.metrics import EdgeMetrics


def _now_ms() -> int:
    # Payload times must be inside the edge's acceptance window: now, not a constant.
    return int(time.time() * 1000)


def metric(
    name: str | None = None,
    *,
    alias: int | None = None,
    double: float | None = None,
    long: int | None = None,
    datatype: DataType = DataType.DOUBLE,
    boolean: bool | None = None,
    string: str | None = None,
    is_null: bool = False,
    historical_ts: int | None = None,
) -> bytes:
    out = b""
    if name is not None:
        out += _len_field(1, name.encode())
    if alias is not None:
        out += _key(2, 0) + _encode_varint(alias)
    if historical_ts is not None:
        out += _key(3, 0) + _encode_varint(historical_ts) + _key(5, 0) + b"\x01"
    out += _key(4, 0) + _encode_varint(datatype)
    if is_null:
        out += _key(7, 0) + b"\x01"
    if double is not None:
        out += _key(13, 1) + struct.pack("<d", double)
    if long is not None:
        out += _key(11, 0) + _encode_varint(long)
    if boolean is not None:
        out += _key(14, 0) + (b"\x01" if boolean else b"\x00")
    if string is not None:
        out += _len_field(15, string.encode())
    return out


def payload(*metrics: bytes, seq: int | None = None, ts: int | None = None) -> bytes:
    out = _key(1, 0) + _encode_varint(ts if ts is not None else _now_ms())
    for each in metrics:
        out += _len_field(2, each)
    if seq is not None:
        out += _key(3, 0) + _encode_varint(seq)
    return out


def bd_seq(value: int) -> bytes:
    return metric("bdSeq", long=value, datatype=DataType.INT64)


CONFIG: dict[str, Any] = {
    "host": "127.0.0.1",
    "client_id": "t",
    "group": "G",
    "devices": [
        {
            "node": "N",
            "device": "D",
            "machine": "A",
            "metrics": {
                "T": "temperature",
                "P": {"sensor": "pressure", "scale": 0.1, "offset": 1.0},
                "Pk": {"sensor": "fluid_pressure", "unit": "kPa"},
                "Run": "motor_running",
                "Name": "rpm",
            },
        },
        {"node": "N", "machine": "B", "metrics": {"Cab": "ambient_temp"}},
    ],
}


def host() -> SparkplugHost:
    config = SparkplugInputConfig.model_validate(CONFIG)
    return SparkplugHost(config, "e1", DeviceSanity("spb", EdgeMetrics()))


def born(h: SparkplugHost, bd: int = 0) -> None:
    out = h.handle(
        "spBv1.0/G/NBIRTH/N", payload(bd_seq(bd), metric("Cab", alias=9, double=60.0), seq=0)
    )
    assert [(r.machine_id, r.values) for r in out.readings] == [("B", {"ambient_temp": 60.0})]
    out = h.handle(
        "spBv1.0/G/DBIRTH/N/D",
        payload(metric("T", alias=1, double=70.0), metric("P", alias=2, double=20.0), seq=1),
    )
    assert out.rebirth is None and not out.problems
    assert out.readings[0].values == {"temperature": 70.0, "pressure": 3.0}


def test_birth_then_aliases_map_scaled_and_partial() -> None:
    h = host()
    born(h)
    out = h.handle(
        "spBv1.0/G/DDATA/N/D",
        payload(metric(alias=2, double=30.0), metric("Pk", double=250), seq=2),
    )
    assert out.rebirth is None
    [reading] = out.readings
    assert (reading.machine_id, reading.edge_id) == ("A", "e1")
    # scale and offset; kPa converted to the catalog unit of fluid_pressure
    assert reading.values == {"pressure": 4.0, "fluid_pressure": pytest.approx(36.259434)}
    assert h.machines_online() == {"A": True, "B": True}


def test_seq_wraps_after_255_without_a_gap() -> None:
    h = host()
    born(h)
    for seq in range(2, 256):
        assert h.handle("spBv1.0/G/NDATA/N", payload(seq=seq)).rebirth is None
    out = h.handle("spBv1.0/G/DDATA/N/D", payload(metric(alias=1, double=1.0), seq=0))
    assert out.rebirth is None and h.gaps == 0


def test_a_seq_gap_asks_for_a_rebirth_and_keeps_the_values() -> None:
    h = host()
    born(h)
    out = h.handle("spBv1.0/G/DDATA/N/D", payload(metric(alias=1, double=71.0), seq=4))
    assert out.rebirth == "seq gap: expected 2, got 4 (DDATA)"
    assert out.readings[0].values == {"temperature": 71.0}
    # The next one follows the message seen: no second gap.
    assert h.handle("spBv1.0/G/NDATA/N", payload(seq=5)).rebirth is None


def test_data_without_a_birth_asks_for_a_rebirth_and_uses_names_only() -> None:
    h = host()
    out = h.handle(
        "spBv1.0/G/DDATA/N/D",
        payload(metric(alias=1, double=71.0), metric("T", double=72.0), seq=17),
    )
    assert out.rebirth == "DDATA from a node whose NBIRTH was not seen"
    assert out.problems == ["1 metric(s) with an alias no BIRTH declared skipped"]
    assert out.readings[0].values == {"temperature": 72.0}
    assert h.machines_online() == {"A": False, "B": False}


def test_unknown_alias_after_birth_asks_for_a_rebirth() -> None:
    h = host()
    born(h)
    out = h.handle("spBv1.0/G/DDATA/N/D", payload(metric(alias=42, double=1.0), seq=2))
    assert out.rebirth == "metric alias unknown" and out.readings == []


def test_unmapped_devices_count_for_seq_and_never_ask_for_a_rebirth() -> None:
    h = host()
    born(h)
    out = h.handle("spBv1.0/G/DDATA/N/Other", payload(metric(alias=99, double=1.0), seq=2))
    assert (out.readings, out.rebirth, out.problems) == ([], None, [])
    assert h.handle("spBv1.0/G/NDATA/N", payload(seq=3)).rebirth is None


def test_ddeath_marks_the_device_bad() -> None:
    h = host()
    born(h)
    out = h.handle("spBv1.0/G/DDEATH/N/D", payload(seq=2))
    [reading] = out.readings
    assert reading.machine_id == "A"
    assert reading.values == dict.fromkeys(["temperature", "pressure", "fluid_pressure", "rpm"])
    assert reading.quality == dict.fromkeys(reading.values, "bad")
    assert reading.custom == {}  # motor_running is custom: no quality to set
    assert h.machines_online() == {"A": False, "B": True}


def test_ndeath_of_the_session_marks_every_machine_of_the_node_bad() -> None:
    h = host()
    born(h, bd=7)
    stale = h.handle("spBv1.0/G/NDEATH/N", payload(bd_seq(6)))
    assert stale.readings == [] and "ignored" in stale.problems[0]
    out = h.handle("spBv1.0/G/NDEATH/N", payload(bd_seq(7)))
    assert sorted(r.machine_id for r in out.readings) == ["A", "B"]
    assert all(set(r.quality.values()) == {"bad"} for r in out.readings)
    assert h.machines_online() == {"A": False, "B": False}


def test_values_that_are_not_numbers() -> None:
    h = host()
    born(h)
    out = h.handle(
        "spBv1.0/G/DDATA/N/D",
        payload(
            metric("Run", boolean=True, datatype=DataType.BOOLEAN),
            metric("T", is_null=True),
            metric("P", string="12.5", datatype=DataType.STRING),
            metric("Name", string="fast", datatype=DataType.STRING),
            seq=2,
        ),
    )
    [reading] = out.readings
    assert reading.custom == {"motor_running": 1.0}
    assert reading.values == {"temperature": None, "pressure": 2.25, "rpm": None}
    assert reading.quality == {"temperature": "bad", "rpm": "bad"}
    assert out.problems == ["Name -> rpm: not a number (str)"]


def test_historical_metrics_are_readings_of_their_own_time() -> None:
    h = host()
    born(h)
    then = _now_ms() - 60_000
    out = h.handle(
        "spBv1.0/G/DDATA/N/D",
        payload(metric("T", double=1.0, historical_ts=then), metric("T", double=2.0), seq=2),
    )
    assert sorted((r.values["temperature"], r.ts.timestamp() * 1000 // 1) for r in out.readings)[
        0
    ] == (1.0, then)
    assert len(out.readings) == 2


def test_what_is_not_for_this_host() -> None:
    h = host()
    assert h.handle("spBv1.0/G/NCMD/N", b"\xff").ignored
    assert h.handle("spBv1.0/Other/NDATA/N", b"").ignored
    assert h.handle("spBv1.0/G/NDATA/Unmapped", b"").ignored
    assert h.handle("spBv1.0/STATE/host", b"{}").ignored
    bad = h.handle("spBv1.0/G/DDATA/N/D", b'{"temperature": 1}')
    assert bad.readings == [] and bad.problems[0].startswith("DDATA not a Sparkplug B payload")


def test_config_refuses_what_the_runtime_could_not_do() -> None:
    wrong_unit = {
        **CONFIG,
        "devices": [
            {
                "node": "N",
                "machine": "A",
                "metrics": {"P": {"sensor": "pressure", "unit": "furlong"}},
            }
        ],
    }
    with pytest.raises(ValidationError, match=r"metrics\.P: unknown unit 'furlong'"):
        SparkplugInputConfig.model_validate(wrong_unit)
    wrong_dimension = {
        **CONFIG,
        "devices": [
            {"node": "N", "machine": "A", "metrics": {"P": {"sensor": "pressure", "unit": "°F"}}}
        ],
    }
    with pytest.raises(ValidationError, match="does not fit sensor 'pressure'"):
        SparkplugInputConfig.model_validate(wrong_dimension)
    twice = {**CONFIG, "devices": [CONFIG["devices"][0], CONFIG["devices"][0]]}
    with pytest.raises(ValidationError, match="N/D is mapped twice"):
        SparkplugInputConfig.model_validate(twice)
    with pytest.raises(ValidationError, match="group"):
        SparkplugInputConfig.model_validate({**CONFIG, "group": "a/b"})
    same_sensor = {
        **CONFIG,
        "devices": [{"node": "N", "machine": "A", "metrics": {"X": "rpm", "Y": "rpm"}}],
    }
    with pytest.raises(ValidationError, match="both map to sensor 'rpm'"):
        SparkplugInputConfig.model_validate(same_sensor)
    # The catalog unit itself needs no conversion.
    ok = {
        **CONFIG,
        "devices": [
            {"node": "N", "machine": "A", "metrics": {"P": {"sensor": "pressure", "unit": "bar"}}}
        ],
    }
    assert SparkplugInputConfig.model_validate(ok).topics() == ["spBv1.0/G/+/N", "spBv1.0/G/+/N/+"]
