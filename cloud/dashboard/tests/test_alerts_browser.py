"""Acceptance of the operator's loop (issue 13), end to end with real processes: ``rig-cloud
serve`` and ``rig-cloud alerts`` on an embedded PostgreSQL, an SMTP server (aiosmtpd) and a
webhook receiver. Readings an integrator posts to /api/v1/ingest with a threshold-breaking
value become anomalies; one notification reaches the mail server and the webhook (not one
per reading); the operator acknowledges and resolves it in the feed and on the anomaly page
in Chromium; the alert is resolved and that is notified once too. A viewer gets no buttons,
a scoped operator sees only its machines.

The readings are plain, as an integrator posts them (no ``detection``): the anomaly is the
cloud's own verdict against the machine's thresholds (cloud/scoring.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest

from cloud.dashboard.browser import INGEST_KEY, ConsoleWatch, Ingest, login
from cloud.dashboard.tests.test_browser import (  # the module's fixtures, reused
    VIEWPORT,
    _start_api,
    browser,
    module_database,
    prerequisites,
)
from tests.support.accounts import add_user, bearer
from tests.support.accounts import login as api_login
from tests.support.processes import Service, free_port, wait_until
from tests.support.receivers import MailSink, WebhookSink

pytestmark = pytest.mark.integration

__all__ = ["browser", "module_database", "prerequisites"]


@pytest.fixture(scope="module")
def receivers() -> Iterator[tuple[MailSink, WebhookSink]]:
    mail = MailSink().start()
    hook = WebhookSink().start()
    yield mail, hook
    hook.stop()
    mail.stop()


@pytest.fixture(scope="module")
def loop(
    prerequisites: None,
    module_database: str,
    receivers: tuple[MailSink, WebhookSink],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    logs = tmp_path_factory.mktemp("alert-logs")
    port = free_port()
    api = _start_api(module_database, logs, port, name="api-alerts")
    base = f"http://127.0.0.1:{port}"
    alerts = Service(
        "alerts",
        ["cloud.cli", "alerts", "--tick", "1"],
        logs,
        {"DATABASE_URL": module_database},
    ).start()
    users = {
        "admin": ("ada", add_user(module_database, "ada", "admin")),
        "operator": ("olga", add_user(module_database, "olga", "operator")),
        "viewer": ("vic", add_user(module_database, "vic", "viewer")),
    }
    mail, hook = receivers
    with httpx.Client(base_url=base, timeout=10) as client:
        admin = bearer(api_login(client, *users["admin"]))
        for channel in (
            {"name": "ops-hook", "kind": "webhook", "config": {"url": f"{hook.url}/hook"}},
            {
                "name": "ops-mail",
                "kind": "email",
                "config": {
                    "host": "127.0.0.1",
                    "port": mail.port,
                    "sender": "rig-alpha@example.test",
                    "to": ["operators@example.test"],
                },
            },
        ):
            assert (
                client.post("/api/v1/alerting/channels", json=channel, headers=admin).status_code
                == 201
            )
        rule = {
            "name": "critical anomalies",
            "kind": "anomaly",
            "params": {"min_severity": "critical"},
        }
        assert client.post("/api/v1/alerting/rules", json=rule, headers=admin).status_code == 201
    try:
        yield {"base": base, "users": users, "db": module_database, "services": [api, alerts]}
    finally:
        alerts.stop()
        api.stop()


def _breaking(machine: str) -> dict[str, Any]:
    # 40 mm/s is past vibration's critical limit (the catalog's 7 mm/s): the cloud judges
    # the plain reading and stores the anomaly itself.
    return {
        "machine_id": machine,
        "ts": datetime.now(UTC).isoformat(),
        "vibration": 40.0,
        "rpm": 3000.0,
    }


def _page(browser: Any, base: str, user: tuple[str, str], path: str) -> tuple[Any, ConsoleWatch]:
    page = browser.new_context(viewport=VIEWPORT).new_page()
    watch = ConsoleWatch(page)
    login(page, base, *user, path=path)
    return page, watch


def _notified(db: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(db) as conn:
        return conn.execute(
            "SELECT channel_name, event, status FROM alert_notifications ORDER BY id"
        ).fetchall()


def test_integrator_reading_to_one_notification_then_acknowledged_and_resolved_in_browser(
    loop: dict[str, Any], receivers: tuple[MailSink, WebhookSink], browser: Any
) -> None:
    mail, hook = receivers
    base, db, services = loop["base"], loop["db"], loop["services"]
    machine = f"M{uuid.uuid4().hex[:5]}"
    ingest = Ingest(base, INGEST_KEY)
    try:
        for _ in range(5):
            ingest.post(_breaking(machine))
    finally:
        ingest.close()
    wait_until(
        lambda: len(mail.mails()) >= 1 and len(hook.bodies("/hook")) >= 1,
        30,
        "the alert by mail and webhook",
        services=services,
    )
    with psycopg.connect(db) as conn:
        stored = conn.execute(
            "SELECT count(*) FROM anomaly_detections WHERE machine_id = %s", (machine,)
        ).fetchone()
    assert stored == (5,)

    # The operator's feed shows the five anomalies, live, with the alert and its deliveries.
    page, watch = _page(browser, base, loop["users"]["operator"], "/anomalies")
    page.select_option("#f-machine", machine)
    page.wait_for_function("() => document.querySelectorAll('#feed-rows tr').length === 5")
    assert "ops-mail: firing sent" in page.text_content("#alerts")
    first = page.get_attribute("#feed-rows tr", "data-anomaly")
    page.click(f'#feed-rows tr[data-anomaly="{first}"] button[data-step="acknowledge"]')
    page.fill("#step-note", "on my way")
    page.click("#step-confirm")
    page.wait_for_selector(f'#feed-rows tr[data-anomaly="{first}"][data-state="acknowledged"]')

    # The anomaly page: the same workflow with its context; resolving there.
    page.goto(f"{base}/anomalies/{first}")
    page.wait_for_selector('#workflow[data-ready="true"]')
    assert "acknowledged by olga" in page.text_content("#workflow-audit")
    assert "on my way" in page.text_content("#workflow-audit")
    assert page.text_content("#context-model").startswith("Judged by the thresholds")
    assert page.locator("#context svg.window-chart polyline").count() >= 1
    page.click('#workflow button[data-step="resolve"]')
    page.fill("#step-note", "loose mount tightened")
    page.click("#step-confirm")
    page.wait_for_selector('#workflow[data-state="resolved"]')
    assert not watch.csp and not watch.errors, (watch.csp, watch.errors)

    # The rest of the fault resolved from the feed: the alert resolves, notified once.
    page.goto(f"{base}/anomalies")
    page.wait_for_function("() => document.body.dataset.ready === 'true'")
    page.select_option("#f-machine", machine)
    page.select_option("#f-state", "open")
    for remaining in (3, 2, 1, 0):
        page.click('#feed-rows button[data-step="resolve"] >> nth=0')
        page.click("#step-confirm")
        page.wait_for_function(
            "(n) => document.querySelectorAll('#feed-rows tr').length === n", arg=remaining
        )
    wait_until(
        lambda: len(hook.bodies("/hook")) >= 2, 30, "the resolved notification", services=services
    )
    assert [b["event"] for b in hook.bodies("/hook")] == ["firing", "resolved"]
    wait_until(lambda: len(mail.mails()) >= 2, 30, "the resolved mail", services=services)
    subjects = [m["Subject"] for m in mail.mails()]
    assert len(subjects) == 2 and "FIRING" in subjects[0] and "RESOLVED" in subjects[1]
    assert machine in mail.mails()[0].get_payload()
    assert sorted(_notified(db)) == sorted(
        [
            ("ops-hook", "firing", "sent"),
            ("ops-mail", "firing", "sent"),
            ("ops-hook", "resolved", "sent"),
            ("ops-mail", "resolved", "sent"),
        ]
    )
    with psycopg.connect(db) as conn:
        audit = conn.execute(
            "SELECT acknowledged_by, resolved_by, resolution_note FROM anomaly_detections "
            "WHERE id = %s",
            (int(first or 0),),
        ).fetchone()
    assert audit == ("olga", "olga", "loose mount tightened")
    page.context.close()


def test_viewers_get_no_buttons_and_scoped_operators_see_their_machines_only(
    loop: dict[str, Any], browser: Any
) -> None:
    base, db = loop["base"], loop["db"]
    mine, other = f"S{uuid.uuid4().hex[:5]}", f"O{uuid.uuid4().hex[:5]}"
    ingest = Ingest(base, INGEST_KEY)
    try:
        ingest.post(_breaking(mine), _breaking(other))
    finally:
        ingest.close()
    scoped = ("sam", add_user(db, "sam", "operator", [mine]))
    page, _ = _page(browser, base, scoped, "/anomalies")
    page.wait_for_selector("#feed-rows tr")
    machines = page.eval_on_selector_all(
        "#feed-rows tr td:nth-child(2)", "c => c.map(x => x.textContent)"
    )
    assert set(machines) == {mine}
    assert page.locator('#feed-rows button[data-step="acknowledge"]').count() == 1
    # Pushed live: a new anomaly of its machine appears without a reload; another's does not.
    marker = page.evaluate("() => (window.__marker = Math.random())")
    ingest = Ingest(base, INGEST_KEY)
    try:
        ingest.post(_breaking(other), _breaking(mine))
    finally:
        ingest.close()
    page.wait_for_function("() => document.querySelectorAll('#feed-rows tr').length === 2")
    machines = page.eval_on_selector_all(
        "#feed-rows tr td:nth-child(2)", "c => c.map(x => x.textContent)"
    )
    assert machines == [mine, mine]
    # Its alert and where it was delivered, live too.
    page.wait_for_function(
        "(m) => [...document.querySelectorAll('#alerts li')].some("
        "li => li.textContent.includes(`machine ${m}`) && li.textContent.includes('firing sent'))",
        arg=mine,
    )
    assert other not in page.text_content("#alerts")
    assert page.evaluate("() => window.__marker") == marker, "the page was reloaded"
    page.context.close()

    page, _ = _page(browser, base, loop["users"]["viewer"], "/anomalies")
    page.wait_for_selector("#feed-rows tr")
    assert page.locator("#feed-rows button[data-step]").count() == 0
    first = page.get_attribute("#feed-rows tr", "data-anomaly")
    page.goto(f"{base}/anomalies/{first}")
    page.wait_for_selector('#workflow[data-ready="true"]')
    assert page.locator("#workflow button[data-step]").count() == 0
    page.context.close()
