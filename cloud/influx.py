"""InfluxDB line protocol, parsed: what Telegraf's ``data_format = "influx"`` and many gateways
send. One job: text in, points (or a reason per line) out; what a point means for Rig Alpha
is decided by the ingest router.

    measurement[,tag=value...] field=value[,field=value...] [timestamp]

- Measurement: ``,`` and space escaped with a backslash; tag keys, tag values and field keys
  also escape ``=``. A backslash before any other character is a literal backslash.
- Field values: floats (``1``, ``-1.5``, ``1e3``), integers ``12i``, unsigned ``12u``,
  strings in double quotes (``\\"`` and ``\\\\`` escaped; they may span lines), booleans
  ``t T true True TRUE f F false False FALSE``. NaN and infinities have no syntax.
- Timestamp: an optional signed 64-bit integer in the request's precision.
- Blank lines and lines starting with ``#`` are skipped; each other line is a point or an
  error with the line number (1-based, where the point starts), so one bad line never
  hides the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FieldValue = float | int | str | bool

_INT64 = 2**63
_UINT64 = 2**64
_FLOAT_RE = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_INT_RE = re.compile(r"-?\d+")
_TRUE = frozenset({"t", "T", "true", "True", "TRUE"})
_FALSE = frozenset({"f", "F", "false", "False", "FALSE"})


@dataclass(frozen=True, slots=True)
class Point:
    """One parsed line. ``fields`` keeps the wire type: ``int`` for ``i``/``u`` values,
    ``float``, ``str``, ``bool``; ``timestamp`` None when the line has none."""

    line: int
    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    timestamp: int | None
    # The integer kinds, for messages: field name -> "integer" | "unsigned".
    integer_kinds: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LineError:
    """A line that is not line protocol: ``line`` number and what is wrong, where."""

    line: int
    problem: str


class _Syntax(Exception):
    pass


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def token(self, stops: str, what: str) -> str:
        """Up to an unescaped character of ``stops`` (or a newline / the end)."""
        text, out = self.text, []
        while self.pos < len(text):
            char = text[self.pos]
            if char == "\\" and self.pos + 1 < len(text) and text[self.pos + 1] in stops:
                out.append(text[self.pos + 1])
                self.pos += 2
                continue
            if char in stops or char == "\n":
                break
            out.append(char)
            self.pos += 1
        value = "".join(out)
        if not value:
            raise _Syntax(f"empty {what} at column {self._column()}")
        return value

    def expect(self, char: str, what: str) -> None:
        if self.peek() != char:
            found = repr(self.peek()) if self.peek() else "the end of the line"
            raise _Syntax(f"expected {what} at column {self._column()}, found {found}")
        self.pos += 1

    def string(self) -> str:
        """A quoted string field value; the opening quote is at ``pos``."""
        start_line, opening = self.line, self.pos
        self.pos += 1
        text, out = self.text, []
        while self.pos < len(text):
            char = text[self.pos]
            if char == "\\" and self.pos + 1 < len(text) and text[self.pos + 1] in '"\\':
                out.append(text[self.pos + 1])
                self.pos += 2
                continue
            if char == '"':
                self.pos += 1
                return "".join(out)
            if char == "\n":
                self.line += 1
            out.append(char)
            self.pos += 1
        # The line ends where the string would have: the next lines are read on their own.
        self.line, self.pos = start_line, opening
        raise _Syntax("unterminated string field value")

    def _column(self) -> int:
        return self.pos - self.text.rfind("\n", 0, self.pos)

    def skip_line(self) -> None:
        end = self.text.find("\n", self.pos)
        self.pos = len(self.text) if end < 0 else end


def parse(text: str) -> list[Point | LineError]:
    """Every data line of ``text`` as a ``Point`` or a ``LineError``, in order."""
    scanner = _Scanner(text)
    out: list[Point | LineError] = []
    while scanner.pos < len(text):
        while scanner.peek() in (" ", "\t", "\r"):
            scanner.pos += 1
        char = scanner.peek()
        if char == "":
            break
        if char == "\n":
            scanner.pos += 1
            scanner.line += 1
            continue
        start = scanner.line
        if char == "#":
            scanner.skip_line()
            continue
        try:
            out.append(_point(scanner, start))
        except _Syntax as exc:
            out.append(LineError(start, str(exc)))
            scanner.skip_line()
    return out


def _point(scanner: _Scanner, line: int) -> Point:
    measurement = scanner.token(", ", "measurement")
    tags: dict[str, str] = {}
    while scanner.peek() == ",":
        scanner.pos += 1
        key = scanner.token(",= ", "tag key")
        scanner.expect("=", f"'=' after tag key {key!r}")
        value = scanner.token(",= ", f"value of tag {key!r}")
        if key in tags:
            raise _Syntax(f"tag {key!r} appears twice")
        tags[key] = value
    scanner.expect(" ", "a space before the fields")
    while scanner.peek() == " ":
        scanner.pos += 1
    fields: dict[str, FieldValue] = {}
    kinds: dict[str, str] = {}
    while True:
        key = scanner.token(",= ", "field key")
        scanner.expect("=", f"'=' after field key {key!r}")
        if key in fields:
            raise _Syntax(f"field {key!r} appears twice")
        if scanner.peek() == '"':
            fields[key] = scanner.string()
        else:
            raw = _bare(scanner)
            fields[key] = _field_value(key, raw, kinds)
        if scanner.peek() != ",":
            break
        scanner.pos += 1
    timestamp: int | None = None
    if scanner.peek() == " ":
        while scanner.peek() == " ":
            scanner.pos += 1
        raw = _bare(scanner, allow_empty=True)
        if raw:
            if not _INT_RE.fullmatch(raw):
                raise _Syntax(f"timestamp {raw[:40]!r} is not an integer")
            # Bounded before int(): Python refuses to convert thousands of digits.
            timestamp = int(raw) if len(raw) <= 21 else _INT64
            if not -_INT64 <= timestamp < _INT64:
                raise _Syntax(f"timestamp {raw[:40]} exceeds 64 bits")
    while scanner.peek() in (" ", "\t", "\r"):
        scanner.pos += 1
    if scanner.peek() not in ("", "\n"):
        raise _Syntax(f"unexpected {scanner.peek()!r} after the timestamp")
    return Point(line, measurement, tags, fields, timestamp, kinds)


def _bare(scanner: _Scanner, *, allow_empty: bool = False) -> str:
    start = scanner.pos
    text = scanner.text
    while scanner.pos < len(text) and text[scanner.pos] not in ", \n":
        scanner.pos += 1
    raw = text[start : scanner.pos].rstrip("\r")
    if not raw and not allow_empty:
        raise _Syntax(f"empty field value at column {scanner._column()}")
    return raw


def _field_value(key: str, raw: str, kinds: dict[str, str]) -> FieldValue:
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    suffix = raw[-1]
    if suffix in "iu" and _INT_RE.fullmatch(raw[:-1]):
        number = int(raw[:-1]) if len(raw) <= 22 else _UINT64
        if suffix == "i" and not -_INT64 <= number < _INT64:
            raise _Syntax(f"field {key!r}: integer {raw[:40]} exceeds 64 bits")
        if suffix == "u" and not 0 <= number < _UINT64:
            raise _Syntax(f"field {key!r}: unsigned {raw[:40]} is outside 0..2^64-1")
        kinds[key] = "integer" if suffix == "i" else "unsigned"
        return number
    if _FLOAT_RE.fullmatch(raw):
        return float(raw)
    raise _Syntax(
        f"field {key!r}: {raw[:40]!r} is not a number, integer (i), unsigned (u), "
        "quoted string or boolean"
    )
