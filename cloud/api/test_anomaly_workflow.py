"""The anomaly workflow and the alerting admin routes through the real API and PostgreSQL:
open -> acknowledged -> resolved with who, when and a note; viewers refused, scoped operators
limited to their machines; the feed's filters; the detail page's context; the live event of a
step; admin input refused with the field named."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.settings import CloudSettings
from cloud.storage import store_readings
from shared.message import Reading
from tests.support.accounts import add_user, bearer, login

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def _reading(machine: str, seq: int, value: float, anomaly: bool, **detection: Any) -> Reading:
    return Reading(
        machine,
        "rig-1",
        seq,
        NOW - timedelta(seconds=60 - seq),
        {"vibration": value, "rpm": 3000.0},
        detection={
            "method": detection.pop("method", "thresholds"),
            "is_anomaly": anomaly,
            "score": detection.pop("score", 1.0 if anomaly else 0.0),
            "sensors": ["vibration"] if anomaly else [],
            "warnings": [],
            **detection,
        },
    )


@pytest.fixture
def api(database_url: str) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    readings = [_reading("A", s, 2.0, False) for s in range(1, 20)]
    readings += [
        _reading("A", 20, 30.0, True),
        _reading(
            "A",
            21,
            31.0,
            True,
            method="lstm-ae",
            score=0.9,
            contributions=[{"sensor": "vibration", "share": 0.7}, {"sensor": "rpm", "share": 0.3}],
            model_version="A-3",
        ),
        _reading("B", 22, 30.0, True),
    ]
    with psycopg.connect(database_url) as conn, conn.transaction():
        store_readings(conn, readings)
    with TestClient(create_app(CloudSettings(database_url=database_url))) as client:
        tokens = {}
        for name, role, machines in (
            ("ada", "admin", None),
            ("olga", "operator", None),
            ("sam", "operator", ["B"]),
            ("vic", "viewer", None),
        ):
            tokens[name] = bearer(login(client, name, add_user(database_url, name, role, machines)))
        client.cookies.clear()
        yield client, tokens


def _ids(client: TestClient, headers: dict[str, str], **params: Any) -> list[int]:
    response = client.get("/api/v1/anomalies", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return [a["id"] for a in response.json()["anomalies"]]


def test_acknowledge_then_resolve_with_who_when_and_note(
    api: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    client, t = api
    first = _ids(client, t["olga"], machine_id="A", method="thresholds")[0]
    with client.websocket_connect("/api/v1/stream", headers=t["olga"]) as ws:
        assert '"hello"' in ws.receive_text()
        ack = client.post(
            f"/api/v1/anomalies/{first}/acknowledge", json={"note": "looking"}, headers=t["olga"]
        )
        assert ack.status_code == 200, ack.text
        body = ack.json()
        assert (body["state"], body["acknowledged_by"], body["ack_note"]) == (
            "acknowledged",
            "olga",
            "looking",
        )
        assert body["acknowledged_at"] and body["resolved_at"] is None
        while True:
            event = ws.receive_json()
            if event["type"] == "anomaly_state":
                break
        assert (event["id"], event["state"], event["by"]) == (first, "acknowledged", "olga")
    again = client.post(f"/api/v1/anomalies/{first}/acknowledge", json={}, headers=t["olga"])
    assert again.status_code == 409 and again.json()["field"] == "state"
    done = client.post(
        f"/api/v1/anomalies/{first}/resolve", json={"note": "bolt tightened"}, headers=t["ada"]
    )
    assert done.status_code == 200
    assert (done.json()["state"], done.json()["resolved_by"]) == ("resolved", "ada")
    assert done.json()["acknowledged_by"] == "olga"
    detail = client.get(f"/api/v1/anomalies/{first}", headers=t["vic"]).json()
    assert detail["resolution_note"] == "bolt tightened"
    assert _ids(client, t["vic"], state="resolved") == [first]
    assert first not in _ids(client, t["vic"], state="open")
    assert (
        client.post(f"/api/v1/anomalies/{first}/resolve", json={}, headers=t["ada"]).status_code
        == 409
    )
    long_note = client.post(
        f"/api/v1/anomalies/{first}/resolve", json={"note": "x" * 2001}, headers=t["ada"]
    )
    assert long_note.status_code == 422 and long_note.json()["field"] == "note"


def test_viewers_cannot_and_scoped_operators_only_on_their_machines(
    api: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    client, t = api
    on_a = _ids(client, t["olga"], machine_id="A")[0]
    on_b = _ids(client, t["olga"], machine_id="B")[0]
    assert (
        client.post(f"/api/v1/anomalies/{on_a}/acknowledge", json={}, headers=t["vic"]).status_code
        == 403
    )
    # Another machine's anomaly does not exist for a scoped operator: not even its state leaks.
    assert (
        client.post(f"/api/v1/anomalies/{on_a}/acknowledge", json={}, headers=t["sam"]).status_code
        == 404
    )
    assert client.get(f"/api/v1/anomalies/{on_a}/context", headers=t["sam"]).status_code == 404
    assert _ids(client, t["sam"]) == [on_b]
    assert (
        client.post(f"/api/v1/anomalies/{on_b}/acknowledge", json={}, headers=t["sam"]).status_code
        == 200
    )
    with psycopg.connect(client.app.state.services.settings.database_url) as conn:  # type: ignore[attr-defined]
        assert conn.execute(
            "SELECT state FROM anomaly_detections WHERE id = %s", (on_a,)
        ).fetchone() == ("open",)


def test_feed_filters_and_the_detail_context(
    api: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    client, t = api
    everything = client.get("/api/v1/anomalies", headers=t["vic"]).json()["anomalies"]
    assert {a["severity"] for a in everything} == {"critical", "warning"}
    warning = _ids(client, t["vic"], severity="warning")
    assert len(warning) == 1
    assert _ids(client, t["vic"], machine_id="A", severity="critical", state="open") == [
        a["id"] for a in everything if a["machine_id"] == "A" and a["severity"] == "critical"
    ]
    assert _ids(client, t["vic"], **{"from": (NOW + timedelta(hours=1)).isoformat()}) == []
    bad = client.get("/api/v1/anomalies", params={"state": "closed"}, headers=t["vic"])
    assert bad.status_code == 422 and bad.json()["field"] == "state"

    ml = warning[0]
    context = client.get(f"/api/v1/anomalies/{ml}/context", headers=t["vic"])
    assert context.status_code == 200, context.text
    c = context.json()
    assert c["contributions"] == [
        {"sensor": "vibration", "share": 0.7},
        {"sensor": "rpm", "share": 0.3},
    ]
    assert len(c["window"]) == 21 and set(c["window"][0]["values"]) == {"vibration", "rpm"}
    assert c["model"]["model_version"] == "A-3" and c["model"]["method"] == "lstm-ae"
    assert set(c["thresholds"]) == {"vibration", "rpm"}
    assert c["thresholds"]["vibration"]["source"] == "default"
    # The threshold anomaly on A just before it flagged vibration too: similar, same machine.
    assert [s["sensors"] for s in c["similar"]] == [["vibration"]]


def test_alerting_admin_routes_validate_and_name_the_field(
    api: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    client, t = api
    admin = t["ada"]

    def post(path: str, body: dict[str, Any]) -> Any:
        return client.post(f"/api/v1/alerting/{path}", json=body, headers=admin)

    cases: list[tuple[str, dict[str, Any], str]] = [
        ("rules", {"name": "r", "kind": "persistence", "params": {"count": 1}}, "params.count"),
        ("rules", {"name": "r", "kind": "anomaly", "params": {"window": 5}}, "params.window"),
        ("rules", {"name": "r", "kind": "edge_offline", "machine_id": "A"}, "machine_id"),
        ("rules", {"name": "r", "kind": "rulez"}, "kind"),
        ("rules", {"name": "r", "kind": "anomaly", "channel_ids": [99]}, "channel_ids"),
        ("channels", {"name": "c", "kind": "webhook", "config": {"url": "ftp://x"}}, "config.url"),
        (
            "channels",
            {"name": "c", "kind": "email", "config": {"host": "h", "sender": "a@b", "to": []}},
            "config.to",
        ),
        (
            "channels",
            {
                "name": "c",
                "kind": "email",
                "config": {"host": "h", "sender": "a@b", "to": ["c@d"], "password": "plain"},
            },
            "config.password",
        ),
        ("silences", {"ends_at": (NOW + timedelta(hours=1)).isoformat()}, "machine_id"),
        ("silences", {"machine_id": "A", "ends_at": "2020-01-01T00:00:00Z"}, "ends_at"),
    ]
    for path, body, field in cases:
        response = post(path, body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["field"] == field, (body, response.json())
    channel = post("channels", {"name": "c", "kind": "slack", "config": {"url": "http://h/x"}})
    assert channel.status_code == 201
    rule = post(
        "rules",
        {
            "name": "r",
            "kind": "persistence",
            "machine_id": "A",
            "sensor": "vibration",
            "params": {"count": 3, "window_s": 60},
            "channel_ids": [channel.json()["id"]],
        },
    )
    assert rule.status_code == 201, rule.text
    assert post("rules", {"name": "r", "kind": "anomaly"}).json()["field"] == "name"
    patched = client.patch(
        f"/api/v1/alerting/rules/{rule.json()['id']}", json={"enabled": False}, headers=admin
    )
    assert patched.json()["enabled"] is False
    silence = post(
        "silences", {"machine_id": "A", "ends_at": (NOW + timedelta(hours=1)).isoformat()}
    )
    assert silence.status_code == 201 and silence.json()["active"] is True
    ended = client.delete(f"/api/v1/alerting/silences/{silence.json()['id']}", headers=admin)
    assert ended.json()["active"] is False
    listed = client.get("/api/v1/alerting/rules", headers=admin).json()["rules"]
    assert [r["name"] for r in listed] == ["r"]
    assert client.get("/api/v1/alerts", headers=t["sam"]).json() == {"alerts": []}
