"""MQTT payload mapping as devices send them: flat objects, partial messages, numeric strings,
bare scalars, arrays, selectors, scale/offset/unit; and check-config refusing exactly what
the runtime would refuse."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from edge.inputs.mqtt.config import MqttSubscription
from edge.inputs.mqtt.input import PayloadError, map_message
from edge.inputs.mqtt.mapping import PathError, compile_path


def sub(**mapping: Any) -> MqttSubscription:
    return MqttSubscription.model_validate(
        {"topic": "plant/+/+", "machine_from_topic": 1, **mapping}
    )


def values(subscription: MqttSubscription, payload: bytes, topic: str = "plant/A/x") -> Any:
    reading = map_message(subscription, topic, payload, "e1")
    return reading.values, reading.custom, reading.quality


@pytest.mark.parametrize("root", ["$", ".", ""])
def test_a_flat_object_maps_by_name(root: str) -> None:
    flat = sub(values_path=root, timestamp_path="ts", timestamp_format="unix_ms")
    core, custom, quality = values(
        flat, b'{"temperature": 71.2, "pressure": 2400, "arm_torque": 3, "ts": 1764400000123}'
    )
    assert core == {"temperature": 71.2, "pressure": 2400.0}
    assert custom == {"arm_torque": 3.0}  # the timestamp's own key is not a sensor
    assert quality == {}


def test_flat_object_rename_ignore_and_what_it_refuses() -> None:
    flat = sub(values_path="$", rename={"Temp": "temperature"}, ignore=["status"])
    assert values(flat, b'{"Temp": 70, "status": "running"}')[0] == {"temperature": 70.0}
    with pytest.raises(PayloadError, match=r"'Pressure' is not snake_case.*rename"):
        map_message(flat, "plant/A/x", b'{"Pressure": 1}', "e1")
    with pytest.raises(PayloadError, match="mode: expected a number, got str"):
        map_message(flat, "plant/A/x", b'{"temperature": 1, "mode": "auto"}', "e1")


def test_partial_messages_keep_what_they_carry() -> None:
    fields = sub(fields={"temperature": "t", "pressure": "$.p", "rpm": "motor.speed"})
    assert values(fields, b'{"p": 2400}')[0] == {"pressure": 2400.0}
    assert values(fields, b'{"t": 70, "motor": {"speed": 1500}}')[0] == {
        "temperature": 70.0,
        "rpm": 1500.0,
    }
    # A field present as null is the device saying "no value": bad, not absent.
    assert values(fields, b'{"t": null, "p": 1}')[2] == {"temperature": "bad"}
    with pytest.raises(PayloadError, match="no sensor values"):
        map_message(fields, "plant/A/x", b'{"other": 1}', "e1")


def test_numeric_strings_where_configured() -> None:
    strict = sub(fields={"temperature": "t"})
    with pytest.raises(PayloadError, match="temperature: expected a number, got str"):
        map_message(strict, "plant/A/x", b'{"t": "71.2"}', "e1")
    lenient = sub(fields={"temperature": "t"}, numeric_strings=True)
    assert values(lenient, b'{"t": "71.2"}')[0] == {"temperature": 71.2}
    assert values(lenient, b'{"t": " -1.5e1 "}')[0] == {"temperature": -15.0}
    for text in (b'"0x1F"', b'"nan"', b'"inf"', b'"1_000"', b'"fast"'):
        with pytest.raises(PayloadError, match="expected a number"):
            map_message(lenient, "plant/A/x", b'{"t": ' + text + b"}", "e1")


def test_bare_scalar_payloads_named_by_the_topic() -> None:
    scalar = sub(sensor_from_topic=2, value_path="$")
    assert values(scalar, b"72.5", "plant/A/temperature")[0] == {"temperature": 72.5}
    with pytest.raises(PayloadError, match="expected a number, got str"):
        map_message(scalar, "plant/A/temperature", b'"72.5"', "e1")
    with pytest.raises(PayloadError, match="not JSON"):
        map_message(scalar, "plant/A/temperature", b"072.5", "e1")
    lenient = sub(sensor_from_topic=2, value_path="$", numeric_strings=True)
    assert values(lenient, b'"72.5"', "plant/A/temperature")[0] == {"temperature": 72.5}
    # Text that JSON refuses but is a decimal number (a leading zero, a plus sign).
    assert values(lenient, b"072.5", "plant/A/temperature")[0] == {"temperature": 72.5}
    assert values(lenient, b"+3\n", "plant/A/rpm")[0] == {"rpm": 3.0}
    with pytest.raises(PayloadError, match="not JSON"):
        map_message(lenient, "plant/A/temperature", b"ON", "e1")


def test_arrays_and_selectors() -> None:
    indexed = sub(fields={"temperature": "v[0]", "pressure": "$.v[-1]"})
    assert values(indexed, b'{"v": [70, 1, 2400]}')[0] == {"temperature": 70.0, "pressure": 2400.0}
    assert values(indexed, b'{"v": [70]}')[0] == {"temperature": 70.0, "pressure": 70.0}
    filtered = sub(fields={"temperature": "$.d[?(@.n=='temp')].v", "rpm": "d[?(@.id==3)].v"})
    payload = b'{"d": [{"n": "temp", "v": 71}, {"n": "x", "id": 3, "v": 900}]}'
    assert values(filtered, payload)[0] == {"temperature": 71.0, "rpm": 900.0}
    senml = sub(values_path="d", name_key="n", value_key="v")
    payload = b'{"d": [{"n": "temperature", "v": 71}, {"n": "pressure"}, {"n": "rpm", "v": 5}]}'
    assert values(senml, payload)[0] == {"temperature": 71.0, "rpm": 5.0}
    with pytest.raises(PayloadError, match="is an array: set name_key"):
        map_message(sub(values_path="d"), "plant/A/x", payload, "e1")
    quoted = sub(fields={"temperature": "$['sensor.temp']"})
    assert values(quoted, b'{"sensor.temp": 1}')[0] == {"temperature": 1.0}


def test_scale_offset_and_unit() -> None:
    fields = sub(
        fields={
            "temperature": {"path": "t_c", "scale": 1.8, "offset": 32},
            "pressure": {"path": "p_kpa", "scale": 0.01, "unit": "bar"},
        }
    )
    core = values(fields, b'{"t_c": 100, "p_kpa": 250}')[0]
    assert core == {"temperature": pytest.approx(212.0), "pressure": pytest.approx(2.5)}
    flat = sub(values_path="$", scaling={"pressure": {"scale": 0.0689476}})
    assert values(flat, b'{"pressure": 100, "rpm": 2}')[0] == {
        "pressure": pytest.approx(6.89476),
        "rpm": 2.0,
    }
    # Units at the door (shared.units): the device's unit converted to the catalog's.
    units = sub(
        fields={
            "pressure": {"path": "p", "unit": "psi"},
            "temperature": {"path": "t", "unit": "degC"},
            "rpm": {"path": "r", "unit": "RPM"},  # the catalog unit: unchanged
        }
    )
    assert values(units, b'{"p": 100, "t": 100, "r": 5}')[0] == {
        "pressure": pytest.approx(6.894757),
        "temperature": pytest.approx(212.0),
        "rpm": 5.0,
    }
    # Scale and offset first, then the unit: a register in tenths of a psi.
    tenths = sub(values_path="$", scaling={"pressure": {"scale": 0.1, "unit": "psi"}})
    assert values(tenths, b'{"pressure": 1000}')[0] == {"pressure": pytest.approx(6.894757)}
    scalar = sub(sensor_from_topic=2, value_path="$", scaling={"temperature": {"offset": -1}})
    assert values(scalar, b"10", "plant/A/temperature")[0] == {"temperature": 9.0}


@pytest.mark.parametrize(
    ("mapping", "problem"),
    [
        ({"values_path": "a[*]"}, "values_path: 'a\\[\\*\\]': unsupported bracket"),
        ({"values_path": "$..a"}, "values_path: .*a key is missing"),
        ({"fields": {"temperature": "a."}}, "ends with '.'"),
        ({"fields": {"temperature": {"path": "a[1:2]"}}}, "unsupported bracket"),
        ({"values_path": "$", "timestamp_path": "t[?(@.x>1)]"}, "timestamp_path"),
        ({"values_path": "$", "value_path": "v"}, "value_path is used with sensor_from_topic"),
        ({"sensor_from_topic": 2}, "sensor_from_topic needs value_path"),
        ({"fields": {"rpm": "r"}, "scaling": {"pressure": {"scale": 2}}}, "not a sensor of fields"),
        ({"values_path": "$", "name_key": "n"}, "name_key and value_key go together"),
        ({"fields": {"rpm": "r"}, "rename": {"R": "rpm"}}, "rename is used with values_path"),
        (
            {"values_path": "$", "scaling": {"pressure": {"unit": "furlong"}}},
            "scaling.pressure: unknown unit 'furlong'",
        ),
        (
            {"fields": {"pressure": {"path": "p", "unit": "parsec"}}},
            "fields.pressure: unknown unit 'parsec'",
        ),
        (
            {"fields": {"pressure": {"path": "p", "unit": "degC"}}},
            "fields.pressure: unit 'degC' .* does not fit sensor 'pressure'",
        ),
        ({"values_path": "$", "scaling": {"Bad": {"scale": 2}}}, "snake_case"),
        ({"values_path": "$", "scaling": {"rpm": {"scale": "inf"}}}, "finite"),
    ],
)
def test_check_config_refuses_what_the_runtime_would(mapping: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        sub(**mapping)


@pytest.mark.parametrize("topic", ["a/#/b", "a/b#", "a/x+/b", "a/+b"])
def test_topic_filters_the_broker_would_refuse(topic: str) -> None:
    with pytest.raises(ValidationError, match="must be a whole level"):
        MqttSubscription.model_validate({"topic": topic, "machine": "A", "values_path": "$"})


def test_the_old_dot_root_now_maps_instead_of_refusing_every_message() -> None:
    # values_path "." passed check-config and then refused every message ("no '.'").
    dotted = sub(values_path=".")
    assert values(dotted, b'{"rpm": 1}')[0] == {"rpm": 1.0}


@pytest.mark.parametrize(
    "text", ["$", "a", "a.b", "$.a[0].b", "[1]", "a['x y']", 'a["q\\"x"]', "a[?(@.n==-1.5)]"]
)
def test_selector_subset_compiles(text: str) -> None:
    compile_path(text)


@pytest.mark.parametrize("text", ["a.", "a..b", "$a", "a[*]", "a.*", "a[0", "$[?(@.a)]", "a[b]"])
def test_selector_outside_the_subset_is_refused(text: str) -> None:
    with pytest.raises(PathError):
        compile_path(text)
