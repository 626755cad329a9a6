"""The edge fleet page in a real headless Chromium: two edges report their status over the
HTTP ingest path (header ``X-Edge-Status`` on a batch, as ``rig-edge`` sends it); an operator
sees both with last seen, version, backlog, drops, per-source health, models and thresholds;
a machine-scoped operator sees only the edge serving their machine, and none of its other
machines. No uncaught errors, no Content-Security-Policy violations.

Reuses the dashboard browser tests' fixtures (module database, API server, users, Chromium)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from cloud.dashboard.browser import INGEST_KEY, ConsoleWatch, login
from cloud.dashboard.tests import test_browser as dashboard_tests

prerequisites = dashboard_tests.prerequisites
module_database = dashboard_tests.module_database
server = dashboard_tests.server
users = dashboard_tests.users
browser = dashboard_tests.browser

pytestmark = pytest.mark.integration


def _report(server: str, edge_id: str, machines: list[str], **status: Any) -> None:
    doc = {
        "v": 1,
        "at": datetime.now(UTC).isoformat(),
        "version": "1.4.2",
        "status": "ok",
        "uptime_s": 3600.0,
        "backlog": 0,
        "dropped": 0,
        "inputs": {"plc": {"healthy": True, "last_reading_age_s": 0.5, "down": []}},
        "machines": machines,
        "models": {m: f"model-{m}" for m in machines},
        "thresholds": {m: "catalog" for m in machines},
        **status,
    }
    readings = [
        {"machine_id": m, "edge_id": edge_id, "seq": i + 1, "temperature": 70.0}
        for i, m in enumerate(machines)
    ]
    response = httpx.post(
        f"{server}/api/v1/ingest",
        json={"readings": readings},
        headers={"X-API-KEY": INGEST_KEY, "X-Edge-Status": orjson.dumps(doc).decode()},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def _rows(page: Any) -> dict[str, dict[str, Any]]:
    return page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#edge-rows tr')].map((r) => [
            r.dataset.edge, {
                state: r.dataset.state,
                version: r.querySelector('.version').textContent,
                backlog: r.querySelector('.backlog').textContent,
                drops: r.querySelector('.drops').textContent,
                dropsFlag: r.querySelector('.drops').dataset.drops,
                sources: [...r.querySelectorAll('.source')].map(
                    (s) => [s.dataset.source, s.dataset.healthy, s.textContent]),
                models: [...r.querySelectorAll('[data-model]')].map((m) => m.textContent),
                thresholds: [...r.querySelectorAll('[data-thresholds]')].map((m) => m.textContent),
            }]))"""
    )


def test_fleet_page_shows_every_edge_and_a_scoped_operator_only_theirs(
    browser: Any, server: str, users: dict[str, tuple[str, str]]
) -> None:
    tag = uuid.uuid4().hex[:5]
    healthy, failing = f"edge-ok-{tag}", f"edge-bad-{tag}"
    # users["scoped"] is assigned machine "A".
    _report(server, healthy, ["A"])
    _report(
        server,
        failing,
        [f"B{tag}", f"C{tag}"],
        status="degraded",
        backlog=1200,
        dropped=7,
        inputs={"plc": {"healthy": False, "last_reading_age_s": 42.0, "down": ["10.0.0.9:502"]}},
    )
    context = browser.new_context(viewport=dashboard_tests.VIEWPORT)
    page = context.new_page()
    watch = ConsoleWatch(page)
    login(page, server, *users["operator"], path="/edges")
    page.wait_for_selector(f'#edge-rows tr[data-edge="{failing}"]')
    rows = _rows(page)
    ok, bad = rows[healthy], rows[failing]
    assert ok["state"] == "ok" and ok["version"] == "1.4.2" and ok["drops"] == "0"
    assert ok["models"] == ["A: model-A"] and ok["thresholds"] == ["A: catalog"]
    assert ok["sources"][0][:2] == ["plc", "true"]
    assert bad["state"] == "degraded" and bad["backlog"] == "1,200"
    assert bad["drops"] == "7" and bad["dropsFlag"] == "true"
    (source,) = bad["sources"]
    assert source[1] == "false" and "10.0.0.9:502" in source[2] and "FAILING" in source[2]
    assert page.get_attribute('[data-nav="edges"]', "aria-current") == "page"
    dashboard_tests._clean(watch)
    context.close()

    context = browser.new_context(viewport=dashboard_tests.VIEWPORT)
    page = context.new_page()
    watch = ConsoleWatch(page)
    login(page, server, *users["scoped"], path="/edges")
    page.wait_for_selector(f'#edge-rows tr[data-edge="{healthy}"]')
    rows = _rows(page)
    assert failing not in rows  # it serves no machine of theirs
    assert rows[healthy]["models"] == ["A: model-A"]
    dashboard_tests._clean(watch)
    context.close()
