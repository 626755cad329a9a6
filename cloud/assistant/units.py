"""Units as spec sheets and models write them, normalised to one spelling each, with the
quantity each measures and the sensor category that quantity usually belongs to.

A proposal's unit must be one of these (or an alias of one): a unit nobody can read back
("psig?", "units") would make every later conversion and colour rule guesswork. The
spellings are the sensor catalog's where it uses the unit (``shared/catalog.py``).
"""

from __future__ import annotations

import re

from shared.catalog import Category

# canonical unit -> (quantity, aliases). Aliases are compared case-sensitively first (mA vs
# MA), then case-insensitively.
_UNITS: dict[str, tuple[str, tuple[str, ...]]] = {
    "psi": ("pressure", ("psig", "psia", "PSI", "lb/in2", "lb/in²", "lbf/in²")),
    "bar": ("pressure", ("bar(g)", "barg", "bara")),
    "mbar": ("pressure", ("millibar",)),
    "kPa": ("pressure", ("kpa",)),
    "MPa": ("pressure", ("mpa",)),
    "Pa": ("pressure", ("pascal",)),
    "inH2O": ("pressure", ("in H2O", "inWC", '"H2O')),
    "°C": ("temperature", ("degC", "deg C", "C", "℃", "celsius", "° C", "ºC")),
    "°F": ("temperature", ("degF", "deg F", "F", "℉", "fahrenheit", "° F", "ºF")),
    "K": ("temperature", ("kelvin",)),
    "mm/s": ("vibration", ("mm/sec", "mm s-1")),
    "in/s": ("vibration", ("ips", "in/sec")),
    "g": ("acceleration", ("gn", "g-force")),
    "m/s²": ("acceleration", ("m/s2", "m/s^2")),
    "µm": ("displacement", ("um", "micron", "microns", "μm")),
    "mm": ("displacement", ("millimetre", "millimeter")),
    "RPM": ("speed", ("rpm", "r/min", "1/min", "min-1")),
    "N·m": ("torque", ("Nm", "N.m", "N m", "N-m")),
    "lbf": ("force", ("lb-f",)),
    "N": ("force", ("newton",)),
    "kN": ("force", ()),
    "A": ("current", ("amp", "amps", "ampere")),
    "mA": ("current", ("milliamp", "milliamps")),
    "V": ("voltage", ("volt", "volts", "VDC", "Vdc", "VAC", "Vac")),
    "mV": ("voltage", ("millivolt",)),
    "kV": ("voltage", ()),
    "Hz": ("frequency", ("hertz",)),
    "kHz": ("frequency", ()),
    "W": ("power", ("watt", "watts")),
    "kW": ("power", ()),
    "Ω": ("resistance", ("ohm", "ohms", "Ohm")),
    "µF": ("capacitance", ("uF", "μF")),
    "mH": ("inductance", ()),
    "L/min": ("flow", ("l/min", "lpm", "LPM")),
    "m³/h": ("flow", ("m3/h", "m3/hr", "m^3/h", "cmh")),
    "gpm": ("flow", ("GPM", "gal/min", "US gpm")),
    "kg/h": ("flow", ()),
    "cSt": ("viscosity", ("centistokes", "mm2/s", "mm²/s")),
    "cP": ("viscosity", ("centipoise", "mPa·s", "mPa.s")),
    "g/cm³": ("density", ("g/cm3", "g/cc")),
    "kg/m³": ("density", ("kg/m3",)),
    "%RH": ("humidity", ("% RH", "%rh", "RH%", "% r.h.")),
    "ppm": ("concentration", ("PPM",)),
    "dB": ("sound", ("dBA", "dB(A)")),
    "lux": ("light", ("lx",)),
    "m": ("level", ("metre", "meter")),
    "%": ("percent", ("percent", "% FS", "%FS")),
    "ratio": ("ratio", ()),
}

QUANTITY_CATEGORY: dict[str, Category] = {
    "pressure": Category.FLUID,
    "flow": Category.FLUID,
    "viscosity": Category.FLUID,
    "density": Category.FLUID,
    "level": Category.FLUID,
    "temperature": Category.THERMAL,
    "power": Category.ELECTRICAL,
    "vibration": Category.MECHANICAL,
    "acceleration": Category.MECHANICAL,
    "displacement": Category.MECHANICAL,
    "speed": Category.MECHANICAL,
    "torque": Category.MECHANICAL,
    "force": Category.MECHANICAL,
    "current": Category.ELECTRICAL,
    "voltage": Category.ELECTRICAL,
    "frequency": Category.ELECTRICAL,
    "resistance": Category.ELECTRICAL,
    "capacitance": Category.ELECTRICAL,
    "inductance": Category.ELECTRICAL,
    "humidity": Category.ENVIRONMENTAL,
    "concentration": Category.ENVIRONMENTAL,
    "sound": Category.ENVIRONMENTAL,
    "light": Category.ENVIRONMENTAL,
}

_EXACT: dict[str, str] = {}
_FOLDED: dict[str, str] = {}
for _canonical, (_quantity, _aliases) in _UNITS.items():
    for _spelling in (_canonical, *_aliases):
        _EXACT[_spelling] = _canonical
        _FOLDED.setdefault(_spelling.lower(), _canonical)

KNOWN_UNITS: tuple[str, ...] = tuple(_UNITS)


def normalise_unit(text: str) -> str | None:
    """The canonical spelling of ``text``, or None when it is no unit we know."""
    cleaned = re.sub(r"\s+", " ", text.strip().replace("\u00a0", " "))
    if cleaned in _EXACT:
        return _EXACT[cleaned]
    return _FOLDED.get(cleaned.lower())


def quantity_of(unit: str) -> str | None:
    entry = _UNITS.get(unit)
    return entry[0] if entry else None


def category_of_unit(unit: str) -> Category | None:
    quantity = quantity_of(unit)
    return QUANTITY_CATEGORY.get(quantity) if quantity else None
