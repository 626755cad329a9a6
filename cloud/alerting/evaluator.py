"""One evaluation pass: every enabled rule's findings against the firing alerts.

A finding without a firing alert opens one (a ``firing`` notification per channel); one that
persists updates its alert (occurrences, newest anomaly) and notifies again only when its
severity rises, when a silence that muted it has ended, or when it is still being fed after
``repeat_s`` (as Alertmanager's repeat interval); a firing alert whose fault is gone is
resolved (a ``resolved`` notification). So a burst of anomalous readings is one alert.

Each rule runs in its own savepoint: a rule that fails (a bug, data it needs missing) is
logged and skipped, its alerts kept as they are, and the other rules go on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import psycopg
from psycopg.rows import dict_row

from cloud.alerting.config import SEVERITY_RANK
from cloud.alerting.rules import Finding, Memory, Rule, RuleUnavailable, evaluate
from cloud.alerting.store import active_silence, list_channels, list_rules
from shared.logs import log_event

log = logging.getLogger(__name__)

REPEAT_S = 3600


@dataclass
class PassResult:
    opened: int = 0
    updated: int = 0
    resolved: int = 0
    queued: int = 0
    failed_rules: list[str] = field(default_factory=list)


class Evaluator:
    def __init__(self, repeat_s: int = REPEAT_S) -> None:
        self.repeat_s = repeat_s
        self._memory: dict[int, Memory] = {}
        # Rules already reported unavailable: logged once, not every few seconds.
        self._unavailable: set[int] = set()

    def run_pass(self, conn: psycopg.Connection, kinds: frozenset[str] | None = None) -> PassResult:
        """Evaluate every enabled rule, or those of ``kinds`` (the caller commits)."""
        result = PassResult()
        rules = [r for r in list_rules(conn, enabled_only=True) if kinds is None or r.kind in kinds]
        channels = {c.id: c for c in list_channels(conn, enabled_only=True)}
        for rule in rules:
            try:
                with conn.transaction():
                    findings = evaluate(conn, rule, self._memory.setdefault(rule.id, Memory()))
                    self._reconcile(conn, rule, findings, channels, result)
                self._unavailable.discard(rule.id)
            except RuleUnavailable as exc:
                result.failed_rules.append(rule.name)
                if rule.id not in self._unavailable:
                    self._unavailable.add(rule.id)
                    log_event(
                        log,
                        logging.WARNING,
                        "alert rule unavailable",
                        rule=rule.name,
                        kind=rule.kind,
                        reason=str(exc),
                    )
            except (psycopg.OperationalError, psycopg.InterfaceError):
                raise  # the database is gone: the whole pass is retried later
            except Exception as exc:  # one bad rule must not stop the others
                result.failed_rules.append(rule.name)
                log_event(
                    log,
                    logging.ERROR,
                    "alert rule failed",
                    rule=rule.name,
                    kind=rule.kind,
                    error=f"{type(exc).__name__}: {exc}",
                )
        # Alerts whose rule was deleted: nobody evaluates them any more.
        conn.execute(
            "UPDATE alerts SET status = 'resolved', resolved_at = now(), updated_at = now() "
            "WHERE status = 'firing' AND rule_id IS NULL"
        )
        return result

    def _reconcile(
        self,
        conn: psycopg.Connection,
        rule: Rule,
        findings: list[Finding],
        channels: Mapping[int, object],
        result: PassResult,
    ) -> None:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "SELECT id, group_key, severity, last_anomaly_id, notified_at, "
                "notified_at < now() - %s::interval AS repeat_due FROM alerts "
                "WHERE rule_id = %s AND status = 'firing' FOR UPDATE",
                (f"{self.repeat_s} seconds", rule.id),
            )
            firing = {a["group_key"]: a for a in cur.fetchall()}
        targets = [c for c in (rule.channel_ids or sorted(channels)) if c in channels]
        seen = set()
        for f in findings:
            seen.add(f.group_key)
            alert = firing.get(f.group_key)
            if alert is None:
                row = conn.execute(
                    "INSERT INTO alerts (group_key, rule_id, rule_name, kind, machine_id, sensor, "
                    "edge_id, severity, summary, occurrences, first_anomaly_id, last_anomaly_id) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    (
                        f.group_key,
                        rule.id,
                        rule.name,
                        rule.kind,
                        f.machine_id,
                        f.sensor,
                        f.edge_id,
                        f.severity,
                        f.summary,
                        f.occurrences,
                        f.first_anomaly_id,
                        f.last_anomaly_id,
                    ),
                ).fetchone()
                assert row is not None
                result.opened += 1
                result.queued += self._queue(conn, row[0], "firing", rule, f, targets)
                continue
            event = None
            rank = SEVERITY_RANK.get
            if rank(f.severity, 0) > rank(alert["severity"], 0):
                event = "update"
            elif alert["notified_at"] is None and targets:
                # Muted so far: announced once the silence has ended (recorded once, when
                # it opened, while the silence lasts).
                if active_silence(conn, rule.id, f.machine_id, f.sensor) is None:
                    event = "firing"
            elif alert["repeat_due"] and f.last_anomaly_id != alert["last_anomaly_id"]:
                event = "update"
            conn.execute(
                "UPDATE alerts SET severity = %s, summary = %s, occurrences = %s, "
                "last_anomaly_id = coalesce(%s, last_anomaly_id), updated_at = now() "
                "WHERE id = %s",
                (
                    max(f.severity, alert["severity"], key=lambda s: rank(s, 0)),
                    f.summary,
                    f.occurrences,
                    f.last_anomaly_id,
                    alert["id"],
                ),
            )
            result.updated += 1
            if event is not None:
                result.queued += self._queue(conn, alert["id"], event, rule, f, targets)
        for key, alert in firing.items():
            if key in seen:
                continue
            conn.execute(
                "UPDATE alerts SET status = 'resolved', resolved_at = now(), updated_at = now() "
                "WHERE id = %s",
                (alert["id"],),
            )
            result.resolved += 1
            # Announced only if its firing was: a muted fault ends as quietly as it started.
            if alert["notified_at"] is not None:
                result.queued += self._queue(conn, alert["id"], "resolved", rule, None, targets)

    def _queue(
        self,
        conn: psycopg.Connection,
        alert_id: int,
        event: str,
        rule: Rule,
        finding: Finding | None,
        targets: list[int],
    ) -> int:
        """Notification rows for every target channel; 'silenced' (recorded, not sent) while
        a silence matches. Returns how many are to be sent."""
        if finding is None:
            row = conn.execute(
                "SELECT machine_id, sensor FROM alerts WHERE id = %s", (alert_id,)
            ).fetchone()
            machine, sensor = (row[0], row[1]) if row else (None, None)
        else:
            machine, sensor = finding.machine_id, finding.sensor
        silence = active_silence(conn, rule.id, machine, sensor)
        status = "silenced" if silence is not None else "pending"
        for channel_id in targets:
            conn.execute(
                "INSERT INTO alert_notifications (alert_id, channel_id, channel_name, event, "
                "status, silence_id) SELECT %s, id, name, %s, %s, %s FROM alert_channels "
                "WHERE id = %s",
                (alert_id, event, status, silence, channel_id),
            )
        if silence is None and targets:
            conn.execute("UPDATE alerts SET notified_at = now() WHERE id = %s", (alert_id,))
            return len(targets)
        return 0
