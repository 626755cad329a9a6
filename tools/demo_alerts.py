"""The demo's side of the operator's loop (issue 13 item 7): a fault schedule a newcomer can
follow, the receivers the alerts reach, and the alert rules that send them there.

- ``scaled_scenario``: the demo's scenario (simulator/scenarios/demo.yaml) with every fault
  and state change moved by a factor (``--schedule-scale``; tests run it in seconds).
- ``schedule_lines``: the schedule in wall-clock time, for the banner.
- ``AlertReceivers``: a mail catcher (aiosmtpd, a real SMTP conversation) that appends every
  message to ``mail.log`` and a webhook receiver (the standard library's HTTP server) that
  appends every POST to ``webhook.log`` as a JSON line, both on 127.0.0.1 and run by the demo
  itself, so nothing needs setting up and nothing leaves the machine.
- ``configure_alerting``: the channels pointing at those receivers and the rules that fire on
  the scheduled faults, created once and pointed at this run's ports on every start (an
  admin's later changes to the rules are kept).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

# A fault lasts at least this long however far the schedule is shrunk: the edge polls at the
# simulator's rate and must see a few samples of a spike.
MIN_FAULT_S = 3.0
MAIL_TO = "operator@rig-alpha.demo"
MAIL_FROM = "alerts@rig-alpha.demo"
MAIL_CHANNEL = "demo mail catcher"
WEBHOOK_CHANNEL = "demo webhook log"
# What fires on the scheduled faults: every critical anomaly (thresholds crossed: the spike,
# the cavitation, the worn bearing's temperature) is an alert per machine and sensor, and a
# remaining-life estimate under 30 minutes (machine C near the end of its wear) is another, and
# a model's forecast of an anomaly a third.
DEMO_RULES: tuple[dict[str, Any], ...] = (
    {
        "name": "demo critical anomaly",
        "kind": "anomaly",
        "params": {"min_severity": "critical", "window_s": 300},
        "severity": "critical",
    },
    {
        # Once the models are in service, a forecast that foresees an anomaly files a
        # predicted row in the feed (confirmed or expired later) and alerts as a warning.
        "name": "demo predicted anomaly",
        "kind": "predicted",
        "params": {"probability": 0.8, "window_s": 120, "horizon_s": 60},
        "severity": "warning",
    },
    {
        "name": "demo remaining life under 30 min",
        "kind": "rul",
        "params": {"hours": 0.5, "max_age_s": 600},
        "severity": "warning",
    },
)

Announce = Callable[[str], None]


def scaled_scenario(path: Path, scale: float) -> dict[str, Any]:
    """The scenario at ``path`` with every fault start, duration and state change multiplied
    by ``scale`` (durations not below ``MIN_FAULT_S``)."""
    if not scale > 0:
        raise ValueError(f"schedule scale: must be > 0, not {scale}")
    scenario: dict[str, Any] = yaml.safe_load(path.read_text())
    for fault in scenario.get("faults", []):
        fault["start_s"] = round(float(fault["start_s"]) * scale, 3)
        fault["duration_s"] = max(MIN_FAULT_S, round(float(fault["duration_s"]) * scale, 3))
    for change in scenario.get("states", []):
        change["at_s"] = round(float(change["at_s"]) * scale, 3)
    return scenario


_DESCRIBE = {
    "spike": "{sensors} spike on machine {machine} (thresholds catch it: first alert)",
    "bearing_wear": "machine {machine}'s bearing starts wearing out; it fails at {end}",
    "cavitation": "machine {machine}'s pump cavitates until {end}",
    "stuck": "{sensors} of machine {machine} stuck until {end}",
    "drift": "{sensors} of machine {machine} drift until {end}",
    "dropout": "{sensors} of machine {machine} drop out until {end}",
    "clock": "machine {machine}'s clock is off until {end}",
}


def schedule_lines(scenario: dict[str, Any], started_at: datetime) -> list[str]:
    """One line per fault, in start order, in UTC wall-clock time."""

    def at(seconds: float) -> str:
        return (started_at + timedelta(seconds=seconds)).astimezone(UTC).strftime("%H:%M:%S")

    lines = []
    for fault in sorted(scenario.get("faults", []), key=lambda f: float(f["start_s"])):
        start, duration = float(fault["start_s"]), float(fault["duration_s"])
        text = _DESCRIBE.get(str(fault["kind"]), "{kind} on machine {machine} until {end}")
        lines.append(
            f"{at(start)} UTC (+{start / 60:.1f} min)  "
            + text.format(
                kind=fault["kind"],
                machine=fault["machine"],
                sensors=", ".join(fault.get("sensors") or []) or "its sensors",
                end=f"{at(start + duration)} UTC",
            )
        )
    return lines


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class _MailHandler:
    def __init__(self, receivers: AlertReceivers) -> None:
        self.receivers = receivers

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        message = message_from_bytes(content, policy=default_policy)
        assert isinstance(message, EmailMessage)  # what the default policy builds
        self.receivers.mail_received(message, list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


class AlertReceivers:
    """The demo's mail catcher and webhook receiver (see the module docstring)."""

    def __init__(self, directory: Path, smtp_port: int, announce: Announce | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.mail_log = directory / "mail.log"
        self.webhook_log = directory / "webhook.log"
        self._announce = announce
        self._lock = threading.Lock()
        # aiosmtpd checks its server by connecting to the configured port: 0 will not do.
        self._smtp = Controller(_MailHandler(self), hostname="127.0.0.1", port=smtp_port)
        receivers = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body: Any = json.loads(raw or b"null")
                except ValueError:
                    body = raw.decode(errors="replace")
                receivers.webhook_received(self.path, body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return  # webhook.log is the record

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http_thread = threading.Thread(
            target=self._http.serve_forever, name="demo-webhook", daemon=True
        )

    def start(self) -> AlertReceivers:
        self._smtp.start()
        self._http_thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._smtp.stop()

    @property
    def smtp_port(self) -> int:
        return int(self._smtp.port)

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/alerts"

    def mail_received(self, message: EmailMessage, recipients: list[str]) -> None:
        # Headers and the decoded text, readable with tail -f (the wire form is base64).
        part = message.get_body(preferencelist=("plain",))
        body = part.get_content() if isinstance(part, EmailMessage) else message.as_string()
        head = "".join(
            f"{name}: {message[name]}\n"
            for name in ("From", "To", "Date", "Subject")
            if name in message
        )
        text = f"{head}\n{body.replace(chr(13), '')}"
        with self._lock, self.mail_log.open("a", encoding="utf-8") as out:
            out.write(f"==== received {_now()} for {', '.join(recipients)} ====\n{text}\n")
        if self._announce is not None:
            self._announce(f"e-mail to {', '.join(recipients)}: {message['Subject']}")

    def webhook_received(self, path: str, body: Any) -> None:
        line = json.dumps({"received_at": _now(), "path": path, "body": body})
        with self._lock, self.webhook_log.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
        if self._announce is not None:
            alert = body.get("alert", {}) if isinstance(body, dict) else {}
            event = body.get("event", "?") if isinstance(body, dict) else "?"
            self._announce(f"webhook {path}: {event} {alert.get('summary', '')}".rstrip())


def configure_alerting(database_url: str, smtp_port: int, webhook_url: str) -> None:
    """Channels to this run's receivers and the demo's rules (see ``DEMO_RULES``)."""
    from cloud.alerting import store
    from cloud.alerting.config import ChannelIn, ChannelPatch, RuleIn

    wanted = [
        ChannelIn(
            name=MAIL_CHANNEL,
            kind="email",
            config={"host": "127.0.0.1", "port": smtp_port, "sender": MAIL_FROM, "to": [MAIL_TO]},
        ),
        ChannelIn(name=WEBHOOK_CHANNEL, kind="webhook", config={"url": webhook_url}),
    ]
    with psycopg.connect(database_url, connect_timeout=10) as conn:
        existing = {c.name: c for c in store.list_channels(conn)}
        ids = []
        for want in wanted:
            if want.name in existing:
                # The receivers listen on new ports each run.
                channel = store.update_channel(
                    conn, existing[want.name].id, ChannelPatch(config=want.config)
                )
            else:
                channel = store.create_channel(conn, want, by="demo")
            ids.append(channel.id)
        rules = {r.name for r in store.list_rules(conn)}
        for rule in DEMO_RULES:
            if rule["name"] not in rules:
                store.create_rule(
                    conn, RuleIn.model_validate({**rule, "channel_ids": ids}), by="demo"
                )
