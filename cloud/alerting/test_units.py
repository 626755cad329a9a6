"""Alerting's pure parts: configuration refusals name their field, each receiver's shape, the
retry back-off."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloud.alerting import payloads
from cloud.alerting.config import ChannelIn, RuleIn, SilenceIn, channel_config, rule_params
from cloud.alerting.dispatcher import Backoff
from cloud.fielderror import FieldError

NOW = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)


def _field(call: Any) -> str:
    with pytest.raises(FieldError) as caught:
        call()
    return caught.value.field


def test_refusals_name_the_field() -> None:
    assert _field(lambda: rule_params("persistence", {"count": 1})) == "params.count"
    assert _field(lambda: rule_params("predicted", {"probability": 1.5})) == "params.probability"
    assert _field(lambda: rule_params("rul", {"hourz": 3})) == "params.hourz"
    assert _field(RuleIn(name="r", kind="edge_backlog", sensor="rpm").check) == "sensor"
    assert _field(RuleIn(name="r", kind="rul", sensor="rpm").check) == "sensor"
    assert _field(lambda: channel_config("slack", {"url": "hooks.slack.com"})) == "config.url"
    email = {"host": "mail", "sender": "a@b", "to": ["c@d"]}
    assert _field(lambda: channel_config("email", {**email, "ssl": True, "starttls": True})) == (
        "config.starttls"
    )
    assert _field(lambda: channel_config("email", {**email, "password": {"env": "X"}})) == (
        "config.username"
    )
    assert _field(lambda: channel_config("email", {**email, "password": "inline"})) == (
        "config.password"
    )
    assert _field(ChannelIn(name="c", kind="email", config={**email, "to": ["x"]}).check) == (
        "config.to.0"
    )
    assert _field(SilenceIn(ends_at=NOW).check) == "machine_id"
    naive = SilenceIn(machine_id="A", ends_at=datetime(2026, 1, 1))  # no time zone: refused
    assert _field(naive.check) == "ends_at"
    backwards = SilenceIn(machine_id="A", starts_at=NOW, ends_at=NOW - timedelta(hours=1))
    assert _field(backwards.check) == "ends_at"


def _notification(event: str = "firing", **extra: Any) -> dict[str, Any]:
    return {
        "id": 7,
        "event": event,
        "alert_id": 3,
        "group_key": "1:A:vibration",
        "rule_name": "faults",
        "kind": "anomaly",
        "machine_id": "A",
        "sensor": "vibration",
        "edge_id": None,
        "severity": "critical",
        "status": "firing",
        "summary": "critical anomaly on machine A, sensor vibration",
        "occurrences": 4,
        "first_anomaly_id": 10,
        "last_anomaly_id": 13,
        "started_at": NOW,
        "updated_at": NOW,
        "resolved_at": None,
        **extra,
    }


def test_receiver_shapes() -> None:
    plain = payloads.webhook(_notification())
    assert plain["event"] == "firing" and plain["notification_id"] == 7
    assert plain["alert"]["group_key"] == "1:A:vibration"
    assert plain["alert"]["started_at"] == "2026-11-29T14:00:00.000000Z"

    slack = payloads.slack(_notification())
    assert slack["text"].startswith("[Rig Alpha] FIRING critical")
    assert slack["blocks"][0]["text"]["type"] == "mrkdwn"

    (firing,) = payloads.alertmanager(_notification())
    assert firing["labels"] == {
        "alertname": "faults",
        "severity": "critical",
        "kind": "anomaly",
        "group_key": "1:A:vibration",
        "machine_id": "A",
        "sensor": "vibration",
    }
    assert "endsAt" not in firing
    ended = NOW + timedelta(minutes=5)
    (resolved,) = payloads.alertmanager(_notification("resolved", resolved_at=ended))
    assert resolved["endsAt"] == "2026-11-29T14:05:00.000000Z"

    subject, body = payloads.email(_notification("resolved", resolved_at=ended))
    assert subject.startswith("[Rig Alpha] RESOLVED critical")
    assert "Machine:     A" in body and "Anomaly:     /anomalies/13" in body


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(base_s=1, max_s=10, max_attempts=5)
    assert [backoff.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
