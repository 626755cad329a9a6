"""Driving the dashboard in a real headless browser: for its tests and its benchmark.

Debian's Chromium (``apt-get install -y chromium``) through Playwright (``pip install
playwright``); Playwright's own browser download is not used (it cannot reach its CDN here).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from cloud.dashboard.router import NODE_MODULES, VENDOR_FILES

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
]
INGEST_KEY = "k" * 32


def chromium_path() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium") or ""):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def missing_prerequisites() -> str | None:
    """Why a browser test cannot run here, or None."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install playwright"
    if chromium_path() is None:
        return "Chromium is not installed: apt-get install -y chromium"
    if not all((NODE_MODULES / path).is_file() for path in VENDOR_FILES.values()):
        return "front-end libraries are not installed: npm ci --prefix cloud/dashboard"
    return None


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright ``Browser``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class ConsoleWatch:
    """Collects a page's errors: uncaught exceptions, console errors and CSP violations."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        self.csp: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        text = message.text
        if "Content Security Policy" in text or "Content-Security-Policy" in text:
            self.csp.append(text)
        elif message.type == "error" and "status of 401" not in text:
            # 401: the login page asking whether a session exists yet.
            self.errors.append(text)


def login(page: Any, base_url: str, username: str, password: str, path: str = "/") -> None:
    """Logs in through the login form and waits for ``path`` to be ready."""
    page.goto(f"{base_url}/login?next={path}")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login-submit")
    page.wait_for_url(f"{base_url}{path.split('?', maxsplit=1)[0]}*")
    wait_ready(page)


def wait_ready(page: Any, timeout_ms: float = 20_000) -> None:
    page.wait_for_function(
        "() => document.body.dataset.ready === 'true' || !!document.body.dataset.error",
        timeout=timeout_ms,
    )
    error = page.evaluate("() => document.body.dataset.error || null")
    if error:
        raise AssertionError(f"page failed to start: {error}")


class Ingest:
    """Posts readings to the cloud's ingest endpoint like an integrator's hardware does."""

    def __init__(self, base_url: str, key: str = INGEST_KEY) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=10, headers={"X-API-KEY": key})

    def post(self, *readings: dict[str, Any]) -> None:
        response = self.client.post("/api/v1/ingest", json={"readings": list(readings)})
        assert response.status_code == 200, response.text

    def close(self) -> None:
        self.client.close()


def poll(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
