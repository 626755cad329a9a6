"""Replay of recorded data sets (SKAB, C-MAPSS, any CSV) as a simulated machine.

Each row becomes one sample, served in file order through every protocol. Mapped columns
replace the machine's simulated values exactly (as float32 in Modbus registers); unmapped
sensors keep their simulated values so the machine still looks whole to the edge.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from simulator.config import ReplaySpec

CMAPSS_COLUMNS = ["unit", "cycle", "setting_1", "setting_2", "setting_3"] + [
    f"s_{i}" for i in range(1, 22)
]


class ReplayError(ValueError):
    pass


def _float(path: Path, line: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ReplayError(f"{path}:{line}: column {column!r}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ReplayError(f"{path}:{line}: column {column!r}: {text!r} is not finite")
    return value


def load_rows(spec: ReplaySpec) -> list[dict[str, float]]:
    """The mapped columns of every row, in file order."""
    path = spec.file
    if not path.is_file():
        raise ReplayError(f"replay file {path} not found")
    rows: list[dict[str, float]] = []
    with path.open(newline="", encoding="utf-8") as handle:
        if spec.format == "cmapss":
            header = CMAPSS_COLUMNS
            reader = (line.split() for line in handle)
        else:
            reader = csv.reader(handle, delimiter=";" if spec.format == "skab" else ",")
            header = next(reader, None) or []
        missing = [c for c in spec.columns if c not in header]
        if missing:
            raise ReplayError(f"{path}: columns {missing} not in the file (it has {header})")
        index = {c: header.index(c) for c in spec.columns}
        unit_col = CMAPSS_COLUMNS.index("unit")
        for line_no, fields in enumerate(reader, start=2 if spec.format != "cmapss" else 1):
            if not fields:
                continue
            if (
                spec.format == "cmapss"
                and spec.cmapss_unit is not None
                and int(fields[unit_col]) != spec.cmapss_unit
            ):
                continue
            rows.append(
                {column: _float(path, line_no, column, fields[i]) for column, i in index.items()}
            )
    if not rows:
        raise ReplayError(f"{path}: no rows to replay")
    return rows


class Replayer:
    def __init__(self, spec: ReplaySpec) -> None:
        self.spec = spec
        self.rows = load_rows(spec)
        self.position = 0

    @property
    def finished(self) -> bool:
        return self.position >= len(self.rows) and not self.spec.loop

    def next_row(self) -> dict[str, float] | None:
        """Sensor -> value of the next row (None once a non-looping replay is done)."""
        if self.position >= len(self.rows):
            if not self.spec.loop:
                return None
            self.position = 0
        row = self.rows[self.position]
        self.position += 1
        return {self.spec.columns[column]: value for column, value in row.items()}
