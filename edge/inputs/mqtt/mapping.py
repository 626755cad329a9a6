"""What the MQTT and Sparkplug inputs share to turn a device's numbers into sensor values:
a JSONPath-style selector (a small documented subset), per-field scale/offset/unit, and
numeric strings.

The config models compile every path and unit with the same functions the runtime uses,
so ``rig-edge check-config`` refuses exactly what the input would refuse on every message.

Selector subset (a JSONPath subset; no new dependency for six constructs)::

    $                       the whole payload (also "." and "", for old configs)
    $.a.b   a.b             keys (the leading "$." is optional)
    a[0]    $[2]            an array element (negative counts from the end)
    a['key with.dots']      a key in brackets (single or double quotes)
    a[?(@.n=='temp')].v     the first array element whose key n equals the literal
                            (a quoted string or a number)

Not supported (refused with the position): wildcards, slices, recursive descent, filter
expressions other than ``@.key == literal``, functions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import Field, model_validator

from shared.configtypes import StrictModel
from shared.units import sensor_converter


class PathError(ValueError):
    """A selector outside the supported subset."""


class SelectError(LookupError):
    """A payload that does not have what a selector asks for (the field is absent)."""


@dataclass(frozen=True, slots=True)
class Step:
    kind: str  # "key" | "index" | "filter"
    key: str = ""
    index: int = 0
    literal: str | float | None = None


@dataclass(frozen=True, slots=True)
class Selector:
    text: str
    steps: tuple[Step, ...]

    @property
    def is_root(self) -> bool:
        return not self.steps

    def top_key(self) -> str | None:
        """The first key when the selector is one key deep (``ts``, ``$.ts``)."""
        if len(self.steps) == 1 and self.steps[0].kind == "key":
            return self.steps[0].key
        return None

    def select(self, doc: Any) -> Any:
        """The selected value; SelectError when the payload does not have it."""
        for step in self.steps:
            if step.kind == "key":
                if not isinstance(doc, dict) or step.key not in doc:
                    raise SelectError(f"payload has no {self.text!r}")
                doc = doc[step.key]
            elif step.kind == "index":
                if not isinstance(doc, list) or not -len(doc) <= step.index < len(doc):
                    raise SelectError(f"payload has no {self.text!r} (no element {step.index})")
                doc = doc[step.index]
            else:
                if not isinstance(doc, list):
                    raise SelectError(f"payload has no {self.text!r} (not an array)")
                for element in doc:
                    if isinstance(element, dict) and _equal(element.get(step.key), step.literal):
                        doc = element
                        break
                else:
                    raise SelectError(f"payload has no {self.text!r} (no element matches)")
        return doc


def _equal(value: Any, literal: str | float | None) -> bool:
    if isinstance(literal, str):
        return value == literal
    return not isinstance(value, bool) and isinstance(value, int | float) and value == literal


_DOT_KEY = re.compile(r"[^.\[\]]+")
_INDEX = re.compile(r"\[\s*(-?\d+)\s*\]")
_QUOTED = re.compile(r"""\[\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")\s*\]""")
_FILTER = re.compile(
    r"""\[\?\(\s*@\.([A-Za-z_][A-Za-z0-9_\-]*)\s*==\s*"""
    r"""(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"|(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?))"""
    r"""\s*\)\]"""
)


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def compile_path(text: str) -> Selector:
    """Parse a selector of the supported subset; PathError names the position."""
    if text in ("", ".", "$"):
        return Selector(text, ())
    pos = 0
    if text.startswith("$"):
        pos = 1
    steps: list[Step] = []
    first = True
    while pos < len(text):
        if text.startswith("[", pos):
            if match := _INDEX.match(text, pos):
                steps.append(Step("index", index=int(match.group(1))))
            elif match := _QUOTED.match(text, pos):
                raw = match.group(1) if match.group(1) is not None else match.group(2)
                steps.append(Step("key", key=_unescape(raw)))
            elif match := _FILTER.match(text, pos):
                if match.group(4) is not None:
                    literal: str | float = float(match.group(4))
                else:
                    raw = match.group(2) if match.group(2) is not None else match.group(3)
                    literal = _unescape(raw)
                steps.append(Step("filter", key=match.group(1), literal=literal))
            else:
                raise PathError(
                    f"{text!r}: unsupported bracket at position {pos} (supported: [0], "
                    "['key'], [?(@.key=='value')])"
                )
            pos = match.end()
        elif text[pos] == "." or (first and pos == 0):
            if text[pos] == ".":
                pos += 1
            key_match = _DOT_KEY.match(text, pos)
            if not key_match:
                raise PathError(f"{text!r}: a key is missing at position {pos}")
            key = key_match.group(0)
            if "*" in key:
                raise PathError(f"{text!r}: wildcards are not supported (position {pos})")
            steps.append(Step("key", key=key))
            pos = key_match.end()
        else:
            raise PathError(f"{text!r}: unexpected {text[pos]!r} at position {pos}")
        first = False
        if pos < len(text) and text[pos] == "." and pos + 1 == len(text):
            raise PathError(f"{text!r}: ends with '.'")
    return Selector(text, tuple(steps))


def check_path(text: str | None) -> str | None:
    """For config validators: the text when it compiles, else ValueError naming the problem."""
    if text is not None:
        compile_path(text)
    return text


# -- numbers ------------------------------------------------------------------------------

_NUMERIC = re.compile(r"\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*")


def number_from(value: Any, *, numeric_strings: bool) -> Any:
    """``value`` with a numeric string turned into a float when ``numeric_strings`` (other
    values are returned unchanged for the caller's type check). Only decimal notation:
    "0x1F", "inf", "nan" and "1_000" stay strings."""
    if numeric_strings and isinstance(value, str) and _NUMERIC.fullmatch(value):
        return float(value)
    return value


# -- scale, offset and unit ---------------------------------------------------------------


def unit_converter(sensor: str, unit: str | None) -> Callable[[float], float] | None:
    """How a value in ``unit`` becomes a value in the catalog unit of ``sensor`` (None: no
    conversion), by ``shared.units``. A custom sensor has no catalog unit: its ``unit`` must
    be a known unit and documents the value. ValueError (``UnitError``) names the unit and
    the sensor when it cannot be converted, so check-config refuses what the runtime could
    not do."""
    if unit is None:
        return None
    convert = sensor_converter(sensor, unit)
    if convert(0.0) == 0.0 and convert(1.0) == 1.0:
        return None  # the catalog unit itself (or a custom sensor's)
    return convert


class Scaling(StrictModel):
    """``value * scale + offset``, in ``unit`` (converted to the catalog unit of a core
    sensor when it differs)."""

    scale: float = Field(default=1.0, allow_inf_nan=False)
    offset: float = Field(default=0.0, allow_inf_nan=False)
    unit: str | None = Field(default=None, min_length=1, max_length=32)

    def is_identity(self) -> bool:
        return self.scale == 1.0 and self.offset == 0.0 and self.unit is None

    def for_sensor(self, sensor: str) -> Callable[[float], float]:
        """The transform for ``sensor`` (ValueError when its unit cannot be converted)."""
        convert = unit_converter(sensor, self.unit)
        scale, offset = self.scale, self.offset
        if convert is None:
            return lambda value: value * scale + offset
        return lambda value: convert(value * scale + offset)


class FieldMap(Scaling):
    """One field: where it is in the payload and how its number becomes the sensor's."""

    path: str = Field(min_length=1)

    @model_validator(mode="after")
    def _path(self) -> FieldMap:
        check_path(self.path)
        return self
