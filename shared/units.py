"""Engineering units at the door: the units of the sensor catalog and the usual field units.

Devices report in whatever unit their vendor chose (psi or bar, °C or °F, in/s or mm/s); the
rig stores every sensor in its catalog unit (``shared.catalog``). This module is a small table
rather than pint: the catalog needs about thirty units with linear (scale + offset)
conversions, and a table keeps the edge free of a large dependency whose registry would accept
units no input can mean (and whose parsing rules a technician cannot read in one screen).

- ``normalise_unit(text)`` gives the canonical spelling of a unit (catalog spellings where the
  catalog uses the unit: ``"RPM"``, ``"N·m"``, ``"L/min"``, ``"µF"``), accepting common field
  spellings (``degC``, ``℃``, ``PSI``, ``lpm``, ``m3/h``, ``uF``), OPC-UA EngineeringUnits
  display names and the UNECE Recommendation 20 codes OPC-UA uses (``CEL``, ``BAR``,
  ``unece:PS``); it raises ``UnitError`` naming the text it could not read.
- ``converter(from_unit, to_unit)`` returns the conversion as a function; ``UnitError`` when the
  dimensions differ (a psi value cannot become °F).
- ``catalog_unit(sensor_name)`` is the canonical unit of a core sensor, ``None`` for a name the
  catalog does not know.
- ``unece_unit(code)`` reads an OPC-UA ``EUInformation.UnitId`` (the integer encoding of a
  UNECE code) or the code itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from shared.catalog import SENSORS_BY_NAME


class UnitError(ValueError):
    """A unit text that is not in the table, or a conversion between different dimensions."""


@dataclass(frozen=True, slots=True)
class Unit:
    """``base = value * scale + offset`` in the dimension's base unit."""

    name: str
    dimension: str
    scale: float
    offset: float = 0.0


_FT3 = 0.028316846592  # m³
_GAL_US = 3.785411784e-3  # m³
_LBF = 4.4482216152605  # N
_PSI = 6894.757293168  # Pa

# canonical name, dimension, scale, offset, aliases (exact spellings; a case-insensitive
# match is tried afterwards when it is unambiguous), UNECE Rec. 20 codes.
_TABLE: tuple[tuple[str, str, float, float, tuple[str, ...], tuple[str, ...]], ...] = (
    # pressure (base Pa)
    ("mPa", "pressure", 1e-3, 0.0, ("millipascal",), ("74",)),
    ("Pa", "pressure", 1.0, 0.0, ("pascal",), ("PAL",)),
    ("kPa", "pressure", 1e3, 0.0, ("kilopascal",), ("KPA",)),
    ("MPa", "pressure", 1e6, 0.0, ("megapascal",), ("MPA",)),
    ("hPa", "pressure", 1e2, 0.0, ("hectopascal",), ("A97",)),
    ("bar", "pressure", 1e5, 0.0, ("bars", "bar(a)", "bar(g)", "bara", "barg"), ("BAR",)),
    ("mbar", "pressure", 1e2, 0.0, ("millibar", "mb"), ("MBR",)),
    (
        "psi",
        "pressure",
        _PSI,
        0.0,
        ("psia", "psig", "lbf/in²", "lbf/in2", "lb/in2", "pound-force per square inch"),
        ("PS",),
    ),
    ("kgf/cm²", "pressure", 98066.5, 0.0, ("kgf/cm2", "kg/cm²", "kg/cm2", "at"), ("D5",)),
    ("atm", "pressure", 101325.0, 0.0, ("atmosphere",), ("ATM",)),
    ("mmHg", "pressure", 133.322387415, 0.0, ("torr",), ("HP",)),
    ("inH2O", "pressure", 249.08891, 0.0, ("inwc", "in H2O", '"H2O'), ("F78",)),
    # temperature (base K)
    (
        "°C",
        "temperature",
        1.0,
        273.15,
        ("℃", "degC", "deg C", "degrees C", "celsius", "degree celsius", "Cel", "C°"),
        ("CEL",),
    ),
    (
        "°F",
        "temperature",
        5.0 / 9.0,
        273.15 - 32.0 * 5.0 / 9.0,
        ("℉", "degF", "deg F", "degrees F", "fahrenheit", "degree fahrenheit", "F°"),
        ("FAH",),
    ),
    ("K", "temperature", 1.0, 0.0, ("kelvin", "°K", "degK"), ("KEL",)),
    # velocity (base m/s)
    ("mm/s", "velocity", 1e-3, 0.0, ("mm/sec", "mm s-1", "millimetre per second"), ("C16",)),
    ("in/s", "velocity", 0.0254, 0.0, ("ips", "in/sec", "inch per second"), ("IU",)),
    ("m/s", "velocity", 1.0, 0.0, ("m/sec", "metre per second", "meter per second"), ("MTS",)),
    # rotational speed and frequency (base Hz = revolutions or cycles per second)
    (
        "RPM",
        "frequency",
        1.0 / 60.0,
        0.0,
        ("rpm", "r/min", "rev/min", "1/min", "revolution per minute", "revolutions per minute"),
        ("M46", "RPM"),
    ),
    ("Hz", "frequency", 1.0, 0.0, ("hertz", "1/s", "rev/s", "r/s", "rps"), ("HTZ", "RPS")),
    ("kHz", "frequency", 1e3, 0.0, ("kilohertz",), ("KHZ",)),
    # electrical
    ("A", "current", 1.0, 0.0, ("amp", "amps", "ampere", "amperes"), ("AMP",)),
    ("mA", "current", 1e-3, 0.0, ("milliampere", "milliamp"), ("4K",)),
    ("kA", "current", 1e3, 0.0, ("kiloampere",), ("B22",)),
    ("V", "voltage", 1.0, 0.0, ("volt", "volts", "Vac", "Vdc", "VAC", "VDC"), ("VLT",)),
    ("mV", "voltage", 1e-3, 0.0, ("millivolt",), ("2Z",)),
    ("kV", "voltage", 1e3, 0.0, ("kilovolt",), ("KVT",)),
    ("mW", "power", 1e-3, 0.0, ("milliwatt",), ("C31",)),
    ("W", "power", 1.0, 0.0, ("watt", "watts"), ("WTT",)),
    ("kW", "power", 1e3, 0.0, ("kilowatt",), ("KWT",)),
    ("MW", "power", 1e6, 0.0, ("megawatt",), ("MAW",)),
    ("hp", "power", 745.69987158227022, 0.0, ("horsepower", "HP"), ("K43",)),
    ("Ω", "resistance", 1.0, 0.0, ("ohm", "ohms", "Ohm"), ("OHM",)),
    ("mΩ", "resistance", 1e-3, 0.0, ("mOhm", "milliohm"), ("E45",)),
    ("kΩ", "resistance", 1e3, 0.0, ("kOhm", "kohm", "kiloohm"), ("B49",)),
    ("MΩ", "resistance", 1e6, 0.0, ("MOhm", "megaohm"), ("B75",)),
    ("F", "capacitance", 1.0, 0.0, ("farad",), ("FAR",)),
    ("µF", "capacitance", 1e-6, 0.0, ("uF", "μF", "microfarad"), ("4O",)),
    ("nF", "capacitance", 1e-9, 0.0, ("nanofarad",), ("C41",)),
    ("pF", "capacitance", 1e-12, 0.0, ("picofarad",), ("4T",)),
    ("H", "inductance", 1.0, 0.0, ("henry",), ("81",)),
    ("mH", "inductance", 1e-3, 0.0, ("millihenry",), ("C14",)),
    ("µH", "inductance", 1e-6, 0.0, ("uH", "μH", "microhenry"), ("B90",)),
    # fractions (base 1): ratio, per cent and the catalog's per-cent flavours, ppm
    ("ratio", "fraction", 1.0, 0.0, ("fraction", "1", "pu", "p.u."), ("C62",)),
    ("%", "fraction", 1e-2, 0.0, ("percent", "per cent", "pct"), ("P1",)),
    ("%RH", "fraction", 1e-2, 0.0, ("% RH", "%rh", "RH%", "% r.h.", "%r.F."), ()),
    ("%THD", "fraction", 1e-2, 0.0, ("% THD", "THD%", "%thd"), ()),
    ("ppm", "fraction", 1e-6, 0.0, ("parts per million",), ("59",)),
    # volumetric flow (base m³/s)
    ("L/min", "flow", 1e-3 / 60.0, 0.0, ("l/min", "lpm", "LPM", "litre per minute"), ("L2",)),
    ("L/s", "flow", 1e-3, 0.0, ("l/s", "litre per second"), ("G51",)),
    ("L/h", "flow", 1e-3 / 3600.0, 0.0, ("l/h", "lph", "litre per hour"), ("E32",)),
    (
        "m³/h",
        "flow",
        1.0 / 3600.0,
        0.0,
        ("m3/h", "m^3/h", "m3/hr", "cmh", "cubic metre per hour"),
        ("MQH",),
    ),
    ("m³/s", "flow", 1.0, 0.0, ("m3/s", "m^3/s", "cubic metre per second"), ("MQS",)),
    ("gpm", "flow", _GAL_US / 60.0, 0.0, ("GPM", "gal/min", "US gal/min"), ("G2",)),
    ("cfm", "flow", _FT3 / 60.0, 0.0, ("CFM", "ft3/min", "ft³/min"), ("2L",)),
    # length (base m)
    ("m", "length", 1.0, 0.0, ("metre", "meter"), ("MTR",)),
    ("cm", "length", 1e-2, 0.0, ("centimetre", "centimeter"), ("CMT",)),
    ("mm", "length", 1e-3, 0.0, ("millimetre", "millimeter"), ("MMT",)),
    ("nm", "length", 1e-9, 0.0, ("nanometre", "nanometer"), ("C45",)),
    ("µm", "length", 1e-6, 0.0, ("um", "μm", "micron", "micrometre"), ("4H",)),
    ("in", "length", 0.0254, 0.0, ("inch", '"'), ("INH",)),
    ("mil", "length", 2.54e-5, 0.0, ("thou", "mils"), ("M77",)),
    # force (base N) and torque (base N·m)
    ("N", "force", 1.0, 0.0, ("newton",), ("NEW",)),
    ("kN", "force", 1e3, 0.0, ("kilonewton",), ("B47",)),
    ("lbf", "force", _LBF, 0.0, ("pound-force", "lb-f"), ("C78",)),
    ("N·m", "torque", 1.0, 0.0, ("Nm", "N.m", "N m", "N*m", "N-m", "newton metre"), ("NU",)),
    ("kN·m", "torque", 1e3, 0.0, ("kNm", "kN.m", "kN m"), ("B48",)),
    ("lbf·ft", "torque", _LBF * 0.3048, 0.0, ("lbf.ft", "lbf ft", "ft-lb", "ft·lbf"), ("M92",)),
    ("lbf·in", "torque", _LBF * 0.0254, 0.0, ("lbf.in", "lbf in", "in-lb", "in·lbf"), ("F21",)),
    # angle (base degree)
    ("°", "angle", 1.0, 0.0, ("deg", "degree", "degrees"), ("DD",)),
    ("rad", "angle", 180.0 / math.pi, 0.0, ("radian", "radians"), ("C81",)),
    # kinematic viscosity (base mm²/s = cSt)
    ("cSt", "viscosity", 1.0, 0.0, ("centistokes", "mm²/s", "mm2/s"), ("4C",)),
    ("St", "viscosity", 100.0, 0.0, ("stokes",), ("91",)),
    # density (base kg/m³)
    ("g/cm³", "density", 1e3, 0.0, ("g/cm3", "g/cc", "g/ml", "g/mL", "kg/L", "kg/l"), ("23",)),
    ("kg/m³", "density", 1.0, 0.0, ("kg/m3", "g/L", "g/l"), ("KMQ",)),
    ("lb/ft³", "density", 16.018463373960138, 0.0, ("lb/ft3",), ("87",)),
    # the catalog's dimensionless and special-purpose quantities: each its own dimension so a
    # reading of one is never taken for another
    ("dB", "sound_level", 1.0, 0.0, ("dBA", "dB(A)", "decibel"), ("2N",)),
    ("lux", "illuminance", 1.0, 0.0, ("lx", "Lux"), ("LUX",)),
    ("fc", "illuminance", 10.763910416709722, 0.0, ("footcandle", "foot-candle"), ()),
    ("#/m³", "particle_density", 1.0, 0.0, ("#/m3", "1/m3", "1/m³", "counts/m3"), ()),
    ("#/ft³", "particle_density", 1.0 / _FT3, 0.0, ("#/ft3", "counts/ft3"), ()),
    ("AQI", "air_quality", 1.0, 0.0, ("aqi",), ()),
    ("Re", "reynolds_number", 1.0, 0.0, (), ()),
    ("σ", "cavitation_index", 1.0, 0.0, ("sigma",), ()),
)

UNITS: dict[str, Unit] = {}
_ALIASES: dict[str, str] = {}
_UNECE: dict[str, str] = {}
for _name, _dim, _scale, _offset, _aliases, _codes in _TABLE:
    UNITS[_name] = Unit(_name, _dim, _scale, _offset)
    for _spelling in (_name, *_aliases):
        _ALIASES[_spelling] = _name
    for _code in _codes:
        _UNECE[_code] = _name

# Case-insensitive fallback, only where it cannot change the meaning: "mw" could be mW or MW,
# so a lower-case spelling shared by two units is left out and must be written exactly.
_FOLDED: dict[str, str | None] = {}
for _spelling, _name in _ALIASES.items():
    _key = _spelling.casefold()
    if _FOLDED.get(_key, _name) != _name:
        _FOLDED[_key] = None
    else:
        _FOLDED[_key] = _name
# A bare "c"/"f" would otherwise fold onto nothing; keep out single letters that are also SI
# symbols of other units (F is farad, not Fahrenheit) by never folding one-letter spellings.
for _key in [k for k in _FOLDED if len(k) == 1]:
    del _FOLDED[_key]
# UNECE codes are accepted bare when they are three upper-case letters (CEL, BAR, KPA: what
# OPC-UA tooling shows) and with an explicit "unece:" prefix for the short numeric-looking ones
# ("unece:P1", "unece:23"), so "23" typed as a unit is not silently g/cm³.
_BARE_UNECE = {code: name for code, name in _UNECE.items() if len(code) == 3 and code.isalpha()}

# Characters that look alike in vendor documents and OPC-UA display names.
_LOOKALIKES = str.maketrans(
    {"\u00ba": "°", "\u02da": "°", "\u03bc": "µ", "\u2126": "Ω", "\u22c5": "·", "\u2022": "·"}
)


def _clean(text: str) -> str:
    return " ".join(text.translate(_LOOKALIKES).split())


def normalise_unit(text: str) -> str:
    """The canonical spelling of ``text``; ``UnitError`` naming ``text`` if it is not a unit
    of the table."""
    if not isinstance(text, str):
        raise UnitError(f"unit {text!r} is not a text")
    cleaned = _clean(text)
    if cleaned in _ALIASES:
        return _ALIASES[cleaned]
    if cleaned.lower().startswith("unece:"):
        return unece_unit(cleaned[6:].strip())
    if cleaned in _BARE_UNECE:
        return _BARE_UNECE[cleaned]
    folded = _FOLDED.get(cleaned.casefold())
    if folded is not None:
        return folded
    # "° C", "deg. C", "m3 / h": drop the spaces and dots a document may have put in.
    squeezed = cleaned.replace(" ", "").replace("deg.", "deg")
    if squeezed != cleaned and (squeezed in _ALIASES or _FOLDED.get(squeezed.casefold())):
        return _ALIASES.get(squeezed) or _FOLDED[squeezed.casefold()]  # type: ignore[return-value]
    raise UnitError(f"unknown unit {text!r} (known: {', '.join(sorted(UNITS))})")


def unit_info(text: str) -> Unit:
    return UNITS[normalise_unit(text)]


def dimension(text: str) -> str:
    """The physical dimension of a unit (``"pressure"``, ``"temperature"``...)."""
    return unit_info(text).dimension


def compatible(from_unit: str, to_unit: str) -> bool:
    return dimension(from_unit) == dimension(to_unit)


def converter(from_unit: str, to_unit: str) -> Callable[[float], float]:
    """The function turning a value in ``from_unit`` into ``to_unit``; ``UnitError`` when either
    is unknown or their dimensions differ."""
    src, dst = unit_info(from_unit), unit_info(to_unit)
    if src.dimension != dst.dimension:
        raise UnitError(
            f"cannot convert {from_unit!r} ({src.dimension}) to {to_unit!r} ({dst.dimension})"
        )
    if src.name == dst.name:
        return _identity
    scale = src.scale / dst.scale
    offset = (src.offset - dst.offset) / dst.scale
    if offset == 0.0:
        return lambda value: value * scale
    return lambda value: value * scale + offset


def _identity(value: float) -> float:
    return value


def convert(value: float, from_unit: str, to_unit: str) -> float:
    return converter(from_unit, to_unit)(value)


def linear_factors(from_unit: str, to_unit: str) -> tuple[float, float]:
    """``(scale, offset)`` with ``to = from * scale + offset``: for inputs that fold the unit
    into a register's existing scale/offset."""
    fn = converter(from_unit, to_unit)
    offset = fn(0.0)
    return fn(1.0) - offset, offset


def catalog_unit(sensor_name: str) -> str | None:
    """The canonical unit of a core sensor; ``None`` if the catalog has no such sensor."""
    spec = SENSORS_BY_NAME.get(sensor_name)
    return None if spec is None else normalise_unit(spec.unit)


def unece_code(unit_id: int) -> str:
    """The UNECE code packed in an OPC-UA ``EUInformation.UnitId`` (up to four ASCII
    characters, big-endian: ``CEL`` is 0x43454C)."""
    if unit_id <= 0 or unit_id > 0xFFFFFFFF:
        raise UnitError(f"UnitId {unit_id} is not a UNECE code")
    raw = unit_id.to_bytes(4, "big").lstrip(b"\x00")
    try:
        code = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise UnitError(f"UnitId {unit_id} is not a UNECE code") from exc
    if not code.isalnum():
        raise UnitError(f"UnitId {unit_id} is not a UNECE code")
    return code


def unece_unit_id(code: str) -> int:
    """The OPC-UA ``UnitId`` of a UNECE code (the inverse of ``unece_code``)."""
    return int.from_bytes(code.encode("ascii"), "big")


def unece_unit(code: str | int) -> str:
    """The canonical unit of a UNECE Rec. 20 code or of an OPC-UA ``UnitId`` integer."""
    text = unece_code(code) if isinstance(code, int) else code.strip().upper()
    name = _UNECE.get(text)
    if name is None:
        raise UnitError(f"UNECE unit code {text!r} is not in the unit table")
    return name


def sensor_converter(sensor_name: str, unit: str | None) -> Callable[[float], float]:
    """How a value a device reports in ``unit`` becomes the value stored for ``sensor_name``:
    converted to the catalog unit for a core sensor, unchanged for a custom sensor (it has no
    catalog unit; ``unit`` must still be a known unit) or when ``unit`` is None. ``UnitError``
    naming the sensor when the unit cannot be converted to the sensor's."""
    if unit is None:
        return _identity
    target = catalog_unit(sensor_name)
    source = normalise_unit(unit)
    if target is None:
        return _identity
    src, dst = UNITS[source], UNITS[target]
    if src.dimension != dst.dimension:
        raise UnitError(
            f"unit {unit!r} ({src.dimension}) does not fit sensor {sensor_name!r}, "
            f"whose catalog unit is {target} ({dst.dimension})"
        )
    return converter(source, target)
