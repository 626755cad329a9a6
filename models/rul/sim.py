"""The rig's RUL model: trained on simulated fleets of run-to-failure histories
(``simulator.fleet``), judged on runs it never saw, through the exported ONNX bundle.

``python -m models.evaluate rul-sim`` trains on ``--train-runs`` runs (one seed), evaluates on
``--test-runs`` others (another seed) and prints one line per held-out run, then the summary
and, last, one JSON object:

- ``rmse_hours``: RMSE of the point estimate over every step of the wear, against the true
  life capped at the model's ``max_rul`` (a healthy-looking machine is scored against the cap);
- ``rmse_hours_last_24h``: the same over the last 24 h before failure, where it matters;
- ``coverage``: share of those steps whose true life lies inside the 80 % interval;
- ``lead_hours_median`` / ``lead_hours_min``: how long before the true failure the countdown
  first drops below 24 h (runs whose wear lasts more than 24 h); ``early_alarms``: runs where
  it dropped while more than 48 h were left.

The same functions train the model the cloud registers (``cloud.lifecycle.rul``) and the demo.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simulator.fleet import (
    RUL_SENSORS,
    STEP_S,
    Run,
    fleet_specs,
    healthy_reference,
    simulate_fleet,
)

log = logging.getLogger(__name__)

MAX_RUL_HOURS = 240.0  # ten days: beyond that a bearing shows nothing to count down from
WINDOW = 30  # rows of STEP_S: half an hour of wear
ALARM_HOURS = 24.0
TRAIN_SEED = 1
TEST_SEED = 2


@dataclass(frozen=True)
class SimSettings:
    train_runs: int = 48
    test_runs: int = 12
    train_seed: int = TRAIN_SEED
    test_seed: int = TEST_SEED
    members: int = 4
    epochs: int = 40
    max_hours: float = 96.0


def train_rig_model(runs: list[Run], settings: SimSettings, random_state: int = 42) -> Any:
    """A fitted ``RulEstimator`` (hours) on the fleet's runs."""
    from models.rul.estimator import RulEstimator

    model = RulEstimator(
        window=WINDOW,
        max_rul=MAX_RUL_HOURS,
        members=settings.members,
        epochs=settings.epochs,
        patience=5,
        random_state=random_state,
    )
    return model.fit([r.rows for r in runs], [r.rul_hours for r in runs], sensors=list(RUL_SENSORS))


def export_rig_bundle(
    model: Any,
    runs: list[Run],
    directory: Path,
    *,
    private_key: Any = None,
    version: str | None = None,
    metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from models.rul.export import export_rul_bundle

    return export_rul_bundle(
        model,
        directory,
        version=version,
        unit="hours",
        step_s=STEP_S,
        reference=healthy_reference(runs).tolist(),
        training_window={"simulated_runs": len(runs), "windows": model.n_windows_},
        metrics=metrics,
        private_key=private_key,
    )


def evaluate_bundle(bundle: Any, runs: list[Run]) -> dict[str, Any]:
    """Score every step of every held-out run to failure with a ``detector.rul.RulBundle``."""
    from models.rul.data import all_windows

    cap = float(bundle.max_rul)
    errors: list[np.ndarray] = []
    late: list[np.ndarray] = []
    inside: list[np.ndarray] = []
    widths: list[np.ndarray] = []
    leads: list[float] = []
    early = 0
    per_run: list[dict[str, Any]] = []
    for run in runs:
        if not run.wearing.any():
            continue
        pred = bundle.run_windows(all_windows(run.rows, bundle.window).astype(np.float32))
        wear = run.wearing
        truth = run.rul_hours
        err = pred.rul[wear] - np.minimum(truth[wear], cap)
        errors.append(err)
        last = wear & (truth <= ALARM_HOURS)
        late.append(pred.rul[last] - truth[last])
        inside.append((pred.low[wear] <= truth[wear]) & (truth[wear] <= pred.high[wear]))
        widths.append(pred.high[wear] - pred.low[wear])
        below = np.flatnonzero(pred.rul < ALARM_HOURS)
        lead = float(truth[below[0]]) if below.size else 0.0
        if run.spec.wear_hours > ALARM_HOURS:
            leads.append(lead)
        if lead > 2 * ALARM_HOURS:
            early += 1
        per_run.append(
            {
                "seed": run.spec.seed,
                "wear_hours": round(run.spec.wear_hours, 2),
                "load": round(run.spec.load, 3),
                "rmse_hours": round(float(np.sqrt(np.mean(err**2))), 3),
                "below_24h_at_hours_left": round(lead, 2),
            }
        )
    all_err = np.concatenate(errors)
    all_late = np.concatenate(late)
    return {
        "runs": len(per_run),
        "steps": len(all_err),
        "rmse_hours": round(float(np.sqrt(np.mean(all_err**2))), 3),
        "rmse_hours_last_24h": round(float(np.sqrt(np.mean(all_late**2))), 3),
        "coverage": round(float(np.mean(np.concatenate(inside))), 4),
        "mean_interval_width_hours": round(float(np.mean(np.concatenate(widths))), 3),
        "lead_hours_median": round(float(np.median(leads)), 2) if leads else None,
        "lead_hours_min": round(float(np.min(leads)), 2) if leads else None,
        "early_alarms": early,
        "per_run": per_run,
    }


def rul_sim_main(args: argparse.Namespace) -> int:
    from detector.rul import RulBundle

    settings = SimSettings(
        train_runs=args.train_runs,
        test_runs=args.test_runs,
        members=args.members,
        epochs=args.epochs,
    )
    started = time.monotonic()
    train = simulate_fleet(fleet_specs(settings.train_runs, settings.train_seed))
    test = simulate_fleet(fleet_specs(settings.test_runs, settings.test_seed))
    simulated = time.monotonic() - started
    _out(
        f"fleet: {settings.train_runs} training runs ({sum(len(r.rows) for r in train)} steps), "
        f"{settings.test_runs} held-out runs, simulated in {simulated:.1f} s"
    )
    model = train_rig_model(train, settings)
    with tempfile.TemporaryDirectory(prefix="rig-rul-sim-") as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "bundle"
        export_rig_bundle(model, train, out)
        bundle = RulBundle(out)
        result = evaluate_bundle(bundle, test)
        size = (out / bundle.manifest["model"]["file"]).stat().st_size
    for run in result["per_run"]:
        _out(
            f"run seed={run['seed']} wear={run['wear_hours']:.1f} h load={run['load']:.2f}: "
            f"RMSE {run['rmse_hours']:.2f} h, below 24 h with {run['below_24h_at_hours_left']:.1f}"
            " h left"
        )
    _out(
        f"rul-sim (edge ONNX model, {size} bytes): RMSE {result['rmse_hours']:.2f} h over the "
        f"wear, {result['rmse_hours_last_24h']:.2f} h in the last 24 h; 80% interval coverage "
        f"{result['coverage']:.2f} (mean width {result['mean_interval_width_hours']:.1f} h); "
        f"countdown below 24 h at a median {result['lead_hours_median']} h before failure "
        f"(min {result['lead_hours_min']} h), early alarms {result['early_alarms']}"
    )
    summary = {k: v for k, v in result.items() if k != "per_run"}
    summary.update(
        train_runs=settings.train_runs,
        test_runs=settings.test_runs,
        bundle_bytes=size,
        seconds=round(time.monotonic() - started, 1),
    )
    _out(json.dumps(summary))
    return 0


def _out(text: str) -> None:
    """A command-line report: it prints (like ``models.evaluate``)."""
    print(text)  # noqa: T201


def add_rul_sim_parser(sub: Any) -> None:
    p = sub.add_parser(
        "rul-sim", help="RUL on simulated run-to-failure fleets (train, then held-out runs)"
    )
    p.add_argument("--train-runs", type=int, default=SimSettings.train_runs)
    p.add_argument("--test-runs", type=int, default=SimSettings.test_runs)
    p.add_argument("--members", type=int, default=SimSettings.members)
    p.add_argument("--epochs", type=int, default=SimSettings.epochs)
    p.add_argument("--out", default=None, help="keep the exported bundle in this directory")
    p.set_defaults(func=rul_sim_main)
