"""``rig-edge import-map FILE.csv``: the register map a PLC programmer already has, as the
``inputs: modbus:`` YAML of the edge.

The CSV layout is documented in README.md beside this file: a header row naming the columns
(case-insensitive, in any order, ``,`` or ``;`` separated; lines starting with ``#`` are
comments), ``tag`` and ``address`` required, ``sensor``, ``data_type``, ``length``, ``bit``,
``scale``, ``offset``, ``unit``, ``byte_order``, ``word_order``, ``role``, ``machine_id`` and
``unit_id`` optional. Addresses are Modicon numbers (``40011``; ``40003.1`` is bit 1) unless
``--notation offset``; data types are IEC 61131 names (``REAL``, ``INT``, ``UDINT``, ``BOOL``,
``STRING``...), ``BCD``/``BCD32`` or the edge's own (``float32``).
Anything else (``description``, ``comment``) is ignored. Every row is checked as the config
loader checks it, and an error names the CSV line.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from edge.inputs.modbus.config import ModbusInputConfig, modicon_address

_IEC_TYPES = {
    "bool": "bool",
    "int": "int16",
    "sint": "int16",
    "uint": "uint16",
    "usint": "uint16",
    "word": "uint16",
    "dint": "int32",
    "udint": "uint32",
    "dword": "uint32",
    "lint": "int64",
    "ulint": "uint64",
    "lword": "uint64",
    "real": "float32",
    "float": "float32",
    "lreal": "float64",
    "double": "float64",
    "string": "string",
    "bcd": "bcd16",
    "bcd16": "bcd16",
    "bcd32": "bcd32",
    **{t: t for t in ("int16", "uint16", "int32", "uint32", "float32", "float64", "int64")},
    "uint64": "uint64",
}
_COLUMNS = {
    "tag": "tag",
    "tag_name": "tag",
    "name": "tag",
    "sensor": "sensor",
    "address": "address",
    "modbus_address": "address",
    "register": "address",
    "data_type": "type",
    "datatype": "type",
    "type": "type",
    "length": "length",
    "string_length": "length",
    "bit": "bit",
    "scale": "scale",
    "gain": "scale",
    "offset": "offset",
    "unit": "unit",
    "units": "unit",
    "eng_unit": "unit",
    "engineering_unit": "unit",
    "byte_order": "byte_order",
    "word_order": "word_order",
    "role": "role",
    "machine_id": "machine_id",
    "machine": "machine_id",
    "unit_id": "unit_id",
    "slave_id": "unit_id",
    "device_id": "unit_id",
}


class MapImportError(ValueError):
    """A CSV that cannot become a register map; the message names the line and column."""


def sensor_name(tag: str) -> str:
    """``Bearing Temp`` -> ``bearing_temp``; ``CoolantTemp`` -> ``coolant_temp``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", tag.strip())
    return re.sub(r"[^a-z0-9]+", "_", spaced.lower()).strip("_")


def _rows(text: str) -> list[tuple[int, dict[str, str]]]:
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    lines = [(n, line) for n, line in lines if not line.lstrip().startswith("#")]
    if not lines:
        raise MapImportError("the CSV has no header row")
    delimiter = ";" if lines[0][1].count(";") > lines[0][1].count(",") else ","
    reader = csv.reader(io.StringIO("\n".join(line for _, line in lines)), delimiter=delimiter)
    parsed = list(reader)
    header = [re.sub(r"[\s\-]+", "_", h.strip().lower()) for h in parsed[0]]
    columns = [_COLUMNS.get(h) for h in header]
    for needed in ("tag", "address"):
        if needed not in columns:
            raise MapImportError(
                f"line {lines[0][0]}: the header has no {needed!r} column (columns: "
                f"{', '.join(parsed[0])})"
            )
    out = []
    for (number, _), values in zip(lines[1:], parsed[1:], strict=True):
        row = {c: v.strip() for c, v in zip(columns, values, strict=False) if c and v.strip()}
        out.append((number, row))
    return out


def _number(row: dict[str, str], key: str, line: int) -> float | None:
    if key not in row:
        return None
    try:
        return float(row[key])
    except ValueError:
        raise MapImportError(f"line {line}: {key} {row[key]!r} is not a number") from None


def csv_to_devices(
    text: str,
    *,
    machine_id: str | None = None,
    unit_id: int = 1,
    notation: str = "modicon",
    poll_interval_s: float | None = None,
) -> list[dict[str, Any]]:
    """The ``devices:`` list of a Modbus input from the CSV text."""
    devices: dict[tuple[str, int], dict[str, Any]] = {}
    for line, row in _rows(text):
        machine = row.get("machine_id", machine_id)
        if not machine:
            raise MapImportError(f"line {line}: no machine_id column and no --machine-id given")
        unit = int(_number(row, "unit_id", line) or unit_id)
        device = devices.setdefault(
            (machine, unit),
            {"machine_id": machine, "unit_id": unit, "address_notation": notation, "fields": []},
        )
        if poll_interval_s is not None:
            device["poll_interval_s"] = poll_interval_s
        address_text = row["address"]
        bit: int | None = None
        if "." in address_text:  # 40003.1: bit 1 of holding register 40003
            address_text, _, bit_text = address_text.partition(".")
            if not bit_text.isdigit():
                raise MapImportError(
                    f"line {line}: address {row['address']!r}: bit is not a number"
                )
            bit = int(bit_text)
        if "bit" in row:
            bit = int(_number(row, "bit", line) or 0)
        address: int | str = address_text
        if notation == "modicon":
            try:
                modicon_address(address_text)
            except ValueError as exc:
                raise MapImportError(f"line {line}: {exc} (or use --notation offset)") from None
        if notation == "offset":
            if not address_text.isdigit():
                raise MapImportError(f"line {line}: address {address_text!r} is not a number")
            address = int(address_text)
        entry: dict[str, Any] = {"address": address}
        type_text = row.get("type", "").lower()
        data_type = _IEC_TYPES.get(type_text) if type_text else None
        if type_text and data_type is None:
            raise MapImportError(
                f"line {line}: data type {row['type']!r} is not one of "
                f"{', '.join(sorted(_IEC_TYPES))}"
            )
        role = row.get("role", "value").lower()
        if role in ("sample_counter", "timestamp"):
            if data_type is not None:
                entry["type"] = data_type
            device[role] = entry
            continue
        if role != "value":
            raise MapImportError(
                f"line {line}: role {row['role']!r}: value, sample_counter or timestamp"
            )
        name = sensor_name(row.get("sensor") or row["tag"])
        entry = {"name": name, **entry}
        if bit is not None:
            entry["bit"] = bit
            if data_type not in (None, "bool"):
                entry["type"] = data_type
        elif data_type == "string":
            length = int(_number(row, "length", line) or 0)
            if length <= 0:
                raise MapImportError(f"line {line}: a STRING needs its length in characters")
            entry.update(type="string", length=(length + 1) // 2)
        elif data_type is not None and not (data_type == "bool" and address_text[:1] in "01"):
            entry["type"] = data_type
        for key in ("scale", "offset"):
            value = _number(row, key, line)
            if value is not None and value != (1.0 if key == "scale" else 0.0):
                entry[key] = value
        for key in ("unit", "byte_order", "word_order"):
            if key in row:
                entry[key] = row[key]
        device["fields"].append((line, entry))
    result = []
    for device in devices.values():
        lines = [line for line, _ in device["fields"]]
        device["fields"] = [entry for _, entry in device["fields"]]
        _check_device(device, lines)
        result.append(device)
    if not result:
        raise MapImportError("the CSV has no rows")
    return result


def _check_device(device: dict[str, Any], lines: list[int]) -> None:
    """Validated as the config loader will; a field's error names its CSV line."""
    try:
        ModbusInputConfig.model_validate({"host": "check", "devices": [device]})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = error["loc"]
            line = ""
            if len(where) > 3 and where[2] == "fields" and isinstance(where[3], int):
                line = f"line {lines[where[3]]}: "
            problems.append(f"{line}{error['msg'].removeprefix('Value error, ')}")
        raise MapImportError(f"machine {device['machine_id']}: " + "; ".join(problems)) from None


def import_map(
    path: Path,
    *,
    name: str,
    host: str | None,
    port: int,
    machine_id: str | None,
    unit_id: int,
    notation: str,
    poll_interval_s: float | None = None,
    base: dict[str, Any] | None = None,
) -> str:
    """The YAML text: ``base`` (an edge config) with this input added (replacing an input of
    the same name), or an ``inputs: modbus:`` section alone."""
    devices = csv_to_devices(
        path.read_text(encoding="utf-8-sig"),
        machine_id=machine_id,
        unit_id=unit_id,
        notation=notation,
        poll_interval_s=poll_interval_s,
    )
    entry: dict[str, Any] = {"name": name, "host": host or "192.0.2.10", "port": port}
    entry["devices"] = devices
    if base is None:
        doc: dict[str, Any] = {"inputs": {"modbus": [entry]}}
    else:
        doc = dict(base)
        inputs = dict(doc.get("inputs") or {})
        others = [e for e in inputs.get("modbus") or [] if e.get("name") != name]
        inputs["modbus"] = [*others, entry]
        doc["inputs"] = inputs
    header = f"# Imported by rig-edge import-map from {path.name}"
    if host is None:
        header += "; set host: to the PLC's address"
    return header + "\n" + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("csv", type=Path, help="the register map as CSV (layout: README.md)")
    parser.add_argument("--name", default="plc", help="the input's name (default plc)")
    parser.add_argument("--host", help="the PLC's address (else a placeholder to edit)")
    parser.add_argument("--port", type=int, default=502)
    parser.add_argument("--machine-id", help="machine id of rows without a machine_id column")
    parser.add_argument("--unit-id", type=int, default=1, help="unit id of rows without one")
    parser.add_argument(
        "--notation",
        choices=["modicon", "offset"],
        default="modicon",
        help="addresses in the CSV: modicon (40011 = holding offset 10, default) or offset",
    )
    parser.add_argument("--poll-interval", type=float, help="seconds between polls")
    parser.add_argument(
        "--base", type=Path, help="an edge config to add the input to (the output is complete)"
    )
    parser.add_argument("-o", "--output", type=Path, help="write here (default: stdout)")


def from_args(args: argparse.Namespace) -> str:
    """The YAML text ``rig-edge import-map`` writes; ``MapImportError`` naming the CSV line
    (or the base config) when it cannot."""
    base = None
    if args.base is not None:
        try:
            base = yaml.safe_load(args.base.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise MapImportError(f"{args.base}: {exc}") from None
        if not isinstance(base, dict):
            raise MapImportError(f"{args.base}: not a YAML mapping")
    try:
        return import_map(
            args.csv,
            name=args.name,
            host=args.host,
            port=args.port,
            machine_id=args.machine_id,
            unit_id=args.unit_id,
            notation=args.notation,
            poll_interval_s=args.poll_interval,
            base=base,
        )
    except OSError as exc:
        raise MapImportError(str(exc)) from None
