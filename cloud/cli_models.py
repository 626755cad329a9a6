"""``rig-cloud model ...`` and ``rig-cloud trainer``: the detector lifecycle from the shell.

The trainer is its own process (it needs the ``ml`` extra: TensorFlow, scikit-learn): it takes
queued retraining jobs (API ``POST /api/v1/machines/{id}/retrain`` or ``model retrain``) and,
on a schedule, queues a retraining for every machine whose model in service is older than
the interval. Bundles are signed with the Ed25519 key in RIG_MODEL_SIGNING_KEY_FILE; edges
trust the matching public key.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from cloud.fielderror import FieldError
from cloud.lifecycle import registry
from cloud.metrics import TRAINER_METRICS_PORT
from cloud.metrics import trainer as trainer_metrics
from cloud.settings import CloudSettings, SettingsError
from shared.logs import log_event

if TYPE_CHECKING:  # the trainer module needs the ml extra; imported only when training
    from cloud.lifecycle.trainer import TrainingSettings

log = logging.getLogger("rig-cloud.trainer")


def _database_url() -> str:
    url = CloudSettings.from_env().require_database_url()
    from cloud.db.migrate import apply_migrations

    apply_migrations(url)
    return url


def _signing_key() -> bytes:
    path = os.environ.get("RIG_MODEL_SIGNING_KEY_FILE")
    if not path:
        raise SettingsError(
            "RIG_MODEL_SIGNING_KEY_FILE is not set (create a key pair with "
            "`rig-cloud model keygen --out-dir DIR`)"
        )
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"RIG_MODEL_SIGNING_KEY_FILE={path}: {exc}") from None


def cmd_keygen(args: argparse.Namespace) -> int:
    from shared.model_bundle import generate_keypair

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out / "model-signing.key", out / "model-signing.pub"
    if private_path.exists() and not args.force:
        raise SettingsError(f"{private_path} exists; pass --force to replace it")
    private, public = generate_keypair()
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    public_path.write_bytes(public)
    print(f"private key (cloud, RIG_MODEL_SIGNING_KEY_FILE): {private_path}")
    print(f"public key (every edge, models.public_key_file): {public_path}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    url = _database_url()
    with psycopg.connect(url) as conn:
        rows = registry.list_models(conn, args.machine, None)
    for row in rows:
        row.pop("manifest", None)
    print(json.dumps(rows, indent=2, default=str))
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from cloud.lifecycle.trainer import TrainingSettings, train_machine

    url = _database_url()
    row = train_machine(
        url,
        args.machine,
        _signing_key(),
        settings=TrainingSettings(days=args.days),
        created_by="cli",
    )
    from cloud.cli_audit import record_cli

    brief = {k: row.get(k) for k in ("id", "version", "status", "reason")}
    record_cli(url, "model.retrain", f"machine:{args.machine}", brief)
    print(
        json.dumps(
            {k: row[k] for k in ("id", "machine_id", "version", "status", "reason", "metrics")},
            indent=2,
            default=str,
        )
    )
    return 0 if row["status"] == "active" else 3


def cmd_train_rul(args: argparse.Namespace) -> int:
    """The rig's RUL model: trained on a simulated run-to-failure fleet, signed, gated per
    machine (exit 3 when any machine refused it)."""
    from cloud.lifecycle.rul import train_rul

    url = _database_url()
    rows = train_rul(
        url,
        args.machines,
        _signing_key(),
        train_runs=args.runs,
        epochs=args.epochs,
        members=args.members,
        created_by="cli",
    )
    from cloud.cli_audit import record_cli

    for row in rows:
        brief = {k: row.get(k) for k in ("id", "version", "status", "reason")}
        record_cli(url, "model.train_rul", f"machine:{row['machine_id']}", brief)
    keys = ("id", "machine_id", "version", "status", "reason", "metrics")
    print(json.dumps([{k: row[k] for k in keys} for row in rows], indent=2, default=str))
    return 0 if all(row["status"] == "active" for row in rows) else 3


def cmd_rollback(args: argparse.Namespace) -> int:
    from cloud.cli_audit import cli_wrap

    url = _database_url()
    kind = "rul" if args.rul else "detector"
    # The rollback statement lets edges that require statements take the older version
    # (a downgrade otherwise); without the key the restored model has none.
    key = _signing_key() if os.environ.get("RIG_MODEL_SIGNING_KEY_FILE") else None
    if key is None:
        print(
            "warning: RIG_MODEL_SIGNING_KEY_FILE is not set: no signed rollback statement, "
            "edges with models.require_statement refuse the older version",
            file=sys.stderr,
        )
    try:
        with psycopg.connect(url) as conn, conn.transaction():
            rollback = cli_wrap("model.rollback", f"machine:{args.machine}", registry.rollback)
            row = rollback(conn, args.machine, "cli", kind, signing_key=key)
    except FieldError as exc:
        print(f"error: {exc.field}: {exc.message}", file=sys.stderr)
        return 2
    print(f"machine {args.machine}: version {row['version']} is in service again")
    return 0


def _schedule(url: str, interval_h: float) -> int:
    """Queue a retraining for machines whose model in service is older than the interval
    (or that have none), unless one was requested within the interval: a machine whose
    candidates keep being refused, or that has too little data yet, is retried once per
    interval rather than in a loop. Returns how many were queued."""
    with psycopg.connect(url) as conn, conn.transaction():
        due = conn.execute(
            "SELECT m.machine_id FROM machines m LEFT JOIN model_registry r "
            "ON r.machine_id = m.machine_id AND r.status = 'active' "
            "WHERE (r.id IS NULL OR r.activated_at < now() - make_interval(secs => %(s)s)) "
            "AND NOT EXISTS (SELECT 1 FROM training_jobs j WHERE j.machine_id = m.machine_id "
            "AND j.requested_at > now() - make_interval(secs => %(s)s)) ORDER BY 1",
            {"s": interval_h * 3600},
        ).fetchall()
        for (machine_id,) in due:
            registry.request_training(conn, machine_id, "schedule")
    return len(due)


def run_trainer(
    url: str,
    key: bytes,
    settings: TrainingSettings,
    interval_h: float,
    stop: threading.Event,
    poll_s: float = 5.0,
) -> None:
    from cloud.lifecycle.trainer import train_machine

    next_schedule = 0.0
    while not stop.is_set():
        if interval_h > 0 and time.monotonic() >= next_schedule:
            queued = _schedule(url, interval_h)
            trainer_metrics.SCHEDULED.inc(queued)
            if queued:
                log_event(log, logging.INFO, "scheduled retraining", machines=queued)
            next_schedule = time.monotonic() + min(3600.0, interval_h * 3600 / 4)
        with psycopg.connect(url) as conn, conn.transaction():
            claimed = registry.claim_job(conn)
        if claimed is None:
            stop.wait(poll_s)
            continue
        job_id, machine_id = claimed
        model_id, error = None, None
        started, result = time.monotonic(), "failed"
        try:
            row = train_machine(
                url,
                machine_id,
                key,
                settings=settings,
                created_by=f"job:{job_id}",
            )
            model_id = int(row["id"])
            # Registered either way: in service (active) or kept with the reason it lost.
            result = "accepted" if row.get("status") == "active" else "refused"
        except (LookupError, ValueError, psycopg.Error, OSError) as exc:
            # The job records why (too little data, database trouble); the trainer goes on.
            error = f"{type(exc).__name__}: {exc}"
            log_event(log, logging.WARNING, "training failed", machine=machine_id, error=error)
        except Exception as exc:  # a model bug must not kill the trainer or strand the job
            error = f"{type(exc).__name__}: {exc}"
            result = "crashed"
            log.exception("training crashed on machine %s", machine_id)
        trainer_metrics.record_job(result, time.monotonic() - started)
        with psycopg.connect(url) as conn, conn.transaction():
            registry.finish_job(conn, job_id, model_id, error)


def cmd_trainer(args: argparse.Namespace) -> int:
    url = _database_url()
    key = _signing_key()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    from cloud.metrics import serve_metrics

    serve_metrics("trainer", args.metrics_host, args.metrics_port)
    log_event(log, logging.INFO, "trainer started", interval_h=args.interval_hours, days=args.days)
    from cloud.lifecycle.trainer import TrainingSettings

    run_trainer(url, key, TrainingSettings(days=args.days), args.interval_hours, stop)
    return 0


def add_model_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    model = sub.add_parser("model", help="detector lifecycle: keys, registry, retrain, rollback")
    models = model.add_subparsers(dest="model_command", required=True)
    keygen = models.add_parser("keygen", help="create the Ed25519 bundle-signing key pair")
    keygen.add_argument("--out-dir", required=True)
    keygen.add_argument("--force", action="store_true")
    keygen.set_defaults(func=cmd_keygen)
    listing = models.add_parser("list", help="models with status, metrics and reasons")
    listing.add_argument("--machine")
    listing.set_defaults(func=cmd_list)
    retrain = models.add_parser(
        "retrain",
        help="train, validate and register a model now (exit 3 when the candidate is refused)",
    )
    retrain.add_argument("machine")
    retrain.add_argument("--days", type=float, default=7.0, help="history to learn from")
    retrain.set_defaults(func=cmd_retrain)
    train_rul = models.add_parser(
        "train-rul",
        help="train the RUL model on a simulated run-to-failure fleet, gate and register it "
        "for each machine (ml extra; exit 3 when a machine refused it)",
    )
    train_rul.add_argument("machines", nargs="+")
    train_rul.add_argument("--runs", type=int, default=48, help="simulated runs to failure")
    train_rul.add_argument("--epochs", type=int, default=40)
    train_rul.add_argument("--members", type=int, default=4, help="ensemble members")
    train_rul.set_defaults(func=cmd_train_rul)
    rollback = models.add_parser("rollback", help="put the previous model back in service")
    rollback.add_argument("machine")
    rollback.add_argument("--rul", action="store_true", help="the RUL model, not the detector")
    rollback.set_defaults(func=cmd_rollback)

    trainer = sub.add_parser("trainer", help="run queued and scheduled retraining (ml extra)")
    trainer.add_argument(
        "--interval-hours",
        type=float,
        default=24.0,
        help="retrain machines whose model is older than this (0: only queued jobs)",
    )
    trainer.add_argument("--days", type=float, default=7.0, help="history to learn from")
    trainer.add_argument(
        "--metrics-port",
        type=int,
        default=TRAINER_METRICS_PORT,
        help=f"Prometheus /metrics: jobs, durations, accepted/refused (default "
        f"{TRAINER_METRICS_PORT}; 0: off)",
    )
    trainer.add_argument(
        "--metrics-host", default="127.0.0.1", help="address for /metrics (0.0.0.0 in a container)"
    )
    trainer.set_defaults(func=cmd_trainer)
