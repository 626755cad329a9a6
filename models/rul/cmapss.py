"""The NASA C-MAPSS benchmark (FD001 by default): ``python -m models.evaluate cmapss --data DIR``.

A command-line report: it prints (like ``models.evaluate``).

Trains a ``RulEstimator`` on ``DIR/train_<set>.txt`` (every unit runs to failure; target
``min(RUL, 130)``, see ``CMAPSS_PARAMS``), exports it as the edge's RUL bundle and scores
``DIR/test_<set>.txt`` through ONNX Runtime with that bundle (``models.rul.runtime.RulBundle``),
each test unit at its last cycle, against ``DIR/RUL_<set>.txt``. RMSE and the NASA score are
over the units; coverage is the share of units whose true RUL lies inside the predicted
interval.

``python -m models.rul.cmapss split --train FILE --out DIR`` writes a held-out split of a
training file in the standard layout (``models.rul.data.make_holdout``), for when the official
test files are not at hand.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.rul.data import (
    FD001_FEATURES,
    coverage,
    last_window,
    make_holdout,
    nasa_score,
    read_rul,
    read_units,
    rmse,
)


@dataclass
class CmapssResult:
    name: str
    rul: np.ndarray
    low: np.ndarray | None
    high: np.ndarray | None
    true: np.ndarray

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rmse": round(rmse(self.rul, self.true), 3),
            "score": round(nasa_score(self.rul, self.true), 1),
        }
        if self.low is not None and self.high is not None:
            out["coverage"] = round(coverage(self.low, self.high, self.true), 3)
            out["mean_interval_width"] = round(float(np.mean(self.high - self.low)), 2)
        return out


def _linear_baseline(train: list[np.ndarray], test: list[np.ndarray], window: int, cap: float):
    """Ridge regression on each window's mean and last value: what a model without any
    learned temporal structure gets, for scale."""
    from sklearn.linear_model import Ridge

    from models.rul.data import all_windows, countdown, last_window

    def feats(W: np.ndarray) -> np.ndarray:
        return np.concatenate([W.mean(axis=1), W[:, -1], W[:, -1] - W[:, 0]], axis=1)

    X = np.concatenate([feats(all_windows(r, window)) for r in train])
    y = np.concatenate([np.minimum(countdown(len(r)), cap) for r in train])
    mu, sd = X.mean(axis=0), X.std(axis=0) + 1e-9
    ridge = Ridge(alpha=1.0).fit((X - mu) / sd, y)
    Wt = np.stack([last_window(h, window) for h in test])
    return np.clip(ridge.predict((feats(Wt) - mu) / sd), 0.0, cap)


def evaluate_cmapss(
    data_dir: Path,
    subset: str = "FD001",
    estimator_params: dict[str, Any] | None = None,
    bundle_dir: Path | None = None,
) -> tuple[list[CmapssResult], dict[str, Any]]:
    """Results per model (the edge bundle first) and facts about the bundle (bytes, µs)."""
    from models.rul.estimator import RulEstimator
    from models.rul.export import export_rul_bundle
    from models.rul.runtime import RulBundle

    for name in (f"train_{subset}.txt", f"test_{subset}.txt", f"RUL_{subset}.txt"):
        if not (data_dir / name).is_file():
            raise FileNotFoundError(f"--data: {data_dir} has no {name}")
    train = [u.features(FD001_FEATURES) for u in read_units(data_dir / f"train_{subset}.txt")]
    test = [u.features(FD001_FEATURES) for u in read_units(data_dir / f"test_{subset}.txt")]
    true = read_rul(data_dir / f"RUL_{subset}.txt")
    if len(true) != len(test):
        raise ValueError(f"RUL_{subset}.txt: {len(true)} values for {len(test)} test units")
    started = time.perf_counter()
    model = RulEstimator(**(estimator_params or {})).fit(train, sensors=FD001_FEATURES)
    fit_seconds = time.perf_counter() - started

    with tempfile.TemporaryDirectory(prefix="rul-cmapss-") as tmp:
        out = bundle_dir or Path(tmp) / "bundle"
        export_rul_bundle(model, out, metrics={"oof_rmse": model.oof_rmse_})
        bundle = RulBundle(out)
        edge = bundle.predict_histories(test)
        bundle_bytes = sum(p.stat().st_size for p in Path(out).iterdir() if p.is_file())
        onnx_bytes = (Path(out) / bundle.manifest["model"]["file"]).stat().st_size
        window = last_window(test[0], model.window)[None].astype(np.float32)
        for _ in range(20):
            bundle.run_windows(window)
        # The median, like ``make bench-rul``: on a shared machine a mean mostly measures
        # the other processes that preempt this one.
        samples = []
        for _ in range(200):
            t0 = time.perf_counter()
            bundle.run_windows(window)
            samples.append(time.perf_counter() - t0)
        us_single = float(np.median(samples)) * 1e6

    native = model.predict(test)
    results = [
        CmapssResult("rul-ensemble (onnx, edge)", edge.rul, edge.low, edge.high, true),
        CmapssResult("rul-ensemble (native)", native, *model.predict_interval(test), true),
        CmapssResult(
            "ridge baseline",
            _linear_baseline(train, test, model.window, model.max_rul),
            None,
            None,
            true,
        ),
    ]
    facts = {
        "fit_seconds": round(fit_seconds, 1),
        "bundle_bytes": bundle_bytes,
        "onnx_bytes": onnx_bytes,
        "rul_us_single": round(us_single, 1),
        "train_units": len(train),
        "test_units": len(test),
        "oof_coverage": round(model.oof_coverage_, 3),
        "calibration": round(model.calibration_, 2),
    }
    return results, facts


# The benchmark's model, chosen on 5-fold held-out splits of train_FD001 (pooled RMSE; see
# the README): wider networks trained longer than the estimator's defaults, blended half and
# half with gradient-boosted trees on the same window statistics (their errors differ, the
# blend beats either). The target is capped at 130 rather than the literature's 125: test
# units are cut with up to 145 cycles left, and a 125 cap makes every one above it an error
# of at least the difference (pooled RMSE 12.45 -> 12.31 over the five folds, better on 4).
# 300 boosting stages at shrinkage 0.05 instead of 150 at 0.1: 12.31 -> 12.24.
CMAPSS_PARAMS: dict[str, Any] = {
    "max_rul": 130.0,
    "dense": 128,
    "dropout": 0.1,
    "epochs": 150,
    "patience": 15,
    "trees": 300,
    "tree_learning_rate": 0.05,
    "tree_weight": 0.5,
}


def cmapss_main(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {**CMAPSS_PARAMS, "random_state": args.seed}
    if args.trees is not None:
        params["trees"] = args.trees
    if args.epochs is not None:
        params["epochs"] = args.epochs
    if args.members is not None:
        params["members"] = args.members
    results, facts = evaluate_cmapss(args.data, args.subset, params)
    print(  # noqa: T201
        f"C-MAPSS {args.subset} on {args.data}: {facts['train_units']} training units, "
        f"{facts['test_units']} test units (fit {facts['fit_seconds']:.0f} s; bundle "
        f"{facts['bundle_bytes']} bytes, {facts['rul_us_single']:.0f} µs per prediction)"
    )
    print(f"{'model':<28}{'RMSE':>8}{'score':>10}{'coverage':>10}{'width':>8}")  # noqa: T201
    for r in results:
        m = r.metrics()
        mark = " *" if r is results[0] else ""
        print(  # noqa: T201
            f"{r.name:<28}{m['rmse']:>8.2f}{m['score']:>10.1f}"
            f"{m.get('coverage', float('nan')):>10.3f}"
            f"{m.get('mean_interval_width', float('nan')):>8.1f}{mark}"
        )
    print(  # noqa: T201
        json.dumps({"benchmark": "cmapss", "subset": args.subset, **results[0].metrics(), **facts})
    )
    return 0


def add_cmapss_parser(sub: Any) -> None:
    """The ``cmapss`` subcommand of ``python -m models.evaluate``."""
    p = sub.add_parser("cmapss", help="NASA C-MAPSS RUL benchmark (train/test/RUL files in --data)")
    p.add_argument("--data", type=Path, required=True, help="folder with the NASA files")
    p.add_argument("--subset", default="FD001")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: model's)")
    p.add_argument("--members", type=int, default=None, help="ensemble members / folds")
    p.add_argument(
        "--trees", type=int, default=None, help="boosting stages per member (0: networks only)"
    )
    p.add_argument("--seed", type=int, default=42)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.rul.cmapss")
    sub = parser.add_subparsers(dest="command", required=True)
    split = sub.add_parser("split", help="held-out split of a training file, standard layout")
    split.add_argument("--train", type=Path, required=True)
    split.add_argument("--out", type=Path, required=True)
    split.add_argument("--test-units", type=int, default=20)
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--subset", default="FD001")
    split.add_argument("--fold", type=int, default=None, help="disjoint block of test units")
    args = parser.parse_args(argv)
    out = make_holdout(args.train, args.out, args.test_units, args.seed, args.subset, args.fold)
    print(out)  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
