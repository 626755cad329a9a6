"""Model evaluation on public benchmarks.

``python -m models.evaluate skab --data DIR`` runs the SKAB protocol (``DIR``/README.md of the
shared data): every labelled CSV under DIR alone; its first 400 rows train the detector (the
sensor selection, scalers, models, and every threshold come from them only), the rest is
scored; TP/FP/FN/TN are counted per point and summed over files. It prints one line per
strategy and, as one JSON object on the last line, ``f1``/``far``/``mar`` of the default
strategy.

Global hyper-parameters (smoothing window, decision quantile and factor, hybrid weights,
drift filter) were tuned on valve1 as the data README allows; nothing looks at test labels
per file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from models.ensemble import DEFAULT_STRATEGY, EnsembleConfig, HybridDetector

SKAB_TRAIN_ROWS = 400


@dataclass
class Confusion:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, predicted: np.ndarray, actual: np.ndarray) -> None:
        p = np.asarray(predicted, dtype=bool)
        a = np.asarray(actual, dtype=bool)
        self.tp += int(np.sum(p & a))
        self.fp += int(np.sum(p & ~a))
        self.fn += int(np.sum(~p & a))
        self.tn += int(np.sum(~p & ~a))

    @property
    def f1(self) -> float:
        denom = self.tp + (self.fp + self.fn) / 2
        return self.tp / denom if denom else 0.0

    @property
    def far(self) -> float:
        return 100.0 * self.fp / (self.fp + self.tn) if self.fp + self.tn else 0.0

    @property
    def mar(self) -> float:
        return 100.0 * self.fn / (self.fn + self.tp) if self.fn + self.tp else 0.0

    def metrics(self) -> dict[str, float]:
        return {"f1": round(self.f1, 4), "far": round(self.far, 2), "mar": round(self.mar, 2)}


@dataclass
class SkabFile:
    path: Path
    sensors: list[str]
    values: np.ndarray  # (n, d)
    anomaly: np.ndarray  # (n,) bool


def load_skab_file(path: Path) -> SkabFile | None:
    """One SKAB CSV (``;``-separated, datetime first); ``None`` if it has no labels."""
    with path.open() as fh:
        header = fh.readline().strip().split(";")
    if "anomaly" not in header:
        return None
    label_cols = {"datetime", "anomaly", "changepoint"}
    sensor_idx = [i for i, name in enumerate(header) if name not in label_cols]
    data = np.genfromtxt(path, delimiter=";", skip_header=1, usecols=range(1, len(header)))
    # genfromtxt skipped column 0 (datetime): shift the indexes by one.
    values = data[:, [i - 1 for i in sensor_idx]]
    anomaly = data[:, header.index("anomaly") - 1] > 0.5
    return SkabFile(path, [header[i] for i in sensor_idx], values, anomaly)


def skab_files(data_dir: Path) -> list[SkabFile]:
    def order(p: Path) -> tuple[str, int, str]:
        return (str(p.parent), int(p.stem) if p.stem.isdigit() else -1, p.name)

    files = []
    for path in sorted(data_dir.rglob("*.csv"), key=order):
        loaded = load_skab_file(path)
        if loaded is not None and len(loaded.values) > SKAB_TRAIN_ROWS:
            files.append(loaded)
    return files


def evaluate_skab(
    data_dir: Path,
    config: EnsembleConfig | None = None,
    limit: int | None = None,
    progress: bool = False,
) -> dict[str, Confusion]:
    """Confusion counts per strategy summed over the labelled files under ``data_dir``."""
    config = config or EnsembleConfig()
    files = skab_files(data_dir)[:limit]
    if not files:
        raise FileNotFoundError(f"no labelled SKAB CSV files under {data_dir}")
    totals: dict[str, Confusion] = {}
    for item in files:
        started = time.perf_counter()
        detector = HybridDetector(config).fit(item.values[:SKAB_TRAIN_ROWS], item.sensors)
        # Score the whole file as one stream so that the first test rows have their LSTM window
        # and smoothing history (made of training rows, known at that time anyway).
        scores = detector.stream_scores(item.values)
        actual = item.anomaly[SKAB_TRAIN_ROWS:]
        line = []
        for strategy in detector.available_strategies():
            flagged = np.nan_to_num(detector.strategy_scores(scores, strategy)) > 1.0
            totals.setdefault(strategy, Confusion()).add(flagged[SKAB_TRAIN_ROWS:], actual)
            one = Confusion()
            one.add(flagged[SKAB_TRAIN_ROWS:], actual)
            line.append(f"{strategy}={one.f1:.2f}")
        if progress:
            print(
                f"  {item.path.parent.name}/{item.path.name}: {' '.join(line)}"
                f" excluded={[s for s in item.sensors if s not in detector.features]}"
                f" ({time.perf_counter() - started:.1f}s)",
                file=sys.stderr,
            )
    return totals


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m models.evaluate")
    sub = parser.add_subparsers(dest="benchmark", required=True)
    skab = sub.add_parser("skab", help="SKAB protocol on every labelled CSV under --data")
    skab.add_argument("--data", type=Path, required=True)
    skab.add_argument("--strategy", default=DEFAULT_STRATEGY)
    skab.add_argument("--limit", type=int, default=None, help="only the first N files")
    skab.add_argument("--epochs", type=int, default=None, help="LSTM epochs (default: config)")
    skab.add_argument("--smooth", type=int, default=None, help="smoothing window")
    skab.add_argument("--factor", type=float, default=None, help="decision factor")
    skab.add_argument("--quantile", type=float, default=None, help="decision quantile")
    skab.add_argument("--quiet", action="store_true", help="no per-file progress on stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING)
    args = _parse(argv)
    config = EnsembleConfig(strategy=args.strategy)
    if args.epochs is not None:
        config = replace(config, lstm=replace(config.lstm, epochs=args.epochs))
    if args.smooth is not None:
        config = replace(config, smooth_window=args.smooth)
    if args.factor is not None:
        config = replace(config, decision_factor=args.factor)
    if args.quantile is not None:
        config = replace(config, decision_quantile=args.quantile)
    started = time.perf_counter()
    totals = evaluate_skab(args.data, config, args.limit, progress=not args.quiet)
    elapsed = time.perf_counter() - started
    print(f"SKAB protocol on {args.data} ({elapsed:.0f} s)")
    print(f"{'strategy':<18}{'F1':>8}{'FAR %':>9}{'MAR %':>9}{'TP':>7}{'FP':>7}{'FN':>7}{'TN':>7}")
    for strategy, c in totals.items():
        mark = " *" if strategy == args.strategy else ""
        print(
            f"{strategy:<18}{c.f1:>8.3f}{c.far:>9.2f}{c.mar:>9.2f}"
            f"{c.tp:>7}{c.fp:>7}{c.fn:>7}{c.tn:>7}{mark}"
        )
    if args.strategy not in totals:
        raise SystemExit(f"strategy {args.strategy!r} was not evaluated")
    print(json.dumps({"strategy": args.strategy, **totals[args.strategy].metrics()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
