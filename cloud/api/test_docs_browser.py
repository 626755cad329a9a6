"""/docs (Swagger UI) and /redoc render in a real headless Chromium with the network cut:
every request that is not to the API itself is refused and recorded, so a page that still
pulled a script, a stylesheet or a font from a CDN fails here (as it would be blank on an
air-gapped plant network)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from cloud.dashboard.browser import ConsoleWatch, chromium, missing_prerequisites
from tests.support.processes import Service, free_port, http_ok, wait_until

pytestmark = pytest.mark.integration
TITLE = "Rig Alpha cloud API"


@pytest.fixture
def api(log_dir: Path, database_url: str) -> Iterator[str]:
    reason = missing_prerequisites()
    if reason:
        pytest.fail(f"browser test cannot run: {reason}")
    port = free_port()
    service = Service(
        "api-docs",
        ["cloud.cli", "serve", "--port", str(port)],
        log_dir,
        {"DATABASE_URL": database_url},
    ).start()
    try:
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 60, "api up", services=[service]
        )
        yield f"http://127.0.0.1:{port}"
    finally:
        service.stop()


def _offline_page(browser: Any, base: str) -> tuple[Any, Any, list[str], ConsoleWatch]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    refused: list[str] = []
    ours = urlparse(base).netloc

    def cut(route: Any) -> None:
        if urlparse(route.request.url).netloc == ours:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    context.route("**/*", cut)
    page = context.new_page()
    return context, page, refused, ConsoleWatch(page)


@pytest.mark.parametrize(
    ("path", "rendered"),
    [
        ("/docs", ".swagger-ui .info .title"),
        ("/redoc", "redoc h1"),
    ],
)
def test_api_docs_render_offline(api: str, path: str, rendered: str, tmp_path: Path) -> None:
    with chromium() as browser:
        context, page, refused, watch = _offline_page(browser, api)
        try:
            page.goto(f"{api}{path}")
            heading = page.wait_for_selector(rendered, timeout=30_000)
            assert heading is not None and TITLE in heading.inner_text()
            # The operations themselves, not just the header: the schema was loaded.
            text = page.inner_text("body")
            assert "/api/v1/ingest" in text, text[:2000]
            page.screenshot(path=str(tmp_path / f"{path.strip('/')}.png"))
        finally:
            context.close()
    assert refused == [], f"{path} tried to reach outside the API: {refused}"
    assert watch.errors == [], watch.errors
    # The one thing the page's policy stops: ReDoc's "powered by" logo from its vendor's CDN.
    assert all("cdn.redoc.ly" in line for line in watch.csp), watch.csp
