"""In Chromium: the login page's ``next=`` stays on this site, and a user changes their own
password on /account. Both go through the cross-origin refusal (cloud/api/security.py) as a
browser's same-origin POSTs, with their Origin header, under the dashboard's CSP.

Reuses the dashboard browser tests' fixtures (module database, API server, Chromium)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from cloud.dashboard.browser import ConsoleWatch, wait_ready
from cloud.dashboard.tests import test_browser as dashboard_tests
from tests.support.accounts import add_user, login

prerequisites = dashboard_tests.prerequisites
module_database = dashboard_tests.module_database
server = dashboard_tests.server
browser = dashboard_tests.browser

pytestmark = pytest.mark.integration


def test_next_stays_on_site_and_own_password_changes(
    browser: Any, server: str, module_database: str
) -> None:
    password = add_user(module_database, "walt", "viewer")
    context = browser.new_context()
    page = context.new_page()
    watch = ConsoleWatch(page)
    try:
        # A tab inside the path: the URL parser drops it and "//evil.example" would leave.
        page.goto(f"{server}/login?next=/%09/evil.example/x")
        page.fill("#username", "walt")
        page.fill("#password", password)
        page.click("#login-submit")
        page.wait_for_url(f"{server}/")
        wait_ready(page)

        page.click("#user-name a")
        page.wait_for_url(f"{server}/account")
        page.fill("#current-password", password)
        page.fill("#new-password", "walts-new-password")
        page.fill("#repeat-password", "walts-new-password")
        page.click("#password-submit")
        page.wait_for_function(
            "() => document.getElementById('password-done').textContent.length > 0"
        )
        assert page.text_content("#password-error") == ""
        # This session goes on; the new password logs in.
        assert page.evaluate("() => fetch('/api/v1/auth/me').then((r) => r.status)") == 200
        with httpx.Client(base_url=server, timeout=10) as client:
            login(client, "walt", "walts-new-password")
        assert not watch.errors and not watch.csp, (watch.errors, watch.csp)
    finally:
        context.close()
