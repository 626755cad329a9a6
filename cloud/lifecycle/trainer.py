"""Retraining one machine's detector: stored history -> fitted hybrid -> signed ONNX bundle ->
validated against the model in service -> registered (in service, or refused with why).

Both the candidate and the model in service are scored by the detector runtime
(``detector.bundle.BundleScorer``) from their signed bundles, the very code the rig runs them
with. Needs the ``ml`` extra (TensorFlow, scikit-learn); the API and the aggregator never
import this module.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from cloud.lifecycle import registry
from cloud.lifecycle.training_data import History, load_history
from cloud.lifecycle.validation import Validation, decide, validate
from detector.bundle import BundleScorer
from shared.catalog import CORE_SENSOR_NAMES, SENSOR_INDEX
from shared.logs import log_event
from shared.model_bundle import PrivateKeyLike, load_private_key, pack_bundle

log = logging.getLogger(__name__)
# The ONNX converter narrates every graph rewrite at INFO: hundreds of lines per training.
logging.getLogger("tf2onnx").setLevel(logging.WARNING)

# Below this the ensemble cannot hold back part of its training data to set its thresholds
# (models.ensemble), and on slowly drifting rig signals such a model false-alarms on most
# new readings; validation would refuse it anyway, so training waits for enough history.
MIN_TRAINING_ROWS = 1500
# Validation replays the held-out block six times (normal + five faults); this bounds it.
MAX_VALIDATION_ROWS = 3000


@dataclass(frozen=True)
class TrainingSettings:
    days: float = 7.0
    max_rows: int = 200_000
    held_out_fraction: float = 0.2
    lstm_epochs: int | None = None  # None: the model's default
    strategy: str | None = None  # None: the ensemble's default (hybrid_smart)
    # Scales the decision threshold (EnsembleConfig.decision_factor): above 1 fewer alarms.
    decision_factor: float = 1.0


def _scorer(scorer: BundleScorer) -> Any:
    """Flags per row of a (n, 50) block, scored as one fresh stream."""
    columns = [SENSOR_INDEX[name] for name in scorer.sensors]
    runs = 0

    def score(block: np.ndarray) -> np.ndarray:
        nonlocal runs
        runs += 1
        machine = f"validation-{runs}"  # fresh rolling state for every replay
        rows = np.asarray(block, dtype=np.float64)[:, columns]
        flags = np.zeros(len(rows), dtype=bool)
        # In batches of the size the edge's writer scores, which also bounds the memory
        # the LSTM windows take.
        for offset in range(0, len(rows), 512):
            part = scorer.score_rows(rows[offset : offset + 512], machine)
            flags[offset : offset + len(part.is_anomaly)] = part.is_anomaly
        scorer.reset(machine)
        return flags

    return score


def _baseline(
    conn: psycopg.Connection, machine_id: str, public_key: Any, work: Path
) -> tuple[dict[str, Any] | None, BundleScorer | None]:
    current = registry.active(conn, machine_id)
    if current is None:
        return None, None
    found = registry.bundle(conn, int(current["id"]))
    assert found is not None
    archive = work / "in-service.tar.gz"
    archive.write_bytes(found[1])
    return current, BundleScorer(archive, public_key)


def train_machine(
    database_url: str,
    machine_id: str,
    signing_key: PrivateKeyLike,
    *,
    settings: TrainingSettings | None = None,
    created_by: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Train, validate and register one candidate; returns its registry row."""
    from models.ensemble import EnsembleConfig, HybridDetector
    from models.export import export_bundle
    from models.lstm_autoencoder import LSTMAutoencoder

    settings = settings or TrainingSettings()
    now = now or datetime.now(UTC)
    key = load_private_key(signing_key)
    public_key = key.public_key()
    with psycopg.connect(database_url) as conn:
        history: History = load_history(
            conn,
            machine_id,
            days=settings.days,
            now=now,
            max_rows=settings.max_rows,
            held_out_fraction=settings.held_out_fraction,
        )
    if len(history.train) < MIN_TRAINING_ROWS:
        raise ValueError(
            f"machine {machine_id!r}: {len(history.train)} normal readings to train on, "
            f"at least {MIN_TRAINING_ROWS} are needed"
        )
    # Sensors a machine never reported stay NaN after forward fill; the model is trained on
    # the ones it has, and the others are filled at scoring time.
    train = np.where(np.isnan(history.train), np.nanmean(history.train, axis=0), history.train)
    train = np.nan_to_num(train, nan=0.0)
    lstm = (
        LSTMAutoencoder()
        if settings.lstm_epochs is None
        else LSTMAutoencoder(epochs=settings.lstm_epochs)
    )
    config = EnsembleConfig(lstm=lstm, decision_factor=settings.decision_factor)
    if settings.strategy is not None:
        config = replace(config, strategy=settings.strategy)
    log_event(log, logging.INFO, "training", machine=machine_id, rows=len(train))
    detector = HybridDetector(config).fit(train, sensors=list(CORE_SENSOR_NAMES))

    held_out = history.held_out[-MAX_VALIDATION_ROWS:]
    with tempfile.TemporaryDirectory(prefix="rig-train-") as tmp:
        work = Path(tmp)
        window = {
            "from": history.start.isoformat(),
            "to": history.end.isoformat(),
            "samples": len(train),
        }
        manifest = export_bundle(detector, work / "bundle", training_window=window, private_key=key)
        candidate = BundleScorer(work / "bundle", public_key)
        result: Validation = validate(_scorer(candidate), held_out)
        with psycopg.connect(database_url) as conn:
            current, in_service = _baseline(conn, machine_id, public_key, work)
        baseline = validate(_scorer(in_service), held_out) if in_service is not None else None
        accepted, reason = decide(result, baseline)
        archive = pack_bundle(work / "bundle", work / "bundle.tar.gz").read_bytes()
    metrics = {"validation": result.as_json(), "held_out_rows": len(held_out)}
    baseline_metrics = None
    if baseline is not None and current is not None:
        baseline_metrics = {
            "model_id": current["id"],
            "version": current["version"],
            "validation": baseline.as_json(),
        }
    with psycopg.connect(database_url) as conn, conn.transaction():
        row = registry.register(
            conn,
            registry.Candidate(
                machine_id=machine_id,
                strategy=manifest["strategy"],
                metrics=metrics,
                manifest=manifest,
                bundle=archive,
                trained_from=history.start,
                trained_to=history.end,
                training_rows=len(train),
                created_by=created_by,
            ),
            accepted=accepted,
            reason=reason,
            baseline_metrics=baseline_metrics,
            signing_key=key,  # a statement for an accepted model only
        )
    log_event(
        log,
        logging.INFO if accepted else logging.WARNING,
        "model accepted" if accepted else "model refused",
        machine=machine_id,
        version=row["version"],
        reason=reason,
    )
    return row
