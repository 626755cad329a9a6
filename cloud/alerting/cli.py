"""``rig-cloud alerts``: the alerting process (cloud/alerting/service.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable

from shared.logs import log_event

log = logging.getLogger("rig-cloud")


def cmd_alerts(args: argparse.Namespace) -> int:
    from cloud.alerting.dispatcher import Backoff
    from cloud.alerting.service import AlertService
    from cloud.cli import _settings_with_database
    from cloud.db.migrate import apply_migrations

    settings, pg = _settings_with_database(args)
    try:
        apply_migrations(settings.database_url)
        service = AlertService(
            settings.database_url,
            tick_s=args.tick,
            repeat_s=args.repeat,
            backoff=Backoff(base_s=args.retry_base, max_attempts=args.max_attempts),
        )

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await service.run(stop)

        log_event(log, logging.INFO, "alerting starting", tick_s=args.tick)
        asyncio.run(main())
        log_event(log, logging.INFO, "alerting stopped")
    finally:
        if pg is not None:
            pg.stop()
    return 0


def add_alert_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_db: Callable[[argparse.ArgumentParser], None],
) -> None:
    alerts = sub.add_parser(
        "alerts",
        help="evaluate alert rules and deliver notifications (webhook, Slack, e-mail, "
        "Alertmanager); one active process per database, others wait as standbys",
    )
    add_db(alerts)
    alerts.add_argument(
        "--tick",
        type=float,
        default=5.0,
        help="seconds between passes of the time-based rules (anomalies wake it at once)",
    )
    alerts.add_argument(
        "--repeat",
        type=int,
        default=3600,
        help="seconds before a still-fed alert is notified again (default 3600)",
    )
    alerts.add_argument(
        "--retry-base",
        type=float,
        default=1.0,
        help="first retry delay in seconds, doubled per attempt up to 300 (default 1)",
    )
    alerts.add_argument(
        "--max-attempts",
        type=int,
        default=8,
        help="delivery attempts before a notification is marked failed (default 8)",
    )
    alerts.set_defaults(func=cmd_alerts)
