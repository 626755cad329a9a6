import math

import pytest

from shared.catalog import CORE_SENSORS
from shared.units import (
    UnitError,
    catalog_unit,
    convert,
    converter,
    dimension,
    linear_factors,
    normalise_unit,
    unece_code,
    unece_unit,
    unece_unit_id,
)


def test_every_catalog_unit_is_in_the_table() -> None:
    for spec in CORE_SENSORS:
        unit = catalog_unit(spec.name)
        assert unit is not None, spec.name
        assert converter(spec.unit, unit)(spec.typical) == spec.typical


def test_catalog_unit_of_unknown_sensor_is_none() -> None:
    assert catalog_unit("no_such_sensor") is None
    assert catalog_unit("pressure") == "bar"
    assert catalog_unit("temperature") == "°F"
    assert catalog_unit("rpm") == "RPM"


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("psi", "psi"),
        ("PSI", "psi"),
        ("psig", "psi"),
        ("bar", "bar"),
        ("BAR", "bar"),
        ("kpa", "kPa"),
        ("MPa", "MPa"),
        ("°C", "°C"),
        ("℃", "°C"),
        ("degC", "°C"),
        ("deg C", "°C"),
        ("º C", "°C"),  # masculine ordinal for the degree sign, spaced
        ("CEL", "°C"),
        ("FAH", "°F"),
        ("°F", "°F"),
        ("K", "K"),
        ("mm/s", "mm/s"),
        ("in/s", "in/s"),
        ("ips", "in/s"),
        ("rpm", "RPM"),
        ("r/min", "RPM"),
        ("Hz", "Hz"),
        ("A", "A"),
        ("mA", "mA"),
        ("V", "V"),
        ("kW", "kW"),
        ("%", "%"),
        ("percent", "%"),
        ("l/min", "L/min"),
        ("lpm", "L/min"),
        ("m3/h", "m³/h"),
        ("m^3/h", "m³/h"),
        ("gpm", "gpm"),
        ("N.m", "N·m"),
        ("Nm", "N·m"),
        ("uF", "µF"),
        ("μF", "µF"),  # Greek mu
        ("ohm", "Ω"),
        ("\u2126", "Ω"),  # ohm sign
        ("g/cm3", "g/cm³"),
        ("unece:P1", "%"),
        ("unece:PS", "psi"),
        ("  bar  ", "bar"),
    ],
)
def test_spellings(text: str, canonical: str) -> None:
    assert normalise_unit(text) == canonical


@pytest.mark.parametrize("text", ["furlongs", "", "mw", "F°C", "23", "mohm"])
def test_unknown_or_ambiguous_text_is_refused_by_name(text: str) -> None:
    with pytest.raises(UnitError) as excinfo:
        normalise_unit(text)
    assert repr(text) in str(excinfo.value)


def test_exact_spelling_wins_over_folding() -> None:
    # mw is refused above (milli or mega?), the exact spellings are not
    assert normalise_unit("mW") == "mW"
    assert normalise_unit("MW") == "MW"
    assert normalise_unit("mOhm") == "mΩ"
    assert normalise_unit("MOhm") == "MΩ"


@pytest.mark.parametrize(
    ("value", "src", "dst", "expected"),
    [
        (14.5037738, "psi", "bar", 1.0),
        (1.0, "bar", "psi", 14.5037738),
        (100.0, "kPa", "bar", 1.0),
        (1.0, "MPa", "bar", 10.0),
        (100.0, "°C", "°F", 212.0),
        (-40.0, "°C", "°F", -40.0),
        (32.0, "°F", "°C", 0.0),
        (273.15, "K", "°F", 32.0),
        (1.0, "in/s", "mm/s", 25.4),
        (60.0, "Hz", "RPM", 3600.0),
        (250.0, "mA", "A", 0.25),
        (1.5, "kW", "W", 1500.0),
        (0.5, "ratio", "%", 50.0),
        (45.0, "%", "%RH", 45.0),
        (0.042, "%", "ppm", 420.0),
        (60.0, "m3/h", "L/min", 1000.0),
        (1.0, "gpm", "L/min", 3.785411784),
        (1.0, "lbf·ft", "N·m", 1.3558179483314),
        (1000.0, "kg/m3", "g/cm³", 1.0),
    ],
)
def test_conversions(value: float, src: str, dst: str, expected: float) -> None:
    assert math.isclose(convert(value, src, dst), expected, rel_tol=1e-7, abs_tol=1e-9)


def test_round_trip_is_exact_enough() -> None:
    to_f, to_c = converter("°C", "°F"), converter("°F", "°C")
    for value in (-40.0, 0.0, 21.7, 1000.0):
        assert math.isclose(to_c(to_f(value)), value, abs_tol=1e-9)


def test_same_unit_is_identity() -> None:
    assert converter("bar", "BAR")(10.2) == 10.2


@pytest.mark.parametrize(
    ("src", "dst"), [("psi", "°F"), ("mm/s", "RPM"), ("A", "V"), ("dB", "%"), ("AQI", "ppm")]
)
def test_incompatible_dimensions_are_refused(src: str, dst: str) -> None:
    with pytest.raises(UnitError) as excinfo:
        converter(src, dst)
    assert repr(src) in str(excinfo.value) and repr(dst) in str(excinfo.value)
    assert dimension(src) != dimension(dst)


def test_linear_factors() -> None:
    scale, offset = linear_factors("°C", "°F")
    assert math.isclose(scale, 1.8) and math.isclose(offset, 32.0)


def test_opcua_unit_ids() -> None:
    # EUInformation.UnitId packs the UNECE code big-endian: CEL = 0x43454C = 4408652
    assert unece_unit_id("CEL") == 4408652
    assert unece_code(4408652) == "CEL"
    assert unece_unit(4408652) == "°C"
    assert unece_unit(unece_unit_id("PS")) == "psi"
    assert unece_unit("bar") == "bar"
    with pytest.raises(UnitError):
        unece_unit("ZZZ")
    with pytest.raises(UnitError):
        unece_code(-1)


def test_sensor_converter() -> None:
    from shared.units import sensor_converter

    assert math.isclose(sensor_converter("pressure", "psi")(14.5037738), 1.0, rel_tol=1e-7)
    assert sensor_converter("pressure", None)(3.0) == 3.0
    assert sensor_converter("gearbox_oil_temp", "°C")(40.0) == 40.0  # custom: no catalog unit
    with pytest.raises(UnitError) as excinfo:
        sensor_converter("pressure", "degC")
    assert "'pressure'" in str(excinfo.value) and "'degC'" in str(excinfo.value)
    with pytest.raises(UnitError):
        sensor_converter("gearbox_oil_temp", "furlongs")


def test_node_opcua_standard_units() -> None:
    # (UNECE code, DisplayName) as node-opcua's standardUnits give them
    for code, display, unit in [
        ("RPM", "r/min", "RPM"),
        ("RPS", "r/s", "Hz"),
        ("CEL", "°C", "°C"),
        ("BAR", "bar", "bar"),
        ("KPA", "kPa", "kPa"),
        ("MQH", "m³/h", "m³/h"),
        ("P1", "%", "%"),
        ("D5", "kg/cm²", "kgf/cm²"),
    ]:
        assert unece_unit(unece_unit_id(code)) == unit
        assert normalise_unit(display) == unit
    with pytest.raises(UnitError):
        normalise_unit("mpa")  # milli or mega: written exactly, it is either
    assert normalise_unit("mPa") == "mPa" and normalise_unit("MPa") == "MPa"
