"""Alerting against the real PostgreSQL of the tests, a real SMTP server (aiosmtpd) and real
HTTP receivers: anomalies stored by the storing transaction become one alert per fault,
delivered to every channel in its shape, updated and resolved; silences, retries, an
unreachable receiver and a broken rule each leave the rest working and are recorded."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from aiosmtpd.smtp import AuthResult
from psycopg.types.json import Jsonb

from cloud.alerting.config import ChannelIn, RuleIn, SilenceIn
from cloud.alerting.dispatcher import Backoff, Dispatcher
from cloud.alerting.evaluator import Evaluator
from cloud.alerting.store import create_channel, create_rule, create_silence, expire_silence
from cloud.storage import store_readings
from cloud.store.anomaly_workflow import transition
from shared.message import Reading
from tests.support.processes import free_port
from tests.support.receivers import MailSink, WebhookSink

pytestmark = pytest.mark.integration

FAST = Backoff(base_s=0.01, max_s=0.05, max_attempts=3)


@pytest.fixture
def mail() -> Iterator[MailSink]:
    sink = MailSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def hook() -> Iterator[WebhookSink]:
    sink = WebhookSink().start()
    yield sink
    sink.stop()


def _anomalous(machine: str, seq: int, sensor: str = "vibration", **extra: Any) -> Reading:
    return Reading(
        machine,
        "rig-1",
        seq,
        datetime.now(UTC) + timedelta(milliseconds=seq),
        {sensor: 99.0},
        detection={
            "method": "thresholds",
            "is_anomaly": True,
            "score": 1.5,
            "sensors": [sensor],
            "warnings": [],
            **extra,
        },
    )


def _store(url: str, readings: list[Reading]) -> None:
    with psycopg.connect(url) as conn, conn.transaction():
        store_readings(conn, readings)


def _setup(url: str, channels: list[ChannelIn], rules: list[RuleIn]) -> None:
    with psycopg.connect(url) as conn, conn.transaction():
        for c in channels:
            create_channel(conn, c, "admin")
        for r in rules:
            create_rule(conn, r, "admin")


def _cycle(url: str, evaluator: Evaluator, backoff: Backoff = FAST) -> None:
    """One evaluation pass and every delivery then due (as the service does, in order)."""
    from psycopg_pool import ConnectionPool

    with psycopg.connect(url) as conn, conn.transaction():
        evaluator.run_pass(conn)
    with ConnectionPool(url, min_size=1, max_size=2) as pool:

        async def send() -> None:
            async with httpx.AsyncClient() as client:
                await Dispatcher(pool, backoff).run_once(client)

        asyncio.run(send())


def _notifications(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT channel_name, event, status, attempts, last_error FROM alert_notifications "
            "ORDER BY id"
        ).fetchall()


def test_a_burst_of_anomalies_is_one_alert_delivered_everywhere_then_resolved(
    database_url: str, mail: MailSink, hook: WebhookSink
) -> None:
    _setup(
        database_url,
        [
            ChannelIn(name="hook", kind="webhook", config={"url": f"{hook.url}/plain"}),
            ChannelIn(name="slack", kind="slack", config={"url": f"{hook.url}/slack"}),
            ChannelIn(name="am", kind="alertmanager", config={"url": f"{hook.url}/am"}),
            ChannelIn(
                name="mail",
                kind="email",
                config={
                    "host": "127.0.0.1",
                    "port": mail.port,
                    "sender": "rig@example.test",
                    "to": ["ops@example.test"],
                },
            ),
        ],
        [RuleIn(name="any anomaly", kind="anomaly")],
    )
    evaluator = Evaluator()
    _store(database_url, [_anomalous("A", 1)])
    _cycle(database_url, evaluator)
    # More readings of the same fault: the alert is updated, nobody is notified again.
    _store(database_url, [_anomalous("A", s) for s in range(2, 7)])
    _cycle(database_url, evaluator)
    _cycle(database_url, evaluator)

    assert [b["event"] for b in hook.bodies("/plain")] == ["firing"]
    plain = hook.bodies("/plain")[0]["alert"]
    assert (plain["machine_id"], plain["sensor"], plain["severity"]) == (
        "A",
        "vibration",
        "critical",
    )
    slack = hook.bodies("/slack")
    assert len(slack) == 1 and "FIRING" in slack[0]["text"] and slack[0]["blocks"]
    (am,) = hook.bodies("/am/api/v2/alerts")
    assert am[0]["labels"]["alertname"] == "any anomaly" and "endsAt" not in am[0]
    (mail_1,) = mail.mails()
    assert "FIRING" in mail_1["Subject"] and "Machine:     A" in mail_1.get_payload()
    with psycopg.connect(database_url) as conn:
        alert = conn.execute("SELECT status, occurrences FROM alerts").fetchall()
    assert alert == [("firing", 6)]

    # The operator resolves every anomaly of the fault: the alert resolves, once.
    with psycopg.connect(database_url) as conn, conn.transaction():
        ids = [r[0] for r in conn.execute("SELECT id FROM anomaly_detections")]
        for anomaly_id in ids:
            transition(conn, anomaly_id, "resolve", "olga", "bearing replaced", None)
    _cycle(database_url, evaluator)
    _cycle(database_url, evaluator)
    assert [b["event"] for b in hook.bodies("/plain")] == ["firing", "resolved"]
    assert "endsAt" in hook.bodies("/am/api/v2/alerts")[1][0]
    assert ["FIRING" in m["Subject"] for m in mail.mails()] == [True, False]
    recorded = _notifications(database_url)
    assert len(recorded) == 8
    assert {(status, attempts) for _, _, status, attempts, _ in recorded} == {("sent", 1)}


def test_retries_back_off_and_an_unreachable_receiver_stops_nobody(
    database_url: str, hook: WebhookSink
) -> None:
    flaky = WebhookSink(fail_first=2).start()
    try:
        _setup(
            database_url,
            [
                ChannelIn(name="good", kind="webhook", config={"url": hook.url}),
                ChannelIn(name="flaky", kind="webhook", config={"url": flaky.url}),
                ChannelIn(
                    name="gone",
                    kind="webhook",
                    config={"url": f"http://127.0.0.1:{free_port()}/", "timeout_s": 1},
                ),
            ],
            [RuleIn(name="r", kind="anomaly")],
        )
        evaluator = Evaluator()
        _store(database_url, [_anomalous("A", 1)])
        _cycle(database_url, evaluator)
        assert len(hook.bodies()) == 1
        for _ in range(20):
            pending = [n for n in _notifications(database_url) if n[2] == "pending"]
            if not pending:
                break
            # The back-off is 10-50 ms here: wait for the next attempt to be due.
            with psycopg.connect(database_url) as conn:
                conn.execute("SELECT pg_sleep(0.06)")
            _cycle(database_url, evaluator)
        by_name = {n[0]: n for n in _notifications(database_url)}
        assert by_name["good"][2:4] == ("sent", 1)
        assert by_name["flaky"][2:4] == ("sent", 3)
        assert len(flaky.bodies()) == 1
        assert by_name["gone"][2:4] == ("failed", 3)
        assert "ConnectError" in (by_name["gone"][4] or "")
    finally:
        flaky.stop()


def test_a_silence_records_instead_of_sending_until_it_is_expired(
    database_url: str, hook: WebhookSink
) -> None:
    _setup(
        database_url,
        [ChannelIn(name="hook", kind="webhook", config={"url": hook.url})],
        [RuleIn(name="r", kind="anomaly")],
    )
    with psycopg.connect(database_url) as conn, conn.transaction():
        silence = create_silence(
            conn,
            SilenceIn(machine_id="A", ends_at=datetime.now(UTC) + timedelta(hours=1)),
            "admin",
        )
    evaluator = Evaluator()
    _store(database_url, [_anomalous("A", 1), _anomalous("B", 2)])
    _cycle(database_url, evaluator)
    _cycle(database_url, evaluator)
    assert [b["alert"]["machine_id"] for b in hook.bodies()] == ["B"]
    assert sorted(n[2] for n in _notifications(database_url)) == ["sent", "silenced"]
    with psycopg.connect(database_url) as conn, conn.transaction():
        expire_silence(conn, silence.id)
    _cycle(database_url, evaluator)
    assert sorted(b["alert"]["machine_id"] for b in hook.bodies()) == ["A", "B"]


def test_a_broken_rule_is_skipped_and_the_others_fire(database_url: str, hook: WebhookSink) -> None:
    _setup(
        database_url,
        [ChannelIn(name="hook", kind="webhook", config={"url": hook.url})],
        [
            RuleIn(name="persist", kind="persistence", params={"count": 2}),
        ],
    )
    with psycopg.connect(database_url) as conn, conn.transaction():
        # Written past the API's validation (an older release, a hand edit): it cannot run.
        conn.execute(
            "INSERT INTO alert_rules (name, kind, params) VALUES ('broken', 'anomaly', %s)",
            (Jsonb({"window_s": "soon"}),),
        )
    evaluator = Evaluator()
    _store(database_url, [_anomalous("A", 1), _anomalous("A", 2)])
    with psycopg.connect(database_url) as conn, conn.transaction():
        result = evaluator.run_pass(conn)
    assert sorted(result.failed_rules) == ["broken"]
    assert result.opened == 1
    _cycle(database_url, evaluator)
    (body,) = hook.bodies()
    assert body["alert"]["rule"] == "persist" and body["alert"]["occurrences"] == 2


def test_predicted_rul_and_edge_rules(database_url: str, hook: WebhookSink) -> None:
    _setup(
        database_url,
        [ChannelIn(name="hook", kind="webhook", config={"url": hook.url})],
        [
            RuleIn(name="predicted", kind="predicted", params={"probability": 0.7}),
            RuleIn(name="rul", kind="rul", params={"hours": 10}),
            RuleIn(name="offline", kind="edge_offline", params={"offline_s": 60}),
            RuleIn(name="drops", kind="buffer_drops", params={"min_drops": 3}),
        ],
    )
    now = datetime.now(UTC)
    reading = Reading(
        "C",
        "rig-2",
        1,
        now,
        {"vibration": 2.0},
        detection={
            "method": "lstm-ae",
            "is_anomaly": False,
            "score": 0.2,
            "sensors": [],
            "warnings": [],
            "probability_ahead": 0.9,
            "rul": {"rul_hours": 5.0, "low_hours": 3.0, "high_hours": 8.0},
        },
    )
    _store(database_url, [reading])
    with psycopg.connect(database_url) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO edges (edge_id, last_seen) VALUES ('rig-9', now() - interval '5 minutes')"
        )
        # No batch for 5 minutes but a status report just now (cloud/edge_fleet.py): seen.
        # It reports 4 readings dropped, rig-6 only 2 (under the rule's bound).
        conn.execute(
            "INSERT INTO edges (edge_id, last_seen, status_reported_at, dropped_total) VALUES "
            "('rig-7', now() - interval '5 minutes', now(), 4), ('rig-6', now(), now(), 2)"
        )
    _cycle(database_url, Evaluator())
    rules = sorted(b["alert"]["rule"] for b in hook.bodies())
    assert rules == ["drops", "offline", "predicted", "rul"]
    offline = next(b for b in hook.bodies() if b["alert"]["rule"] == "offline")
    assert offline["alert"]["edge_id"] == "rig-9"
    drops = next(b for b in hook.bodies() if b["alert"]["rule"] == "drops")
    assert drops["alert"]["edge_id"] == "rig-7"


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA (the channel's ca_file)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "smtp.pem", tmp / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_email_over_starttls_with_credentials_from_a_secret_file(
    database_url: str, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"s3cret-from-file")

    secure = MailSink(
        tls_context=tls,
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    ).start()
    password = tmp_path / "smtp-password"
    password.write_text("s3cret-from-file\n")
    try:
        config = {
            "host": "127.0.0.1",
            "port": secure.port,
            "starttls": True,
            "ca_file": str(cert),
            "username": "rig",
            "sender": "rig@example.test",
            "to": ["ops@example.test"],
        }
        _setup(
            database_url,
            [
                ChannelIn(
                    name="tls", kind="email", config={**config, "password": {"file": str(password)}}
                ),
                ChannelIn(
                    name="wrong",
                    kind="email",
                    config={**config, "password": {"env": "RIG_TEST_UNSET_SMTP_PASSWORD"}},
                ),
                ChannelIn(name="plain", kind="email", config={**config, "starttls": False}),
            ],
            [RuleIn(name="r", kind="anomaly")],
        )
        _store(database_url, [_anomalous("A", 1)])
        _cycle(database_url, Evaluator(), Backoff(base_s=0.01, max_attempts=1))
        (mail_1,) = secure.mails()
        assert "FIRING" in mail_1["Subject"]
        assert logins == [(b"rig", b"s3cret-from-file")]
        by_name = {n[0]: n for n in _notifications(database_url)}
        assert by_name["tls"][2] == "sent"
        # The secret's reference is named, never a value; the server refusing plain text too.
        assert by_name["wrong"][2] == "failed"
        assert "RIG_TEST_UNSET_SMTP_PASSWORD" in (by_name["wrong"][4] or "")
        assert by_name["plain"][2] == "failed" and "SMTP" in (by_name["plain"][4] or "")
    finally:
        secure.stop()


def test_a_growing_edge_backlog_alerts_and_a_draining_one_resolves(
    database_url: str, hook: WebhookSink
) -> None:
    _setup(
        database_url,
        [ChannelIn(name="hook", kind="webhook", config={"url": hook.url})],
        [RuleIn(name="backlog", kind="edge_backlog", params={"min_backlog": 1000})],
    )
    evaluator = Evaluator()

    def report(depth: int) -> None:
        with psycopg.connect(database_url) as conn, conn.transaction():
            conn.execute(
                "INSERT INTO edges (edge_id, backlog, backlog_reported_at) "
                "VALUES ('rig-1', %s, now()) ON CONFLICT (edge_id) DO UPDATE "
                "SET backlog = excluded.backlog, backlog_reported_at = now()",
                (depth,),
            )

    report(5000)
    _cycle(database_url, evaluator)
    assert hook.bodies() == []  # deep, but whether it grows is not known yet
    report(6000)
    _cycle(database_url, evaluator)
    report(6500)
    _cycle(database_url, evaluator)
    (firing,) = hook.bodies()
    assert firing["alert"]["edge_id"] == "rig-1" and "growing" in firing["alert"]["summary"]
    report(200)
    _cycle(database_url, evaluator)
    assert [b["event"] for b in hook.bodies()] == ["firing", "resolved"]
