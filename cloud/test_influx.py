"""The line-protocol parser on the shapes Telegraf's influx serializer writes (tags sorted,
integers with ``i``, strings quoted, nanosecond timestamps) and on the escaping rules."""

from __future__ import annotations

import pytest

from cloud.influx import LineError, Point, parse

# As Telegraf 1.x writes them (outputs.http, data_format = "influx"): cpu, mem, system with
# a string field, and the modbus input of a PLC.
TELEGRAF = """\
cpu,cpu=cpu-total,host=rig-pc-07,machine_id=A usage_idle=97.48,usage_system=0.75,usage_user=1.5 1764417600000000000
mem,host=rig-pc-07,machine_id=A available=6170284032i,used_percent=24.4 1764417600000000000
system,host=rig-pc-07,machine_id=A load1=0.25,n_cpus=4i,uptime_format="10 days, 18:32" 1764417600000000000
modbus,host=rig-pc-07,machine_id=A,name=press-1,slave_id=1,type=holding_register temperature=71.2,pressure=10.4 1764417600000000000
"""  # noqa: E501 (lines as Telegraf writes them)


def _points(text: str) -> list[Point]:
    out = parse(text)
    assert all(isinstance(p, Point) for p in out), out
    return [p for p in out if isinstance(p, Point)]


def test_telegraf_output() -> None:
    cpu, mem, system, modbus = _points(TELEGRAF)
    assert cpu.measurement == "cpu"
    assert cpu.tags == {"cpu": "cpu-total", "host": "rig-pc-07", "machine_id": "A"}
    assert cpu.fields == {"usage_idle": 97.48, "usage_system": 0.75, "usage_user": 1.5}
    assert cpu.timestamp == 1764417600000000000
    assert mem.fields["available"] == 6170284032 and mem.integer_kinds == {"available": "integer"}
    assert system.fields["uptime_format"] == "10 days, 18:32"
    assert modbus.fields == {"temperature": 71.2, "pressure": 10.4}
    assert [p.line for p in (cpu, mem, system, modbus)] == [1, 2, 3, 4]


def test_escaping_rules() -> None:
    (point,) = _points(
        r'my\ meas\,ure,tag\ key=tag\,value\=x,b=c\d field\=key="say \"hi\" \\ ok",n=-1.5e3'
        " 1\n"
    )
    assert point.measurement == "my meas,ure"
    assert point.tags == {"tag key": "tag,value=x", "b": "c\\d"}
    assert point.fields == {"field=key": 'say "hi" \\ ok', "n": -1500.0}
    assert point.timestamp == 1


def test_types_booleans_unsigned_and_no_timestamp() -> None:
    (point,) = _points("m a=1,b=2i,c=3u,d=t,e=FALSE,f=.5,g=-0,h=True")
    assert point.fields == {
        "a": 1.0,
        "b": 2,
        "c": 3,
        "d": True,
        "e": False,
        "f": 0.5,
        "g": -0.0,
        "h": True,
    }
    assert isinstance(point.fields["a"], float)
    assert point.integer_kinds == {"b": "integer", "c": "unsigned"}
    assert point.timestamp is None


def test_comments_blank_lines_crlf_and_multiline_strings() -> None:
    text = '# a comment\n\n  \r\nm a=1 5\r\nm s="two\nlines",a=2 6\nm a=3 7\n'
    points = _points(text)
    assert [(p.line, p.fields.get("a")) for p in points] == [(4, 1.0), (5, 2.0), (7, 3.0)]
    assert points[1].fields["s"] == "two\nlines"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("m", "a space before the fields"),
        ("m ", "empty field key"),
        ("m a", "'=' after field key 'a'"),
        ("m a=", "empty field value"),
        ("m a=nan", "is not a number"),
        ("m a=inf", "is not a number"),
        ("m a=1.2.3", "is not a number"),
        ("m a=abc", "is not a number"),
        ('m a="open', "unterminated string"),
        ("m a=1,a=2", "field 'a' appears twice"),
        ("m,t=1,t=2 a=1", "tag 't' appears twice"),
        ("m,t a=1", "'=' after tag key 't'"),
        ("m,t= a=1", "empty value of tag 't'"),
        (",t=1 a=1", "empty measurement"),
        ("m a=1 12x", "is not an integer"),
        ("m a=1 99999999999999999999", "exceeds 64 bits"),
        ("m a=1 " + "9" * 5000, "exceeds 64 bits"),
        ("m a=99999999999999999999i", "exceeds 64 bits"),
        ("m a=" + "9" * 5000 + "i", "exceeds 64 bits"),
        ("m a=-1u", "outside 0..2^64-1"),
        ("m a=1 1 2", "unexpected '2' after the timestamp"),
    ],
)
def test_syntax_errors_name_the_line_and_the_problem(line: str, problem: str) -> None:
    out = parse(f"ok a=1 1\n{line}\nok a=2 2\n")
    assert [type(p).__name__ for p in out] == ["Point", "LineError", "Point"]
    error = out[1]
    assert isinstance(error, LineError) and error.line == 2
    assert problem in error.problem, error.problem


def test_float_overflow_is_parsed_as_infinity_for_the_validator_to_refuse() -> None:
    (point,) = _points("m a=1e400")
    assert point.fields["a"] == float("inf")
