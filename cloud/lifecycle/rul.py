"""The rig's RUL model through the detectors' signed lifecycle: simulated run-to-failure fleet
-> fitted ensemble -> signed ONNX bundle -> validation gate against the RUL model in service ->
registry (``kind = 'rul'``: in service, or refused with the reason). Edges poll
``/api/v1/edge/models/{machine}/rul`` and hot-swap it like a detector; rollback is the
registry's.

The gate scores the candidate and the model in service from their signed bundles with the
edge's runtime (``detector.rul.RulBundle``) on the same held-out simulated runs (a fixed seed
no training fleet uses), so the comparison is the rig's. A candidate is refused when its
interval misses the truth too often, or when its error is worse than the model in service's.
Needs the ``ml`` extra (TensorFlow) to train; ``submit_rul_bundle`` needs only the runtime.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from cloud.lifecycle import registry
from detector.rul import RulBundle
from shared.logs import log_event
from shared.model_bundle import PrivateKeyLike, PublicKeyLike, load_private_key, pack_bundle

log = logging.getLogger(__name__)

# Held-out runs of the gate: their own seed, never a training fleet's.
GATE_SEED = 7_000_003
GATE_RUNS = 8
# An 80 % interval that holds the truth less often than this is not a confidence.
MIN_COVERAGE = 0.70
# A candidate may be this much worse than the model in service (run-to-run training noise)
# before it is refused.
RMSE_TOLERANCE = 1.05
RMSE_SLACK_HOURS = 0.25


@dataclass(frozen=True)
class RulValidation:
    rmse_hours: float
    rmse_hours_last_24h: float
    coverage: float
    mean_interval_width_hours: float
    lead_hours_median: float | None

    @classmethod
    def of(cls, result: dict[str, Any]) -> RulValidation:
        return cls(
            rmse_hours=float(result["rmse_hours"]),
            rmse_hours_last_24h=float(result["rmse_hours_last_24h"]),
            coverage=float(result["coverage"]),
            mean_interval_width_hours=float(result["mean_interval_width_hours"]),
            lead_hours_median=result.get("lead_hours_median"),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "rmse_hours": self.rmse_hours,
            "rmse_hours_last_24h": self.rmse_hours_last_24h,
            "coverage": self.coverage,
            "mean_interval_width_hours": self.mean_interval_width_hours,
            "lead_hours_median": self.lead_hours_median,
        }


def decide_rul(candidate: RulValidation, baseline: RulValidation | None) -> tuple[bool, str]:
    """(accepted, reason): the gate of a RUL candidate against the model in service."""
    if candidate.coverage < MIN_COVERAGE:
        return False, (
            f"interval coverage {candidate.coverage:.2f} on held-out runs is below "
            f"{MIN_COVERAGE:.2f}"
        )
    if baseline is None:
        return True, (
            f"first RUL model: RMSE {candidate.rmse_hours:.2f} h, coverage "
            f"{candidate.coverage:.2f} on held-out simulated runs"
        )
    limit = baseline.rmse_hours * RMSE_TOLERANCE + RMSE_SLACK_HOURS
    if candidate.rmse_hours > limit:
        return False, (
            f"RMSE {candidate.rmse_hours:.2f} h on held-out runs is worse than the model in "
            f"service ({baseline.rmse_hours:.2f} h)"
        )
    return True, (
        f"RMSE {candidate.rmse_hours:.2f} h (in service {baseline.rmse_hours:.2f} h), coverage "
        f"{candidate.coverage:.2f}"
    )


def _gate_runs(runs: int = GATE_RUNS) -> list[Any]:
    from simulator.fleet import fleet_specs, simulate_fleet

    return simulate_fleet(fleet_specs(runs, GATE_SEED))


def _validate(bundle: RulBundle, runs: list[Any]) -> RulValidation:
    # numpy and the runtime only: the evaluation of models.rul.sim imports no TensorFlow.
    from models.rul.sim import evaluate_bundle

    return RulValidation.of(evaluate_bundle(bundle, runs))


def submit_rul_bundle(
    database_url: str,
    machine_id: str,
    bundle_dir: Path,
    public_key: PublicKeyLike,
    *,
    created_by: str | None = None,
    gate_runs: int = GATE_RUNS,
    signing_key: PrivateKeyLike | None = None,
) -> dict[str, Any]:
    """Validate a signed RUL bundle directory against the RUL model in service and register
    it (in service, or rejected with the reason); returns the registry row. With
    ``signing_key`` an accepted model gets the signed statement edges check."""
    candidate = RulBundle(bundle_dir, public_key)  # signature and format checked here
    if candidate.unit != "hours" or not candidate.manifest.get("step_s"):
        raise ValueError(
            f"bundle: a rig RUL model counts hours per step_s; this one counts {candidate.unit!r}"
        )
    runs = _gate_runs(gate_runs)
    result = _validate(candidate, runs)
    baseline: RulValidation | None = None
    baseline_metrics: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="rig-rul-gate-") as tmp:
        with psycopg.connect(database_url) as conn:
            current = registry.active(conn, machine_id, "rul")
            found = registry.bundle(conn, int(current["id"])) if current else None
        if current is not None and found is not None:
            archive = Path(tmp) / "in-service.tar.gz"
            archive.write_bytes(found[1])
            baseline = _validate(RulBundle(archive, public_key), runs)
            baseline_metrics = {
                "model_id": current["id"],
                "version": current["version"],
                "validation": baseline.as_json(),
            }
        accepted, reason = decide_rul(result, baseline)
        data = pack_bundle(bundle_dir, Path(tmp) / "bundle.tar.gz").read_bytes()
    manifest = candidate.manifest
    with psycopg.connect(database_url) as conn, conn.transaction():
        row = registry.register(
            conn,
            registry.Candidate(
                machine_id=machine_id,
                strategy="rul",
                metrics={"validation": result.as_json(), "held_out_runs": gate_runs},
                manifest=manifest,
                bundle=data,
                trained_from=None,
                trained_to=None,
                training_rows=int(manifest.get("training_window", {}).get("windows", 0)),
                created_by=created_by,
                kind="rul",
            ),
            accepted=accepted,
            reason=reason,
            baseline_metrics=baseline_metrics,
            signing_key=signing_key,
        )
    log_event(
        log,
        logging.INFO if accepted else logging.WARNING,
        "RUL model accepted" if accepted else "RUL model refused",
        machine=machine_id,
        version=row["version"],
        reason=reason,
    )
    return row


def train_rul(
    database_url: str,
    machines: Sequence[str],
    signing_key: PrivateKeyLike,
    *,
    train_runs: int = 48,
    epochs: int = 40,
    members: int = 4,
    seed: int = 1,
    created_by: str | None = None,
) -> list[dict[str, Any]]:
    """Train the rig RUL model on a simulated fleet, sign it and put it through each
    machine's gate (one model serves machines of one kind; each machine's registry decides
    for itself against its own model in service). Returns the registry rows."""
    from models.rul.sim import SimSettings, export_rig_bundle, train_rig_model
    from simulator.fleet import fleet_specs, simulate_fleet

    key = load_private_key(signing_key)
    settings = SimSettings(train_runs=train_runs, epochs=epochs, members=members)
    runs = simulate_fleet(fleet_specs(train_runs, seed))
    log_event(log, logging.INFO, "training RUL model", machines=list(machines), runs=len(runs))
    model = train_rig_model(runs, settings)
    with tempfile.TemporaryDirectory(prefix="rig-rul-train-") as tmp:
        out = Path(tmp) / "bundle"
        export_rig_bundle(model, runs, out, private_key=key)
        return [
            submit_rul_bundle(
                database_url,
                machine,
                out,
                key.public_key(),
                created_by=created_by,
                signing_key=key,
            )
            for machine in machines
        ]
