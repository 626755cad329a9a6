"""Alerting benchmark: reading in -> notification received. Prints progress and one JSON
object on the last line of stdout.

Real processes: an embedded PostgreSQL, ``rig-cloud serve`` (no Kafka: ingest commits to
PostgreSQL) and ``rig-cloud alerts``; a real SMTP server (aiosmtpd) and an HTTP webhook
receiver in this process. Each sample is a new fault on its own machine: an integrator posts
``--readings`` threshold-breaking readings (one request each) and the clock runs from the
first POST until the notification is received, by the webhook and by the mail server.

- notify_latency_p50_ms / notify_latency_p95_ms: until both receivers have it (target p95
  <= 2000);
- webhook_p50_ms / webhook_p95_ms, email_p50_ms / email_p95_ms: per receiver;
- notifications_per_fault: firing notifications per receiver and fault (1: no storm);
- samples.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from cloud.db.embedded import EmbeddedPostgres
from cloud.db.migrate import apply_migrations
from tests.support.accounts import add_user, bearer, login
from tests.support.processes import Service, free_port, http_ok, wait_until
from tests.support.receivers import MailSink, WebhookSink

KEY = "b" * 32


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def _reading(machine: str) -> dict[str, Any]:
    return {
        "machine_id": machine,
        "ts": datetime.now(UTC).isoformat(),
        "vibration": 40.0,
        "detection": {
            "method": "thresholds",
            "is_anomaly": True,
            "score": 2.5,
            "sensors": ["vibration"],
            "warnings": [],
        },
    }


def run(samples: int, readings: int, work: Path) -> dict[str, Any]:
    pg = EmbeddedPostgres(work / "pg")
    url = pg.start()
    services: list[Service] = []
    mail = MailSink().start()
    hook = WebhookSink().start()
    try:
        apply_migrations(url)
        port = free_port()
        env = {"DATABASE_URL": url, "RIG_INGEST_API_KEY": KEY}
        api = Service("api", ["cloud.cli", "serve", "--port", str(port)], work, env).start()
        alerts = Service("alerts", ["cloud.cli", "alerts"], work, env).start()
        services = [api, alerts]
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ok(f"{base}/readyz"), 60, "api up", services=services)
        with httpx.Client(base_url=base, timeout=10) as client:
            admin = bearer(login(client, "bench", add_user(url, "bench", "admin")))
            for channel in (
                {"name": "hook", "kind": "webhook", "config": {"url": hook.url}},
                {
                    "name": "mail",
                    "kind": "email",
                    "config": {
                        "host": "127.0.0.1",
                        "port": mail.port,
                        "sender": "bench@example.test",
                        "to": ["ops@example.test"],
                    },
                },
            ):
                r = client.post("/api/v1/alerting/channels", json=channel, headers=admin)
                r.raise_for_status()
            r = client.post(
                "/api/v1/alerting/rules",
                json={"name": "anomalies", "kind": "anomaly"},
                headers=admin,
            )
            r.raise_for_status()
            # The service is active once it holds its lock; the first sample must not time it.
            wait_until(
                lambda: "alerting active" in alerts.tail(200), 60, "alerting up", services=services
            )
            both: list[float] = []
            by_hook: list[float] = []
            by_mail: list[float] = []
            ingest = {"X-API-KEY": KEY}
            for i in range(samples):
                machine = f"B{uuid.uuid4().hex[:6]}"
                start = time.monotonic()
                for _ in range(readings):
                    client.post("/api/v1/ingest", json=_reading(machine), headers=ingest)

                def arrived(m: str = machine) -> bool:
                    return _hook_at(hook, m) is not None and _mail_at(mail, m) is not None

                wait_until(arrived, 30, f"notification of sample {i}", services=services)
                h, m = _hook_at(hook, machine), _mail_at(mail, machine)
                assert h is not None and m is not None
                by_hook.append((h - start) * 1000)
                by_mail.append((m - start) * 1000)
                both.append((max(h, m) - start) * 1000)
                print(f"sample {i + 1}/{samples}: {both[-1]:.0f} ms", file=sys.stderr)
            # Every fault announced once per receiver, however many readings it had.
            per_fault = len(hook.bodies()) / samples
    finally:
        for service in reversed(services):
            service.stop()
        hook.stop()
        mail.stop()
        pg.stop("fast")
    return {
        "notify_latency_p50_ms": round(statistics.median(both), 1),
        "notify_latency_p95_ms": _pct(both, 0.95),
        "webhook_p50_ms": round(statistics.median(by_hook), 1),
        "webhook_p95_ms": _pct(by_hook, 0.95),
        "email_p50_ms": round(statistics.median(by_mail), 1),
        "email_p95_ms": _pct(by_mail, 0.95),
        "notifications_per_fault": round(per_fault, 2),
        "readings_per_fault": readings,
        "samples": samples,
    }


def _hook_at(hook: WebhookSink, machine: str) -> float | None:
    with hook.lock:
        for r in hook.requests:
            if r.body["alert"]["machine_id"] == machine:
                return r.at
    return None


def _mail_at(mail: MailSink, machine: str) -> float | None:
    with mail.lock:
        for m in mail.messages:
            if f"Machine:     {machine}" in m.body.get_payload():
                return m.at
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--readings", type=int, default=3, help="readings per fault")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-alerts-") as tmp:
        result = run(args.samples, args.readings, Path(tmp))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
