"""What a notification says, in each receiver's shape: plain JSON (our webhook), a Slack
message (``text`` + ``blocks``, also accepted by Mattermost and Rocket.Chat), an Alertmanager
alert list (``POST /api/v2/alerts``) and an e-mail (subject and plain-text body).

Every shape carries the alert's group key and the notification id, so a receiver can tell an
update of a known fault from a new one and drop a retried delivery it already has.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.message import format_ts

TITLES = {"firing": "FIRING", "update": "UPDATE", "resolved": "RESOLVED"}


def _ts(value: datetime | None) -> str | None:
    return format_ts(value) if value is not None else None


def alert_json(alert: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": alert["alert_id"],
        "group_key": alert["group_key"],
        "rule": alert["rule_name"],
        "kind": alert["kind"],
        "severity": alert["severity"],
        "status": alert["status"],
        "summary": alert["summary"],
        "machine_id": alert["machine_id"],
        "sensor": alert["sensor"],
        "edge_id": alert["edge_id"],
        "occurrences": alert["occurrences"],
        "first_anomaly_id": alert["first_anomaly_id"],
        "last_anomaly_id": alert["last_anomaly_id"],
        "started_at": _ts(alert["started_at"]),
        "updated_at": _ts(alert["updated_at"]),
        "resolved_at": _ts(alert["resolved_at"]),
    }


def webhook(n: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": 1,
        "source": "rig-alpha",
        "notification_id": n["id"],
        "event": n["event"],
        "alert": alert_json(n),
    }


def title(n: dict[str, Any]) -> str:
    return f"[Rig Alpha] {TITLES[n['event']]} {n['severity']}: {n['summary']}"


def slack(n: dict[str, Any]) -> dict[str, Any]:
    where = ", ".join(
        f"{k} {n[k]}" for k in ("machine_id", "sensor", "edge_id") if n.get(k) is not None
    )
    text = title(n)
    details = (
        f"*{TITLES[n['event']]}* · {n['severity']} · rule `{n['rule_name']}`\n"
        f"{n['summary']}\n{where} · occurrences {n['occurrences']} · "
        f"since {_ts(n['started_at'])}"
    )
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": details}},
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"group `{n['group_key']}` · id {n['id']}"}
                ],
            },
        ],
    }


def alertmanager(n: dict[str, Any]) -> list[dict[str, Any]]:
    labels = {
        "alertname": n["rule_name"],
        "severity": n["severity"],
        "kind": n["kind"],
        "group_key": n["group_key"],
    }
    for key in ("machine_id", "sensor", "edge_id"):
        if n.get(key) is not None:
            labels[key] = str(n[key])
    alert: dict[str, Any] = {
        "labels": labels,
        "annotations": {
            "summary": n["summary"],
            "occurrences": str(n["occurrences"]),
        },
        "startsAt": _ts(n["started_at"]),
    }
    # Alertmanager resolves an alert whose endsAt has passed.
    if n["event"] == "resolved" and n["resolved_at"] is not None:
        alert["endsAt"] = _ts(n["resolved_at"])
    return [alert]


def email(n: dict[str, Any]) -> tuple[str, str]:
    lines = [
        f"{TITLES[n['event']]}: {n['summary']}",
        "",
        f"Severity:    {n['severity']}",
        f"Rule:        {n['rule_name']} ({n['kind']})",
    ]
    for key, name in (("machine_id", "Machine"), ("sensor", "Sensor"), ("edge_id", "Edge")):
        if n.get(key) is not None:
            lines.append(f"{name + ':':<12} {n[key]}")
    lines += [
        f"Occurrences: {n['occurrences']}",
        f"Since:       {_ts(n['started_at'])}",
    ]
    if n["resolved_at"] is not None:
        lines.append(f"Resolved:    {_ts(n['resolved_at'])}")
    if n["last_anomaly_id"] is not None:
        lines.append(f"Anomaly:     /anomalies/{n['last_anomaly_id']}")
    lines += ["", f"Group key: {n['group_key']} · notification {n['id']}"]
    return title(n), "\n".join(lines) + "\n"
