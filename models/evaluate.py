"""Model evaluation on public benchmarks.

``python -m models.evaluate sim`` scores the detectors on the simulator: per machine, a
normal stream from ``simulator.signals.MachineSignals``; the detector trains on its first
``--train-rows`` readings; the next ``--test-rows`` are scored as they are (false alarms) and
with each of the simulator's standard faults injected into their second half
(``simulator.standard_faults``, the scenarios the model lifecycle validates candidates on).
Precision, recall and F1 are counted per point against the injected ground truth, summed over
machines and faults; the detection delay is the time from a fault's start to its first flagged
reading. One line per strategy, and the default strategy's numbers as one JSON object on the
last line.

``python -m models.evaluate skab --data DIR`` runs the SKAB protocol (``DIR``/README.md of the
shared data): every labelled CSV under DIR alone; its first 400 rows train the detector (the
sensor selection, scalers, models, and every threshold come from them only), the rest is
scored; TP/FP/FN/TN are counted per point and summed over files. It prints one line per
strategy and, as one JSON object on the last line, ``f1``/``far``/``mar`` of the default
strategy.

``python -m models.evaluate cmapss --data DIR`` is the NASA C-MAPSS remaining-useful-life
benchmark (``models.rul.cmapss``): trains on ``DIR/train_FD001.txt``, scores the exported edge
bundle on ``DIR/test_FD001.txt`` against ``DIR/RUL_FD001.txt``.

``python -m models.evaluate rul-sim`` is the rig's RUL model (``models.rul.sim``): trained on
simulated run-to-failure fleets, scored on held-out simulated runs (RMSE in hours, coverage,
how early the countdown drops below 24 h).

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
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from models.ensemble import DEFAULT_STRATEGY, EnsembleConfig, HybridDetector
from models.lstm_autoencoder import LSTMAutoencoder
from models.rul.cmapss import add_cmapss_parser, cmapss_main
from models.rul.sim import add_rul_sim_parser, rul_sim_main
from shared.catalog import CORE_SENSOR_NAMES
from simulator.config import FaultSpec
from simulator.signals import MachineSignals
from simulator.standard_faults import inject, standard_scenarios

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
                f" excluded={[s for s in item.sensors if s not in detector.features_]}"
                f" ({time.perf_counter() - started:.1f}s)",
                file=sys.stderr,
            )
    return totals


# -- simulator fault scenarios ------------------------------------------------------------------


@dataclass
class SimScore:
    """Point counts over every fault scenario, false alarms on the clean block, delays."""

    faults: Confusion = field(default_factory=Confusion)
    normal: Confusion = field(default_factory=Confusion)
    delays: dict[str, list[float | None]] = field(default_factory=dict)
    # Point counts of each fault kind's scenarios (its false alarms: readings outside the
    # fault flagged).
    by_kind: dict[str, Confusion] = field(default_factory=dict)

    @property
    def precision(self) -> float:
        c = self.faults
        return c.tp / (c.tp + c.fp) if c.tp + c.fp else 0.0

    @property
    def recall(self) -> float:
        c = self.faults
        return c.tp / (c.tp + c.fn) if c.tp + c.fn else 0.0

    def mean_delay(self, kind: str | None = None) -> float | None:
        """Mean delay over the detected faults (of one kind), None if none was detected."""
        values = [
            d for k, ds in self.delays.items() if kind in (None, k) for d in ds if d is not None
        ]
        return float(np.mean(values)) if values else None

    def detected(self) -> tuple[int, int]:
        everything = [d for ds in self.delays.values() for d in ds]
        return sum(d is not None for d in everything), len(everything)

    def metrics(self) -> dict[str, object]:
        found, total = self.detected()
        delay = self.mean_delay()
        return {
            "f1": round(self.faults.f1, 4),
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "far": round(self.normal.far, 2),
            "faults_detected": found,
            "faults": total,
            "mean_delay_s": None if delay is None else round(delay, 1),
            "delay_s": {
                k: None if (d := self.mean_delay(k)) is None else round(d, 1) for k in self.delays
            },
            # Share of the normal streams' readings flagged (0 is the target).
            "false_alarm_rate": round(self.normal.fp / max(self.normal.fp + self.normal.tn, 1), 6),
            "per_kind": {kind: self.kind_metrics(kind) for kind in self.delays},
        }

    def kind_metrics(self, kind: str) -> dict[str, object]:
        """``faults_total``/``faults_found``, ``false_alarm_rate`` (share of the readings
        outside the fault flagged in this kind's scenarios) and the mean
        ``detection_delay_s`` of the found ones."""
        delays = self.delays.get(kind, [])
        c = self.by_kind.get(kind, Confusion())
        delay = self.mean_delay(kind)
        return {
            "faults_total": len(delays),
            "faults_found": sum(d is not None for d in delays),
            "false_alarm_rate": round(c.fp / max(c.fp + c.tn, 1), 6),
            "detection_delay_s": None if delay is None else round(delay, 1),
        }


def simulate_normal(machine: str, seed: int, n: int) -> np.ndarray:
    """``n`` readings of normal operation at 1 Hz, catalog order."""
    signals = MachineSignals(machine, seed)
    return np.array([signals.step(float(i)) for i in range(n)])


def evaluate_sim(
    config: EnsembleConfig | None = None,
    machines: int = 2,
    train_rows: int = 5760,
    test_rows: int = 1440,
    seed: int = 11,
    progress: bool = False,
) -> dict[str, SimScore]:
    """``SimScore`` per strategy summed over ``machines`` simulated machines."""
    config = config or EnsembleConfig()
    totals: dict[str, SimScore] = {}
    for m in range(machines):
        started = time.perf_counter()
        machine = chr(ord("A") + m % 26) + (str(m // 26) if m >= 26 else "")
        stream = simulate_normal(machine, seed, train_rows + test_rows)
        detector = HybridDetector(config).fit(stream[:train_rows], list(CORE_SENSOR_NAMES))
        block = stream[train_rows:]
        # Each block is scored as a fresh stream, as the lifecycle validation replays it: the
        # run-up half gives the windows and the smoothing their history.
        scenarios: list[tuple[FaultSpec | None, np.ndarray, np.ndarray]] = [
            (None, block, np.zeros(len(block), dtype=bool))
        ]
        for spec in standard_scenarios(len(block), machine):
            faulty, labels = inject(block, spec, seed)
            scenarios.append((spec, faulty, labels))
        for spec, data, labels in scenarios:
            scores = detector.stream_scores(data)
            for strategy in detector.available_strategies():
                flags = np.nan_to_num(detector.strategy_scores(scores, strategy)) > 1.0
                total = totals.setdefault(strategy, SimScore())
                if spec is None:
                    total.normal.add(flags, labels)
                    continue
                total.faults.add(flags, labels)
                total.by_kind.setdefault(spec.kind, Confusion()).add(flags, labels)
                hits = np.flatnonzero(flags & labels)
                delay = float(hits[0] - spec.start_s) if hits.size else None
                total.delays.setdefault(spec.kind, []).append(delay)
        if progress:
            line = " ".join(f"{s}={t.faults.f1:.2f}/{t.normal.far:.1f}%" for s, t in totals.items())
            print(
                f"  machine {machine}: cumulative F1/FAR {line}"
                f" ({time.perf_counter() - started:.1f}s)",
                file=sys.stderr,
            )
    return totals


def _sim_main(args: argparse.Namespace, config: EnsembleConfig) -> int:
    started = time.perf_counter()
    totals = evaluate_sim(
        config, args.machines, args.train_rows, args.test_rows, args.seed, not args.quiet
    )
    elapsed = time.perf_counter() - started
    print(
        f"simulator faults: {args.machines} machine(s), {args.train_rows} training and "
        f"{args.test_rows} test readings each ({elapsed:.0f} s)"
    )
    print(
        f"{'strategy':<18}{'F1':>7}{'prec':>7}{'recall':>8}{'FAR %':>8}{'found':>8}{'delay s':>9}"
    )
    for strategy, s in totals.items():
        found, total = s.detected()
        delay = s.mean_delay()
        mark = " *" if strategy == args.strategy else ""
        print(
            f"{strategy:<18}{s.faults.f1:>7.3f}{s.precision:>7.3f}{s.recall:>8.3f}"
            f"{s.normal.far:>8.2f}{f'{found}/{total}':>8}"
            f"{'-' if delay is None else f'{delay:.0f}':>9}{mark}"
        )
    if args.strategy not in totals:
        raise SystemExit(f"strategy {args.strategy!r} was not evaluated")
    default = totals[args.strategy]
    for kind in default.delays:
        delay = default.mean_delay(kind)
        found = sum(d is not None for d in default.delays[kind])
        print(
            f"  {args.strategy} {kind:<13} detected {found}/{len(default.delays[kind])}"
            f"  mean delay {'-' if delay is None else f'{delay:.0f} s'}"
        )
    print(json.dumps({"benchmark": "sim", "strategy": args.strategy, **default.metrics()}))
    return 0


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
    sim = sub.add_parser("sim", help="simulator fault scenarios against their ground truth")
    sim.add_argument("--machines", type=int, default=2)
    # 2 h of 1 Hz history split 80/20, as the lifecycle trainer splits a machine's history.
    sim.add_argument("--train-rows", type=int, default=5760)
    sim.add_argument("--test-rows", type=int, default=1440)
    sim.add_argument("--seed", type=int, default=11)
    sim.add_argument("--strategy", default=DEFAULT_STRATEGY)
    sim.add_argument("--epochs", type=int, default=None, help="LSTM epochs (default: config)")
    sim.add_argument("--smooth", type=int, default=None, help="smoothing window")
    sim.add_argument("--factor", type=float, default=None, help="decision factor")
    sim.add_argument("--quantile", type=float, default=None, help="decision quantile")
    sim.add_argument("--quiet", action="store_true", help="no per-machine progress on stderr")
    add_cmapss_parser(sub)
    add_rul_sim_parser(sub)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING)
    args = _parse(argv)
    if args.benchmark == "cmapss":
        return cmapss_main(args)
    if args.benchmark == "rul-sim":
        return rul_sim_main(args)
    config = EnsembleConfig(strategy=args.strategy)
    if args.epochs is not None:
        config = replace(config, lstm=LSTMAutoencoder(epochs=args.epochs))
    if args.smooth is not None:
        config = replace(config, smooth_window=args.smooth)
    if args.factor is not None:
        config = replace(config, decision_factor=args.factor)
    if args.quantile is not None:
        config = replace(config, decision_quantile=args.quantile)
    if args.benchmark == "sim":
        return _sim_main(args, config)
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
