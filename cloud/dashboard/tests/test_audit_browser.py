"""The audit viewer in Chromium (issue 15 item 1): an admin sees the changes and logins of a
live ``rig-cloud serve``, filters them, sees a burst of failed logins highlighted, exports
CSV and PDF and verifies the chain; the page is admin-only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud.dashboard.browser import ConsoleWatch, login
from cloud.dashboard.tests.test_browser import (  # the module's fixtures, reused
    VIEWPORT,
    _start_api,
    browser,
    module_database,
    prerequisites,
)
from tests.support.accounts import add_user, bearer
from tests.support.accounts import login as api_login
from tests.support.processes import free_port

pytestmark = pytest.mark.integration

__all__ = ["browser", "module_database", "prerequisites"]


@pytest.fixture(scope="module")
def audited(
    prerequisites: None, module_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    port = free_port()
    api = _start_api(module_database, tmp_path_factory.mktemp("audit-logs"), port, "api-audit")
    base = f"http://127.0.0.1:{port}"
    admin = ("ada", add_user(module_database, "ada", "admin"))
    viewer = ("vic", add_user(module_database, "vic", "viewer"))
    add_user(module_database, "mallory", "operator")
    with httpx.Client(base_url=base, timeout=10) as client:
        for _ in range(5):  # a burst of failed logins for one account
            client.post("/api/v1/auth/login", json={"username": "mallory", "password": "guess-1"})
        headers = bearer(api_login(client, *admin))
        client.cookies.clear()
        for high in (5000, 4500):
            answer = client.put(
                "/api/v1/machines/A/thresholds/rpm", json={"critical_high": high}, headers=headers
            )
            assert answer.status_code == 200, answer.text
    try:
        yield {"base": base, "admin": admin, "viewer": viewer}
    finally:
        api.stop()


def test_audit_viewer_filters_highlights_exports_and_verifies(
    browser: Any, audited: dict[str, Any], tmp_path: Path
) -> None:
    base = audited["base"]
    page = browser.new_context(viewport=VIEWPORT, accept_downloads=True).new_page()
    watch = ConsoleWatch(page)
    login(page, base, *audited["admin"], path="/audit")
    rows = page.locator("#event-rows tr")
    assert rows.count() >= 8  # 5 failures, ada's login, two threshold changes
    # The burst: listed, and its rows marked.
    assert "5 failed logins for mallory" in page.locator("#bursts").inner_text()
    assert page.locator("#event-rows tr.burst").count() == 5

    page.fill("#f-action", "threshold.")
    page.click("#f-apply")
    page.wait_for_function(
        "() => !document.body.dataset.loading"
        " && document.querySelectorAll('#event-rows tr').length === 2"
    )
    first = page.locator("#event-rows tr").first
    assert "threshold:A/rpm" in first.inner_text() and "ada (admin)" in first.inner_text()
    assert '"high":5000' in first.locator("td.change").inner_text()

    with page.expect_download() as csv_download:
        page.click("#export-csv")
    csv_path = tmp_path / "audit.csv"
    csv_download.value.save_as(csv_path)
    lines = csv_path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("category,seq,at,actor") and len(lines) == 3
    with page.expect_download() as pdf_download:
        page.click("#export-pdf")
    pdf_path = tmp_path / "audit.pdf"
    pdf_download.value.save_as(pdf_path)
    assert pdf_path.read_bytes().startswith(b"%PDF")

    page.click("#verify")
    page.wait_for_function("() => document.getElementById('verify-result').dataset.ok")
    assert page.locator("#verify-result").inner_text().startswith("Intact")
    assert not watch.csp and not watch.errors, (watch.csp, watch.errors)

    other = browser.new_context(viewport=VIEWPORT).new_page()
    login(other, base, *audited["viewer"], path="/")
    assert other.goto(f"{base}/audit").status == 403
