"""C-MAPSS files, windows and the literature's RUL metrics. numpy only.

The NASA files are space-separated: unit, cycle, 3 operational settings, 21 sensors, one row per
cycle. A training unit runs to failure (its last cycle has RUL 0); a test unit stops some cycles
before failure and ``RUL_FD00x.txt`` gives, line i, the remaining cycles of test unit i after its
last row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SETTINGS = ["setting_1", "setting_2", "setting_3"]
SENSORS = [f"s{i}" for i in range(1, 22)]
COLUMNS = ["unit", "cycle", *SETTINGS, *SENSORS]
# FD001 runs at one operating condition; these sensors (and the settings) do not move with
# wear there (constant or nearly so), so they only add noise to the model.
FD001_CONSTANT = {"s1", "s5", "s6", "s10", "s16", "s18", "s19"}
FD001_FEATURES = [s for s in SENSORS if s not in FD001_CONSTANT]

# The published FD001 test set: every unit shows at least 31 cycles and its true RUL lies in
# [7, 145]. The held-out split below draws its cuts in the same ranges.
MIN_OBSERVED = 31
TEST_RUL_RANGE = (7, 145)


@dataclass
class Unit:
    unit: int
    values: np.ndarray  # (cycles, 24) settings + sensors, in COLUMNS[2:] order
    cycles: np.ndarray  # (cycles,)

    def features(self, names: Sequence[str]) -> np.ndarray:
        """Columns by name; ``cycle`` is the unit's age (cycles since it entered service)."""
        cols = []
        for n in names:
            if n == "cycle":
                cols.append(self.cycles.astype(np.float64))
            elif n in COLUMNS[2:]:
                cols.append(self.values[:, COLUMNS.index(n) - 2])
            else:
                raise ValueError(f"features: {n!r} is not a C-MAPSS column")
        return np.column_stack(cols)


def read_units(path: Path | str) -> list[Unit]:
    """The units of one C-MAPSS file, in unit order, rows in cycle order."""
    data = np.loadtxt(path, ndmin=2)
    if data.shape[1] != len(COLUMNS):
        raise ValueError(
            f"{path}: {data.shape[1]} columns, a C-MAPSS file has {len(COLUMNS)} "
            "(unit, cycle, 3 settings, 21 sensors)"
        )
    units = []
    for u in np.unique(data[:, 0]).astype(int):
        rows = data[data[:, 0] == u]
        rows = rows[np.argsort(rows[:, 1])]
        units.append(Unit(int(u), rows[:, 2:], rows[:, 1].astype(int)))
    return units


def read_rul(path: Path | str) -> np.ndarray:
    """True remaining cycles of each test unit (line i = unit i)."""
    return np.atleast_1d(np.loadtxt(path)).astype(np.float64)


def write_units(path: Path, units: Sequence[Unit]) -> None:
    with path.open("w") as fh:
        for u in units:
            for cycle, row in zip(u.cycles, u.values, strict=True):
                values = " ".join(f"{v:.6g}" for v in row)
                fh.write(f"{u.unit} {cycle} {values}\n")


def make_holdout(
    train_path: Path | str,
    out_dir: Path | str,
    n_test: int = 30,
    seed: int = 0,
    name: str = "FD001",
    fold: int | None = None,
) -> Path:
    """Build a validation set from a run-to-failure file the way NASA built the test set:
    ``n_test`` whole units are held out and each is cut at a random cycle. Writes
    ``train_<name>.txt`` (the other units, whole), ``test_<name>.txt`` (the cut units,
    renumbered 1..n) and ``RUL_<name>.txt`` (their true remaining cycles) into ``out_dir``,
    in the standard format. The cut keeps at least ``MIN_OBSERVED`` cycles and a true RUL in
    ``TEST_RUL_RANGE`` (where the published test set lies) whenever the unit is long enough.

    With ``fold`` (0-based), the units are shuffled by ``seed`` and dealt into consecutive
    blocks of ``n_test``; block ``fold`` is held out, so folds 0..k-1 of one seed hold out
    disjoint units (cross-validation over engines)."""
    units = read_units(train_path)
    if not 0 < n_test < len(units):
        raise ValueError(f"n_test: {n_test} must be between 1 and {len(units) - 1}")
    rng = np.random.default_rng(seed)
    if fold is None:
        held = set(rng.choice(len(units), size=n_test, replace=False).tolist())
    else:
        order = rng.permutation(len(units))
        held = set(order[fold * n_test : (fold + 1) * n_test].tolist())
        if not held or len(held) == len(units):
            raise ValueError(f"fold: {fold} holds out {len(held)} of {len(units)} units")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = [u for i, u in enumerate(units) if i not in held]
    test, ruls = [], []
    for new_id, i in enumerate(sorted(held), start=1):
        u = units[i]
        total = len(u.cycles)
        lo = TEST_RUL_RANGE[0]
        hi = max(lo, min(TEST_RUL_RANGE[1], total - MIN_OBSERVED))
        rul = int(rng.integers(lo, hi + 1))
        keep = max(1, total - rul)
        test.append(Unit(new_id, u.values[:keep], u.cycles[:keep]))
        # The last training row has RUL 0, so after row ``keep - 1`` there are
        # ``total - keep`` cycles left.
        ruls.append(total - keep)
    write_units(out / f"train_{name}.txt", train)
    write_units(out / f"test_{name}.txt", test)
    (out / f"RUL_{name}.txt").write_text("".join(f"{r}\n" for r in ruls))
    return out


def countdown(n: int) -> np.ndarray:
    """Remaining cycles of each row of a run to failure: n-1, ..., 0."""
    return np.arange(n - 1, -1, -1, dtype=np.float64)


def last_window(history: np.ndarray, length: int) -> np.ndarray:
    """The last ``length`` rows of a history ``(n, d)``; a shorter history is padded in front
    with its first row (a machine just started looks like it has been steady)."""
    h = np.asarray(history, dtype=np.float64)
    if h.ndim != 2 or len(h) == 0:
        raise ValueError(f"history: shape {h.shape}, expected (rows >= 1, sensors)")
    if len(h) >= length:
        return h[-length:]
    return np.concatenate([np.repeat(h[:1], length - len(h), axis=0), h])


def all_windows(history: np.ndarray, length: int) -> np.ndarray:
    """One window ending at every row of ``history`` (the first ones padded like
    ``last_window``): ``(n, length, d)``."""
    h = np.asarray(history, dtype=np.float64)
    padded = np.concatenate([np.repeat(h[:1], length - 1, axis=0), h])
    view = np.lib.stride_tricks.sliding_window_view(padded, length, axis=0)
    return np.ascontiguousarray(view.transpose(0, 2, 1))


def rmse(predicted: np.ndarray, true: np.ndarray) -> float:
    d = np.asarray(predicted, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    return float(np.sqrt(np.mean(d * d)))


def nasa_score(predicted: np.ndarray, true: np.ndarray) -> float:
    """Saxena et al. (2008): late predictions (d > 0) cost more than early ones."""
    d = np.asarray(predicted, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    return float(np.sum(np.where(d < 0, np.exp(-d / 13.0) - 1.0, np.exp(d / 10.0) - 1.0)))


def coverage(low: np.ndarray, high: np.ndarray, true: np.ndarray) -> float:
    t = np.asarray(true, dtype=np.float64)
    return float(np.mean((np.asarray(low) <= t) & (t <= np.asarray(high))))
