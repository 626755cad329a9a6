"""The offline spec-sheet reader: no model, deterministic, and good enough that a typical
transmitter datasheet gives a usable proposal.

It reads "label: value unit" lines and table rows: measuring ranges ("0 … 5000 psi",
"-40 to 125 °C", "0-10 bar"), alarm values, accuracy ("±0.25 % FS") and output signals
("4–20 mA", "0–10 V"). Ranges are told apart by their label: a measuring range makes a
sensor, an operating temperature or supply voltage does not (unless nothing else does), an
output signal never does. A CSV with one sensor per row and a JSON in the manifest's shape
(``docs/manifest.md`` §2.2) are read as they are. Every value carries the page, line and
text it came from.

Text in the file that addresses an AI model ("ignore previous instructions") is data here
like everything else; it is only reported, as a warning on the proposal.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from cloud.assistant.sources import Line, SourceDocument
from cloud.assistant.units import category_of_unit, normalise_unit, quantity_of
from shared.catalog import SENSOR_INDEX, Category
from shared.message import CUSTOM_NAME_RE

MAX_SENSORS = 8
_NUM = r"[-+−–]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?"
_SEP = r"\s*(?:…|\.{2,3}|\bto\b|–|—|-|~|\bbis\b)\s*"
_RANGE_RE = re.compile(
    rf"(?P<lo>{_NUM}){_SEP}(?P<hi>{_NUM})\s*(?P<unit>[^\s,;()\[\]]*(?:\s[A-Za-z2]+)?)"
)
# "-40 °C to +125 °C": the unit written after both ends.
_RANGE_TWICE_RE = re.compile(
    rf"(?P<lo>{_NUM})\s*(?P<u1>[^\s\d,;()]{{1,8}})\s*(?:…|\.{{2,3}}|\bto\b|–|—|~)\s*"
    rf"(?P<hi>{_NUM})\s*(?P<unit>[^\s,;()\[\]]+)"
)
_SINGLE_RE = re.compile(rf"(?P<v>{_NUM})\s*(?P<unit>[^\s,;()\[\]]*(?:\s[A-Za-z2]+)?)")
_LABEL_UNIT_RE = re.compile(r"[(\[]\s*([^()\[\]]{1,12})\s*[)\]]")
_OUTPUT_RE = re.compile(
    r"\b(?:4\s*(?:-|–|…|\.\.\.?|to)\s*20\s*mA|0\s*(?:-|–|…|\.\.\.?|to)\s*(?:10|5)\s*V(?:DC)?"
    r"|1\s*(?:-|–|…|\.\.\.?|to)\s*5\s*V(?:DC)?|0\s*(?:-|–|…|\.\.\.?|to)\s*20\s*mA"
    r"|HART|IO-Link|Modbus(?: RTU| TCP)?|RS-?485)\b",
    re.IGNORECASE,
)
_ACCURACY_RE = re.compile(
    rf"(?:±|\+/-|\+-)\s*{_NUM}\s*(?:%\s*(?:FS|BFSL|of span|of reading|URL)?|[^\s,;]+)?",
    re.IGNORECASE,
)
_INJECTION_RE = re.compile(
    r"\b(?:ignore|disregard|forget|override)\b.{0,40}\b(?:instructions?|prompts?|rules|above|previous)\b"
    r"|\byou are (?:now )?(?:an?|the) \w+|\bsystem prompt\b|\bdo not (?:validate|review|ask)\b"
    r"|\b(?:auto[- ]?confirm|confirm (?:it|this|them) (?:automatically|without))\b"
    r"|\bas an ai\b|<\s*/?\s*(?:system|assistant|instructions?)\s*>",
    re.IGNORECASE,
)

_MEASURING = ("measuring", "measurement", "sensing", "range", "span", "full scale", "rated")
_NOT_MEASURING = (
    "operating",
    "ambient",
    "storage",
    "supply",
    "power",
    "proof",
    "burst",
    "overpressure",
    "over pressure",
    "overload",
    "media temp",
    "medium temp",
    "process temp",
    "compensated",
    "load",
    "insulation",
    "response",
    "humidity",
    "output",
    "signal",
)
_ACCURACY_WORDS = ("accuracy", "precision", "non-linearity", "linearity", "uncertainty", "error")
_OUTPUT_WORDS = ("output", "signal", "interface")
_LOW_ALARM = ("low alarm", "alarm low", "low threshold", "trip low", "low limit", "alarm (low)")
_HIGH_ALARM = (
    "high alarm",
    "alarm high",
    "high threshold",
    "trip high",
    "high limit",
    "alarm (high)",
)
_DEVICE_WORDS = ("transmitter", "sensor", "transducer", "probe", "gauge", "meter", "switch")
_FILLER = {
    "combined",
    "dual",
    "digital",
    "smart",
    "industrial",
    "series",
    "the",
    "a",
    "an",
    "datasheet",
    "data",
    "sheet",
    "product",
    "technical",
    "compact",
    "high",
    "precision",
    "performance",
    "of",
    "for",
}
_QUANTITY_NAMES = {
    "pressure": "pressure",
    "temperature": "temperature",
    "flow": "flow_rate",
    "vibration": "vibration",
    "acceleration": "acceleration",
    "displacement": "displacement",
    "speed": "speed",
    "torque": "torque",
    "force": "force",
    "current": "current",
    "voltage": "voltage",
    "frequency": "frequency",
    "power": "power",
    "resistance": "resistance",
    "humidity": "humidity",
    "concentration": "gas_concentration",
    "sound": "noise_level",
    "light": "light_intensity",
    "viscosity": "viscosity",
    "density": "density",
    "level": "level",
    "percent": "level",
}
_QUANTITY_WORDS = {
    "pressure": ("pressure",),
    "temperature": ("temperature", "temp"),
    "flow": ("flow",),
    "vibration": ("vibration",),
    "speed": ("speed", "rpm"),
    "level": ("level",),
}


@dataclass(frozen=True, slots=True)
class _Range:
    lo: float
    hi: float
    unit: str
    quantity: str
    priority: int
    line: Line


def provenance(line: Line, **extra: Any) -> dict[str, Any]:
    return {"page": line.page, "line": line.number, "text": line.text, **extra}


def number(text: str) -> float | None:
    cleaned = text.replace("−", "-").replace("–", "-").replace(",", "")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _unit(token: str, label: str) -> str | None:
    token = token.strip().rstrip(".:")
    for candidate in (token, token.split(" ")[0]):
        if candidate:
            unit = normalise_unit(candidate)
            if unit:
                return unit
    found = _LABEL_UNIT_RE.search(label)
    return normalise_unit(found.group(1)) if found else None


def _split(line: Line) -> tuple[str, str]:
    """(label, value): "Label: value", "Label<TAB>value", or the text before the first digit."""
    for sep in (":", "\t", " = "):
        if sep in line.text:
            label, _, value = line.text.partition(sep)
            if label.strip() and not re.search(r"\d\s*$", label):
                return label.strip().lower(), value.strip()
    match = re.search(r"[-+−±]?\d", line.text)
    if match and match.start() > 0:
        return line.text[: match.start()].strip().lower(), line.text[match.start() :].strip()
    return "", line.text


def _has(label: str, words: tuple[str, ...]) -> bool:
    return any(w in label for w in words)


def injection_warnings(doc: SourceDocument) -> list[str]:
    out = []
    for line in doc.lines:
        if _INJECTION_RE.search(line.text):
            out.append(
                f"page {line.page} line {line.number}: text addressed to an AI model "
                f"({line.text[:120]!r}) was treated as data, not as an instruction"
            )
    return out


def _ranges(doc: SourceDocument) -> list[_Range]:
    found: list[_Range] = []
    for line in doc.lines:
        label, value = _split(line)
        if _has(label, _OUTPUT_WORDS) or _has(label, _ACCURACY_WORDS):
            continue
        matches = list(_RANGE_TWICE_RE.finditer(value)) or list(_RANGE_RE.finditer(value))
        for match in matches:
            lo, hi = number(match.group("lo")), number(match.group("hi"))
            if lo is None or hi is None or lo >= hi:
                continue
            unit = _unit(match.group("unit"), label)
            quantity = quantity_of(unit) if unit else None
            if unit is None or quantity is None:
                continue
            signal = _OUTPUT_RE.match(match.group(0).strip()) or _has(
                line.text.lower(), _OUTPUT_WORDS
            )
            if signal and not _has(label, _MEASURING):
                continue  # a 4–20 mA / 0–10 V signal written without a label
            if _has(label, _NOT_MEASURING):
                priority = 1
            elif _has(label, _MEASURING):
                priority = 3
            else:
                priority = 2
            found.append(_Range(lo, hi, unit, quantity, priority, line))
    return found


def _title_words(doc: SourceDocument) -> list[str]:
    """The words naming the device in its title ("Hydraulic Pressure Transmitter HPT-5000"
    -> ["hydraulic", "pressure"]), from the first lines or a product/description field."""
    candidates = doc.lines[:15]
    for line in candidates:
        text = line.text
        label, value = _split(line)
        if label in {"product", "description", "device", "type", "sensor", "name"}:
            text = value
        # Model numbers ("HPT-5000", "Pt100") are not words of a sensor name.
        words = [w for w in re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", text.lower()) if w.isalpha()]
        for i, word in enumerate(words):
            if word in _DEVICE_WORDS and i > 0:
                picked = [w for w in words[:i] if w not in _FILLER and len(w) > 1]
                if picked:
                    return picked[-3:]
    return []


def _name(title: list[str], quantity: str, used: set[str]) -> str:
    base = _QUANTITY_NAMES.get(quantity, quantity)
    words = list(title)
    quantity_words = _QUANTITY_WORDS.get(quantity, (quantity,))
    if not any(w in quantity_words for w in words):
        # The title names another quantity (a combined transmitter) or none: keep its
        # qualifiers, this range's quantity.
        words = [w for w in words if not any(w in ws for ws in _QUANTITY_WORDS.values())]
        words.append(base)
    name = re.sub(r"[^a-z0-9_]", "", "_".join(words))[:56] or base
    if name[0].isdigit():
        name = f"s_{name}"
    if name in SENSOR_INDEX:
        name = f"{name}_aux"  # docs/manifest.md §3.2's own example: bearing_temp_aux
    candidate, n = name, 2
    while candidate in used:
        candidate, n = f"{name}_{n}", n + 1
    used.add(candidate)
    assert CUSTOM_NAME_RE.fullmatch(candidate), candidate
    return candidate


def _category(title: list[str], unit: str) -> Category | None:
    if "bearing" in title or "gearbox" in title:
        return Category.MECHANICAL
    if "ambient" in title or "room" in title:
        return Category.ENVIRONMENTAL
    return category_of_unit(unit)


def _rounded(value: float) -> float:
    return float(f"{value:.6g}")


def _labelled_value(
    doc: SourceDocument, words: tuple[str, ...], unit: str
) -> tuple[float, Line] | None:
    for line in doc.lines:
        label, value = _split(line)
        if not _has(label, words):
            continue
        match = _SINGLE_RE.search(value)
        if match is None:
            continue
        v = number(match.group("v"))
        got = _unit(match.group("unit"), label)
        if v is not None and (got is None or got == unit):
            return v, line
    return None


def _output_signal(doc: SourceDocument) -> tuple[str, Line] | None:
    labelled = None
    for line in doc.lines:
        label, _value = _split(line)
        match = _OUTPUT_RE.search(line.text)
        if match and _has(label, _OUTPUT_WORDS):
            return _clean_signal(match.group(0)), line
        if match and labelled is None and not _has(label, _MEASURING):
            labelled = (_clean_signal(match.group(0)), line)
    return labelled


def _clean_signal(text: str) -> str:
    return re.sub(r"\s*(?:-|–|…|\.\.\.?|to)\s*", "–", text.strip(), count=1)


def _accuracy(doc: SourceDocument) -> tuple[str, Line] | None:
    for line in doc.lines:
        label, value = _split(line)
        if _has(label, _ACCURACY_WORDS):
            match = _ACCURACY_RE.search(value)
            return (match.group(0).strip() if match else value[:60]), line
    return None


def from_text(doc: SourceDocument) -> list[dict[str, Any]]:
    ranges = _ranges(doc)
    if not ranges:
        return []
    best = max(r.priority for r in ranges)
    chosen: dict[str, _Range] = {}
    for r in ranges:
        if r.priority == best and r.quantity not in chosen:
            chosen[r.quantity] = r
    title = _title_words(doc)
    output = _output_signal(doc)
    accuracy = _accuracy(doc)
    used: set[str] = set()
    sensors = []
    for r in list(chosen.values())[:MAX_SENSORS]:
        prov: dict[str, Any] = {
            "min_range": provenance(r.line),
            "max_range": provenance(r.line),
            "unit": provenance(r.line),
        }
        sensor: dict[str, Any] = {
            "sensor_name": _name(title, r.quantity, used),
            "min_range": r.lo,
            "max_range": r.hi,
            "unit": r.unit,
            "category": None,
            "low_threshold": None,
            "high_threshold": None,
            "description": None,
            "accuracy": None,
            "output_signal": None,
        }
        category = _category(title, r.unit)
        if category is not None:
            sensor["category"] = category.value
            prov["category"] = provenance(r.line, rule=f"the unit {r.unit} measures {r.quantity}")
        title_line = next(
            (ln for ln in doc.lines[:15] if title and title[0] in ln.text.lower()), None
        )
        prov["sensor_name"] = (
            provenance(title_line, rule="named after the device title")
            if title_line
            else provenance(r.line, rule=f"named after the quantity ({r.quantity})")
        )
        if title_line:
            sensor["description"] = title_line.text[:200]
            prov["description"] = provenance(title_line)
        span = r.hi - r.lo
        low = _labelled_value(doc, _LOW_ALARM, r.unit)
        high = _labelled_value(doc, _HIGH_ALARM, r.unit)
        if low is not None:
            sensor["low_threshold"] = low[0]
            prov["low_threshold"] = provenance(low[1])
        else:
            sensor["low_threshold"] = _rounded(r.lo + 0.1 * span)
            prov["low_threshold"] = provenance(
                r.line,
                rule="10 % of the span above the range's low end (no alarm value in the file)",
            )
        if high is not None:
            sensor["high_threshold"] = high[0]
            prov["high_threshold"] = provenance(high[1])
        else:
            sensor["high_threshold"] = _rounded(r.hi - 0.1 * span)
            prov["high_threshold"] = provenance(
                r.line,
                rule="10 % of the span below the range's high end (no alarm value in the file)",
            )
        if output is not None:
            sensor["output_signal"] = output[0]
            prov["output_signal"] = provenance(output[1])
        if accuracy is not None:
            sensor["accuracy"] = accuracy[0]
            prov["accuracy"] = provenance(accuracy[1])
        sensor["provenance"] = prov
        sensors.append(sensor)
    return sensors


# -- tables ---------------------------------------------------------------------------------

_COLUMNS = {
    "sensor_name": ("sensor_name", "name", "sensor", "tag", "channel"),
    "min_range": ("min_range", "min", "range_min", "lower_range", "range min", "minimum", "lrv"),
    "max_range": ("max_range", "max", "range_max", "upper_range", "range max", "maximum", "urv"),
    "unit": ("unit", "units", "eng_unit", "engineering unit"),
    "low_threshold": ("low_threshold", "low", "alarm_low", "low alarm", "low_alarm"),
    "high_threshold": ("high_threshold", "high", "alarm_high", "high alarm", "high_alarm"),
    "category": ("category", "class", "group"),
    "accuracy": ("accuracy",),
    "output_signal": ("output_signal", "output", "signal"),
    "description": ("description", "desc"),
}
MANIFEST_KEYS = (
    "sensor_name",
    "min_range",
    "max_range",
    "unit",
    "low_threshold",
    "high_threshold",
    "category",
)


def _column(row: dict[str, str], field: str) -> str | None:
    for key in _COLUMNS[field]:
        if key in row and row[key] != "":
            return row[key]
    return None


def from_csv_table(doc: SourceDocument) -> list[dict[str, Any]] | None:
    """One sensor per row when the header names sensors and ranges; None otherwise (a
    "parameter, value, unit" sheet is read as text)."""
    if not doc.rows:
        return None
    header = set(doc.rows[0][1])
    if not any(k in header for k in _COLUMNS["sensor_name"]) or not any(
        k in header for k in _COLUMNS["max_range"]
    ):
        return None
    sensors = []
    lines = {ln.number: ln for ln in doc.lines}
    for number_, row in doc.rows[:MAX_SENSORS]:
        line = lines.get(number_) or Line(1, number_, ",".join(row.values()))
        sensor: dict[str, Any] = {}
        prov: dict[str, Any] = {}
        for field in (*MANIFEST_KEYS, "accuracy", "output_signal", "description"):
            raw = _column(row, field)
            if raw is None:
                sensor[field] = None
                continue
            if field in {"min_range", "max_range", "low_threshold", "high_threshold"}:
                sensor[field] = number(raw) if number(raw) is not None else raw
            else:
                sensor[field] = raw
            prov[field] = provenance(line)
        sensor["provenance"] = prov
        sensors.append(sensor)
    return sensors


def from_json(doc: SourceDocument) -> list[dict[str, Any]] | None:
    """The manifest's shape (one object, a list of them, or {"sensors": [...]}) as it is."""
    value = doc.document
    if isinstance(value, dict) and isinstance(value.get("sensors"), list):
        items = value["sensors"]
    elif isinstance(value, list):
        items = value
    else:
        items = [value]
    if not items or not all(isinstance(i, dict) and "sensor_name" in i for i in items):
        return None
    sensors = []
    for index, item in enumerate(items[:MAX_SENSORS]):
        prefix = f"sensors[{index}]." if len(items) > 1 or "sensors" in (value or {}) else ""
        sensor = {
            k: item.get(k) for k in (*MANIFEST_KEYS, "accuracy", "output_signal", "description")
        }
        sensor["provenance"] = {
            k: {"page": 1, "line": None, "text": f"{prefix}{k}: {json_text(item[k])}"}
            for k in sensor
            if k in item and item[k] is not None
        }
        sensors.append(sensor)
    return sensors


def json_text(value: Any) -> str:
    return "null" if value is None else str(value)


def csv_as_text(doc: SourceDocument) -> None:
    """A "parameter, value(s), unit" CSV as "parameter: lo to hi unit" lines for the text
    reader (line numbers kept)."""
    out = []
    for line in doc.lines:
        cells = [c.strip() for c in re.split(r"[,;\t]", line.text)]
        if len(cells) < 2:
            out.append(line)
            continue
        rest = cells[1:]
        nums = [i for i, c in enumerate(rest) if number(c) is not None]
        if len(nums) >= 2 and nums[1] == nums[0] + 1:
            rest[nums[0] : nums[1] + 1] = [f"{rest[nums[0]]} to {rest[nums[1]]}"]
        out.append(Line(line.page, line.number, f"{cells[0]}: {' '.join(c for c in rest if c)}"))
    doc.lines = out


def propose(doc: SourceDocument) -> list[dict[str, Any]]:
    """The offline proposal for ``doc`` (possibly no sensor: nothing recognisable)."""
    if doc.kind == "json":
        table = from_json(doc)
        if table is not None:
            return table
    if doc.kind == "csv":
        table = from_csv_table(doc)
        if table is not None:
            return table
        csv_as_text(doc)
    return from_text(doc)
