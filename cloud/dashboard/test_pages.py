"""Every logged-in page carries the one main navigation from pages/_nav.html."""

from __future__ import annotations

import re

import pytest

from cloud.dashboard.router import MAIN_NAV_MARK, PAGES_DIR, _page

LOGGED_IN_PAGES = sorted(
    p.name
    for p in PAGES_DIR.glob("*.html")
    if not p.name.startswith("_") and 'class="topbar"' in p.read_text(encoding="utf-8")
)


def test_the_logged_in_pages_are_found() -> None:
    assert {"overview.html", "machine.html", "anomalies.html", "admin.html"} <= set(LOGGED_IN_PAGES)


@pytest.mark.parametrize("name", LOGGED_IN_PAGES)
def test_page_gets_the_shared_main_navigation(name: str) -> None:
    body = bytes(_page(name).body).decode()
    assert MAIN_NAV_MARK not in body
    navs = re.findall(r'<nav aria-label="Main">(.*?)</nav>', body, flags=re.S)
    assert len(navs) == 1, f"{name}: one main navigation, from pages/_nav.html"
    links = re.findall(r'data-nav="([a-z]+)"', navs[0])
    assert links == ["overview", "machine", "anomalies", "edges", "admin", "audit"]
