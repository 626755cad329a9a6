"""The operator dashboard in a real headless Chromium against the real cloud API and
PostgreSQL: login, live tiles from readings posted to ingest, threshold colours, custom-sensor
widgets, the 3D twin, admin threshold edits reaching an open operator page, role checks,
the stale indicator and reconnection, the machine page. Every page is also checked for
uncaught errors and Content-Security-Policy violations."""

from __future__ import annotations

import math
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from cloud.dashboard.browser import (
    INGEST_KEY,
    ConsoleWatch,
    Ingest,
    chromium,
    login,
    missing_prerequisites,
    wait_ready,
)
from cloud.db.migrate import apply_migrations
from tests.support.accounts import add_user
from tests.support.processes import Service, free_port, http_ok, wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SCREENSHOTS = REPO / "docs" / "screenshots"
VIEWPORT = {"width": 1600, "height": 1000}


@pytest.fixture(scope="module")
def prerequisites() -> None:
    reason = missing_prerequisites()
    if reason and os.environ.get("CI"):
        # `make test` installs Chromium and the npm packages: in CI a missing one is a broken
        # set-up step, not a reason to pass without the browser tests.
        pytest.fail(f"browser tests cannot run in CI: {reason}")
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def module_database(pg_server: Any) -> Iterator[str]:
    name = f"t_dash_{uuid.uuid4().hex[:10]}"
    admin = f"postgresql://postgres@127.0.0.1:{pg_server.port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://postgres@127.0.0.1:{pg_server.port}/{name}"
    apply_migrations(url)
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _start_api(database_url: str, log_dir: Path, port: int, name: str = "api") -> Service:
    env = {"DATABASE_URL": database_url, "RIG_INGEST_API_KEY": INGEST_KEY}
    api = Service(name, ["cloud.cli", "serve", "--port", str(port)], log_dir, env).start()
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), 60, "api up", services=[api])
    return api


@pytest.fixture(scope="module")
def server(
    prerequisites: None, module_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port()
    api = _start_api(module_database, tmp_path_factory.mktemp("dash-logs"), port)
    yield f"http://127.0.0.1:{port}"
    api.stop()


@pytest.fixture(scope="module")
def users(module_database: str) -> dict[str, tuple[str, str]]:
    return {
        "admin": ("admin", add_user(module_database, "admin", "admin")),
        "operator": ("op", add_user(module_database, "op", "operator")),
        "scoped": ("op_a", add_user(module_database, "op_a", "operator", ["A"])),
    }


@pytest.fixture(scope="module")
def browser(prerequisites: None) -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def ingest(server: str) -> Iterator[Ingest]:
    client = Ingest(server)
    yield client
    client.close()


def _machine() -> str:
    return f"T{uuid.uuid4().hex[:6]}"


def _open(browser: Any, server: str, user: tuple[str, str], path: str) -> tuple[Any, Any]:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    watch = ConsoleWatch(page)
    login(page, server, *user, path=path)
    return page, watch


def _clean(watch: ConsoleWatch) -> None:
    assert not watch.csp, f"Content-Security-Policy violations: {watch.csp}"
    assert not watch.errors, f"errors in the page: {watch.errors}"


def _tile(page: Any, sensor: str) -> dict[str, Any]:
    return page.evaluate(
        """(s) => {
            const t = document.querySelector(`#tiles [data-sensor="${s}"]`);
            return t && {state: t.dataset.state,
                         value: t.querySelector('.tile-value').textContent};
        }""",
        sensor,
    )


def _browser_frames(page: Any, count: int) -> None:
    """Let the page's browser draw ``count`` animation frames: a wait measured in the
    browser's own time, so a slow machine waits longer instead of failing. Negative checks
    ("nothing rendered meanwhile") use it instead of a fixed number of milliseconds."""
    page.evaluate(
        """(n) => new Promise((done) => {
            let left = n;
            const next = () => (--left <= 0 ? done() : requestAnimationFrame(next));
            requestAnimationFrame(next);
        })""",
        count,
    )


def _wait_tile(page: Any, sensor: str, value: str, state: str, timeout_ms: float = 30_000) -> None:
    page.wait_for_function(
        """([s, v, st]) => {
            const t = document.querySelector(`#tiles [data-sensor="${s}"]`);
            return t && t.dataset.state === st
                && t.querySelector('.tile-value').textContent === v;
        }""",
        arg=[sensor, value, state],
        timeout=timeout_ms,
    )


class Feeder:
    """Posts a reading for one machine every ``period`` seconds from a thread (the twin
    animates only while readings arrive); ``values`` may be changed while it runs."""

    def __init__(self, server: str, machine: str, values: Any, period: float = 0.25):
        self.client = Ingest(server)
        self.machine = machine
        self.values = values
        self.period = period
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        tick = 0
        while not self.stop_event.is_set():
            values = self.values(tick) if callable(self.values) else self.values
            self.client.post({"machine_id": self.machine, **values})
            tick += 1
            self.stop_event.wait(self.period)

    def __enter__(self) -> Feeder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(10)
        self.client.close()


# -- login and roles ------------------------------------------------------------------------


def test_login_required_and_wrong_password_refused(
    browser: Any, server: str, users: dict[str, tuple[str, str]]
) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    watch = ConsoleWatch(page)
    page.goto(f"{server}/")
    assert page.url.startswith(f"{server}/login?next=")
    page.fill("#username", "op")
    page.fill("#password", "not-the-password")
    page.click("#login-submit")
    page.wait_for_function("() => document.getElementById('login-error').textContent !== ''")
    assert "Wrong user name or password" in page.text_content("#login-error")
    assert not [c for c in context.cookies() if c["name"] == "rig_session"]

    login(page, server, *users["operator"])
    cookie = next(c for c in context.cookies() if c["name"] == "rig_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.text_content("#user-name") == "op · operator"
    assert page.is_hidden("#nav-admin")
    # Logging out ends the session: the overview sends the browser back to the login form.
    page.click("#logout")
    page.wait_for_url(f"{server}/login*")
    page.goto(f"{server}/")
    assert "/login" in page.url
    _clean(watch)
    context.close()


def test_operator_cannot_open_admin_page(
    browser: Any, server: str, users: dict[str, tuple[str, str]]
) -> None:
    page, watch = _open(browser, server, users["operator"], "/")
    response = page.goto(f"{server}/admin")
    assert response is not None and response.status == 403
    assert "ACCESS DENIED" in page.text_content("h1")
    assert page.query_selector("#thr-rows") is None
    # Nor can the page's API calls be made by hand.
    status = page.evaluate(
        """() => fetch('/api/v1/machines/A/thresholds/temperature', {method: 'PUT',
            headers: {'Content-Type': 'application/json'},
            body: JSON.stringify({critical_low: 1, critical_high: 2})}).then(r => r.status)"""
    )
    assert status == 403
    # The 403 answers themselves are logged by the browser; nothing else may be.
    assert not watch.csp
    assert all("status of 403" in e for e in watch.errors), watch.errors
    page.context.close()


def test_machine_scoped_operator_cannot_open_other_machines(
    browser: Any, server: str, users: dict[str, tuple[str, str]]
) -> None:
    page, watch = _open(browser, server, users["scoped"], "/machines/A")
    response = page.goto(f"{server}/machines/B")
    assert response is not None and response.status == 403
    assert not watch.csp
    assert all("status of 403" in e for e in watch.errors), watch.errors
    page.context.close()


# -- overview: live tiles, thresholds, custom sensors -----------------------------------------


def test_tiles_update_live_and_turn_critical(
    browser: Any, server: str, users: dict[str, tuple[str, str]], ingest: Ingest
) -> None:
    machine = _machine()
    ingest.post({"machine_id": machine, "temperature": 72.0, "rpm": 3000.0})
    page, watch = _open(browser, server, users["operator"], f"/?machine={machine}")
    _wait_tile(page, "temperature", "72.00", "nominal")
    marker = page.evaluate("() => (window.__marker = Math.random())")

    ingest.post({"machine_id": machine, "temperature": 73.25, "pressure": 10.5})
    _wait_tile(page, "temperature", "73.25", "nominal")
    _wait_tile(page, "pressure", "10.50", "nominal")
    # 85 > 90 × 0.9: warning by the default rule; 95 > 90: critical.
    ingest.post({"machine_id": machine, "temperature": 85.0})
    _wait_tile(page, "temperature", "85.00", "warning")
    ingest.post({"machine_id": machine, "temperature": 95.0})
    _wait_tile(page, "temperature", "95.00", "critical")
    health = page.get_attribute('#health [data-category="environmental"]', "data-state")
    assert health == "critical"
    # Sparkline history, average and range come from the last readings.
    stats = page.evaluate(
        """() => { const t = document.querySelector('#tiles [data-sensor="temperature"]');
                   return [t.querySelector('.tile-stats dd').textContent,
                           t.querySelector('.tile-trend').dataset.trend]; }"""
    )
    assert stats[0] == f"{(72.0 + 73.25 + 85.0 + 95.0) / 4:.2f}"
    assert stats[1] == "up"
    # A reading of another machine does not touch this one's tiles: once a later reading of
    # this machine has arrived, the other one (stored and pushed before it) has had its
    # chance to.
    ingest.post({"machine_id": _machine(), "temperature": 60.0})
    ingest.post({"machine_id": machine, "pressure": 10.75})
    _wait_tile(page, "pressure", "10.75", "nominal")
    assert _tile(page, "temperature") == {"state": "critical", "value": "95.00"}
    assert page.evaluate("() => window.__marker") == marker, "the page was reloaded"
    assert page.get_attribute("#conn", "data-state") == "live"
    _clean(watch)
    page.context.close()


def test_tiles_follow_the_simulator_through_the_edge(
    browser: Any,
    server: str,
    users: dict[str, tuple[str, str]],
    tmp_path: Path,
    log_dir: Path,
) -> None:
    """The whole chain a control room sees: rig-sim's Modbus server -> rig-edge -> HTTPS
    ingest -> PostgreSQL -> NOTIFY -> WebSocket -> tile, with no reload."""
    from tests.support.pipeline import edge_config, start_edge, start_simulator, wait_health

    machine = f"S{uuid.uuid4().hex[:5]}"
    key_file = tmp_path / "ingest-key"
    key_file.write_text(INGEST_KEY)
    sim, sim_port = start_simulator(log_dir, None, [machine], 2.0)
    cfg = edge_config(
        tmp_path,
        sim_port=sim_port,
        machines=[machine],
        poll_interval_s=0.25,
        edge_id=f"edge-{machine}",
        output={
            "kind": "http",
            "url": f"{server}/api/v1/ingest",
            "api_key_file": str(key_file),
            "batch_readings": 50,
            "timeout_s": 5,
        },
    )
    edge = start_edge(cfg, log_dir)
    try:
        # The edge is up and the cloud has confirmed its readings before the page opens: the
        # waits below are about the page, not about how fast a loaded machine starts Python.
        wait_health(
            cfg,
            lambda h: h["output"]["healthy"] is True,
            "the edge forwarding to the cloud",
            timeout=120,
            services=[sim, edge],
        )
        page, watch = _open(browser, server, users["operator"], f"/?machine={machine}")
        seen: set[str] = set()
        for _ in range(3):  # three different simulated temperatures arrive by themselves
            page.wait_for_function(
                """(seen) => {
                    const t = document.querySelector('#tiles [data-sensor="temperature"]');
                    const v = t && t.querySelector('.tile-value').textContent;
                    return v && /^[0-9.]+$/.test(v) && !seen.includes(v);
                }""",
                arg=sorted(seen),
                timeout=60_000,
            )
            seen.add(_tile(page, "temperature")["value"])
        assert len(seen) == 3
        assert page.get_attribute("#conn", "data-state") == "live"
        _clean(watch)
        page.context.close()
    finally:
        edge.stop()
        sim.stop()


def test_prediction_dots_follow_detection_forecast(
    browser: Any, server: str, users: dict[str, tuple[str, str]], ingest: Ingest
) -> None:
    machine = _machine()
    ingest.post({"machine_id": machine, "temperature": 72.0})
    page, watch = _open(browser, server, users["operator"], f"/?machine={machine}")
    _wait_tile(page, "temperature", "72.00", "nominal")
    dots = '#tiles [data-sensor="temperature"] .dots'
    assert page.is_hidden(dots)
    forecast = {"temperature": [74.0, 82.0, 88.0, 93.0]}
    ingest.post(
        {
            # The edge's own verdict (edge_id and seq; cloud/scoring.py's trust rule).
            "machine_id": machine,
            "edge_id": f"rig-{machine}",
            "seq": 1,
            "temperature": 73.0,
            "detection": {
                "method": "lstm",
                "is_anomaly": False,
                "score": 0.2,
                "forecast": forecast,
            },
        }
    )
    page.wait_for_selector(f"{dots}:not([hidden])")
    states = page.eval_on_selector_all(f"{dots} .dot", "els => els.map(e => e.dataset.state)")
    assert states == ["nominal", "warning", "warning", "critical"]
    ingest.post({"machine_id": machine, "temperature": 73.5})
    page.wait_for_selector(dots, state="hidden")
    _clean(watch)
    page.context.close()


def test_custom_sensor_widget_appears_by_itself(
    browser: Any, server: str, users: dict[str, tuple[str, str]], ingest: Ingest
) -> None:
    machine = _machine()
    ingest.post({"machine_id": machine, "temperature": 72.0})
    page, watch = _open(browser, server, users["operator"], f"/?machine={machine}")
    _wait_tile(page, "temperature", "72.00", "nominal")
    assert page.query_selector('#custom-tiles [data-sensor="mud_weight"]') is None
    assert page.is_visible("#custom-empty")

    ingest.post({"machine_id": machine, "temperature": 72.5, "custom_sensors": {"mud_weight": 9.6}})
    widget = '#custom-tiles [data-sensor="mud_weight"]'
    page.wait_for_selector(widget)
    page.wait_for_function(
        "(w) => document.querySelector(w + ' .tile-value').textContent === '9.60'", arg=widget
    )
    assert "MUD WEIGHT" in page.text_content(f"{widget} .tile-name")
    assert page.is_hidden("#custom-empty")
    ingest.post({"machine_id": machine, "custom_sensors": {"mud_weight": 10.25}})
    page.wait_for_function(
        "(w) => document.querySelector(w + ' .tile-value').textContent === '10.25'", arg=widget
    )
    assert page.is_visible('#health [data-category="custom"]')
    _clean(watch)
    page.context.close()


# -- the 3D twin --------------------------------------------------------------------------------


def test_twin_renders_follows_rpm_and_freezes_when_stopped(
    browser: Any, server: str, users: dict[str, tuple[str, str]]
) -> None:
    machine = _machine()
    values = {"rpm": 3000.0, "vibration": 2.0, "temperature": 72.0}
    with Feeder(server, machine, values) as feeder:
        page, watch = _open(browser, server, users["operator"], f"/?machine={machine}")
        page.wait_for_function("() => window.__twin && window.__twin.running", timeout=10_000)
        first = page.evaluate("() => window.__twin.sample()")
        assert first["lit"] > 2000, f"the 3D canvas is (nearly) blank: {first}"
        speed = page.evaluate("() => window.__twin.rotationSpeed")
        assert math.isclose(speed, 2 * math.pi, rel_tol=1e-6)
        frames = page.evaluate("() => window.__twin.frames")
        page.wait_for_function(f"() => window.__twin.frames > {frames + 5}", timeout=30_000)
        page.wait_for_function(
            "(h) => window.__twin.sample().hash !== h", arg=first["hash"], timeout=30_000
        )  # the drill turns
        assert page.evaluate("() => window.__twin.color") == "#22d3ee"

        feeder.values = {"rpm": 6000.0, "vibration": 2.0, "temperature": 72.0}
        page.wait_for_function(
            "() => Math.abs(window.__twin.rotationSpeed - 4 * Math.PI) < 1e-6", timeout=10_000
        )
        # Hot: past the critical limit the wireframe is neon red; vibration shakes it.
        feeder.values = {"rpm": 6000.0, "vibration": 12.0, "temperature": 99.0}
        page.wait_for_function("() => window.__twin.color === '#ff2d55'", timeout=10_000)
        assert page.evaluate("() => window.__twin.shake") > 0.1
        assert page.evaluate("() => window.__twin.sample().red") > 500

        # Stopped machine (rpm 0): the model freezes.
        feeder.values = {"rpm": 0.0, "vibration": 0.0, "temperature": 72.0}
        page.wait_for_function("() => !window.__twin.running", timeout=10_000)
        _browser_frames(page, 2)
        frozen = page.evaluate("() => [window.__twin.frames, window.__twin.sample().hash]")
        _browser_frames(page, 60)  # the browser drew 60 frames; the twin must have drawn none
        later = page.evaluate("() => [window.__twin.frames, window.__twin.sample().hash]")
        assert later == frozen, "the twin kept animating a stopped machine"
    # Readings stop arriving: it stays frozen and the page says the data is stale.
    page.wait_for_selector("#data-stale:not([hidden])", timeout=30_000)
    assert page.text_content("#twin-status") == "NO DATA · FROZEN"
    _clean(watch)
    page.context.close()


def test_twin_caps_frame_rate_and_pauses_when_hidden(
    browser: Any, server: str, users: dict[str, tuple[str, str]]
) -> None:
    machine = _machine()
    with Feeder(server, machine, {"rpm": 3000.0, "temperature": 72.0}):
        page, watch = _open(browser, server, users["operator"], f"/?machine={machine}")
        page.wait_for_function("() => window.__twin && window.__twin.running", timeout=10_000)
        # Frames at least 32 ms apart: whatever the machine, at most 32 in any second. (How
        # many a given machine manages is not a property of the page: no lower bound.)
        start = page.evaluate("() => window.__twin.frames")
        page.wait_for_function(f"() => window.__twin.frames > {start + 40}", timeout=60_000)
        fps = page.evaluate("() => window.__twin.fps")
        assert 0 < fps <= 32, fps
        # A hidden tab renders nothing (document.visibilityState).
        page.evaluate(
            """() => { Object.defineProperty(document, 'visibilityState',
                                             {configurable: true, get: () => 'hidden'});
                       document.dispatchEvent(new Event('visibilitychange')); }"""
        )
        _browser_frames(page, 2)
        hidden_at = page.evaluate("() => window.__twin.frames")
        _browser_frames(page, 60)  # the browser drew 60 frames; the hidden twin none
        assert page.evaluate("() => window.__twin.frames") == hidden_at
        page.evaluate(
            """() => { Object.defineProperty(document, 'visibilityState',
                                             {configurable: true, get: () => 'visible'});
                       document.dispatchEvent(new Event('visibilitychange')); }"""
        )
        page.wait_for_function(f"() => window.__twin.frames > {hidden_at + 3}", timeout=5000)
    _clean(watch)
    page.context.close()


# -- admin --------------------------------------------------------------------------------------


def test_admin_threshold_edit_recolours_open_operator_page(
    browser: Any, server: str, users: dict[str, tuple[str, str]], ingest: Ingest
) -> None:
    machine = _machine()
    ingest.post({"machine_id": machine, "temperature": 72.0, "rpm": 3000.0})
    operator, operator_watch = _open(browser, server, users["operator"], f"/?machine={machine}")
    _wait_tile(operator, "temperature", "72.00", "nominal")
    operator.evaluate("() => (window.__marker = 'no reload')")

    admin, admin_watch = _open(browser, server, users["admin"], f"/admin?machine={machine}")
    row = '#thr-rows tr[data-sensor="temperature"]'
    assert admin.get_attribute(row, "data-source") == "default"
    admin.fill(f'{row} input[name="temperature.critical_high"]', "71")
    admin.fill(f'{row} input[name="temperature.warn_high"]', "")
    admin.click(f"{row} button.primary")
    admin.wait_for_function(
        f"() => document.querySelector('{row}').dataset.source === 'machine'", timeout=10_000
    )
    # The open operator page recolours without a reload.
    _wait_tile(operator, "temperature", "72.00", "critical")
    assert operator.evaluate("() => window.__marker") == "no reload"
    assert operator.evaluate("() => window.__twin.color") == "#ff2d55"

    # An invalid edit is refused with the API's message next to the row.
    admin.fill(f'{row} input[name="temperature.critical_low"]', "80")
    admin.click(f"{row} button.primary")
    admin.wait_for_function(
        f"() => document.querySelector('{row} .row-error').textContent.includes('critical')"
    )

    # Back to the default: the operator's tile is nominal again.
    admin.click(f"{row} button:not(.primary)")
    admin.wait_for_function(
        f"() => document.querySelector('{row}').dataset.source === 'default'", timeout=10_000
    )
    _wait_tile(operator, "temperature", "72.00", "nominal")
    _clean(operator_watch)
    assert not admin_watch.csp
    # The refused edit's 422 is logged by the browser; nothing else may be.
    assert all("status of 422" in e for e in admin_watch.errors), admin_watch.errors
    operator.context.close()
    admin.context.close()


# -- stale indicator and reconnection -----------------------------------------------------------


def test_stale_indicator_and_reconnect_after_api_restart(
    browser: Any,
    prerequisites: None,
    database_url: str,
    tmp_path: Path,
) -> None:
    port = free_port()
    api = _start_api(database_url, tmp_path, port, "api-first")
    server = f"http://127.0.0.1:{port}"
    user = ("op", add_user(database_url, "op", "operator"))
    machine = _machine()
    feed = Ingest(server)
    try:
        feed.post({"machine_id": machine, "temperature": 72.0})
        page, watch = _open(browser, server, user, f"/?machine={machine}")
        page.wait_for_function("() => document.getElementById('conn').dataset.state === 'live'")
        api.stop()
        # Disconnected: visibly stale within a few seconds.
        page.wait_for_function(
            "() => ['offline', 'stale'].includes(document.getElementById('conn').dataset.state)",
            timeout=8000,
        )
        assert "STALE" in page.text_content("#conn")
        api = _start_api(database_url, tmp_path, port, "api-second")
        page.wait_for_function(
            "() => document.getElementById('conn').dataset.state === 'live'", timeout=30_000
        )
        feed.post({"machine_id": machine, "temperature": 74.0})
        _wait_tile(page, "temperature", "74.00", "nominal")
        page.wait_for_selector("#data-stale", state="hidden", timeout=5000)
        page.context.close()
        # Connection errors while the API was down are expected; CSP violations are not.
        assert not watch.csp
    finally:
        feed.close()
        api.stop()


# -- machine page -------------------------------------------------------------------------------


def test_machine_page_sensors_history_and_anomalies(
    browser: Any, server: str, users: dict[str, tuple[str, str]], ingest: Ingest
) -> None:
    from shared.catalog import CORE_SENSORS

    machine = _machine()
    typical = {s.name: s.typical for s in CORE_SENSORS}
    for i in range(5):
        ingest.post({"machine_id": machine, **typical, "temperature": 70.0 + i})
    ingest.post({"machine_id": machine, "custom_sensors": {"arm_torque": 3.5}})
    page, watch = _open(browser, server, users["operator"], f"/machines/{machine}")
    assert page.text_content("#machine-title") == f"MACHINE {machine}"
    rows = page.eval_on_selector_all(
        "#categories table:not([data-category='custom']) tbody tr", "els => els.length"
    )
    assert rows == 50
    categories = page.eval_on_selector_all(
        "#categories table", "els => els.map(e => e.dataset.category)"
    )
    assert categories == ["environmental", "mechanical", "thermal", "electrical", "fluid", "custom"]
    page.wait_for_selector('#categories [data-category="custom"] tr[data-sensor="arm_torque"]')
    page.wait_for_function(
        "() => /\\d+ points/.test(document.getElementById('chart-status').textContent)"
    )
    assert page.query_selector("#chart canvas") is not None

    # Live: a new value and a brand-new custom sensor appear without reload.
    ingest.post(
        {
            "machine_id": machine,
            "temperature": 96.0,
            "custom_sensors": {"hook_load": 120.0},
            "detection": {
                "method": "thresholds",
                "is_anomaly": True,
                "score": 0.2,
                "sensors": ["temperature"],
            },
        }
    )
    page.wait_for_function(
        """() => { const r = document.querySelector('tr[data-sensor="temperature"]');
                   return r.dataset.state === 'critical'
                       && r.querySelector('.val').textContent === '96.00'; }"""
    )
    page.wait_for_selector('tr[data-sensor="hook_load"]')
    page.wait_for_function(
        "() => document.querySelector('#anomaly-rows tr td:last-child')"
        "?.textContent === 'temperature'"
    )
    # History of another sensor, another range.
    page.click('tr[data-sensor="rpm"] button')
    page.wait_for_function(
        "() => document.getElementById('chart-status').textContent.startsWith('rpm')"
    )
    page.click('#ranges button[data-range="900"]')
    assert page.get_attribute('#ranges button[data-range="900"]', "aria-pressed") == "true"
    _clean(watch)
    page.context.close()


# -- plain HTTP: headers, redirects, static allow-list -------------------------------------------


def test_security_headers_redirects_and_static_allow_list(
    server: str, users: dict[str, tuple[str, str]]
) -> None:
    with httpx.Client(base_url=server, timeout=10) as client:
        response = client.get("/")
        assert response.status_code == 303 and response.headers["location"] == "/login?next=/"
        page = client.get("/login")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert '<script type="module" src="/static/js/login.js">' in page.text
        assert " style=" not in page.text
        assert (
            client.get("/static/js/overview.js")
            .headers["content-type"]
            .startswith("text/javascript")
        )
        assert client.get("/static/vendor/three.module.js").status_code == 200
        assert client.get("/static/vendor/uPlot.esm.js").status_code == 200
        for path in (
            "/static/vendor/package.json",
            "/static/../router.py",
            "/static/%2e%2e/router.py",
            "/static/%2e%2e/node_modules/three/package.json",
        ):
            assert client.get(path).status_code == 404, path
        assert client.get("/machines/A").status_code == 303
        assert client.get("/admin").headers["location"] == "/login?next=/admin"
        username, password = users["operator"]
        client.post("/api/v1/auth/login", json={"username": username, "password": password})
        assert client.get("/").status_code == 200
        assert client.get("/admin").status_code == 403
        assert client.get("/machines/not%20an%20id").status_code == 404


# -- screenshots for the README ------------------------------------------------------------------


def test_screenshots_for_the_readme(
    browser: Any, server: str, users: dict[str, tuple[str, str]], ingest: Ingest, tmp_path: Path
) -> None:
    """Overview and machine page with data. Written to docs/screenshots/ (the README's) with
    RIG_UPDATE_SCREENSHOTS=1, otherwise to a temporary directory."""
    from shared.catalog import CORE_SENSORS

    machine = "A"
    target = SCREENSHOTS if os.environ.get("RIG_UPDATE_SCREENSHOTS") == "1" else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    for i in range(40):
        values = {
            s.name: s.typical + (s.high - s.low) * 0.05 * math.sin(i / 4 + k)
            for k, s in enumerate(CORE_SENSORS)
        }
        values["vibration"] = 5.0 + 0.1 * i if i > 25 else values["vibration"]
        reading: dict[str, Any] = {"machine_id": machine, **values}
        # A history for the chart: one reading a minute over the last 40 minutes.
        reading["timestamp"] = (datetime.now(UTC) - timedelta(minutes=40 - i)).isoformat()
        if i > 30:
            reading["custom_sensors"] = {"mud_weight": 9.5 + 0.05 * math.sin(i)}
        if i == 39:
            reading["detection"] = {
                "method": "hybrid_smart",
                "is_anomaly": True,
                "score": 1.4,
                "sensors": ["vibration"],
                "forecast": {"temperature": [72.0 + 2.5 * k for k in range(10)]},
            }
        ingest.post(reading)

    def live(tick: int) -> dict[str, Any]:
        forecast = [74.0 + 3 * math.sin(tick / 5) + 1.6 * k for k in range(10)]
        return {
            "detection": {
                "method": "hybrid_smart",
                "is_anomaly": False,
                "score": round(0.35 + 0.05 * math.sin(tick), 3),
                "forecast": {"temperature": forecast},
            },
            "rpm": 3300.0 + 80 * math.sin(tick / 3),
            "temperature": 74.0 + 3 * math.sin(tick / 5),
            "vibration": 6.6 + 0.2 * math.sin(tick / 2),
            "pressure": 10.2 + 0.6 * math.sin(tick / 6),
        }

    with Feeder(server, machine, live):
        page, watch = _open(browser, server, users["admin"], f"/?machine={machine}")
        page.wait_for_function("() => window.__twin && window.__twin.running", timeout=10_000)
        page.wait_for_function("() => window.__twin.frames > 30", timeout=60_000)
        page.screenshot(path=str(target / "overview.png"))
        page.goto(f"{server}/machines/{machine}?sensor=temperature")
        wait_ready(page)
        _browser_frames(page, 30)  # let the charts draw
        page.screenshot(path=str(target / "machine.png"), full_page=True)
    assert (target / "overview.png").stat().st_size > 10_000
    _clean(watch)
    page.context.close()


# -- the colour rule in the browser is the catalog's ----------------------------------------------


def test_browser_colour_rule_matches_the_catalog(browser: Any, server: str) -> None:
    """thresholds.js classifies every core sensor's values exactly as shared/catalog.py does
    (critical / warning by the default rule or the explicit band / nominal)."""
    from shared.catalog import CORE_SENSORS

    cases = []
    for spec in CORE_SENSORS:
        t = spec.thresholds()
        entry = {
            "critical_low": t.low,
            "critical_high": t.high,
            "warn_low": spec.warn_low,
            "warn_high": spec.warn_high,
        }
        span = spec.high - spec.low
        for value in (
            spec.low - 0.01 * span,
            spec.low,
            (t.effective_warn_low or spec.low) - 1e-6,
            spec.typical,
            (t.effective_warn_high or spec.high) + 1e-6,
            spec.high,
            spec.high + 0.01 * span,
        ):
            state = t.classify(value)
            cases.append([value, entry, state.value if state else None, spec.name])
    page = browser.new_page()
    page.goto(f"{server}/login")
    got = page.evaluate(
        """async (cases) => {
            const m = await import('/static/js/thresholds.js');
            return cases.map(([v, e]) => m.classify(v, e));
        }""",
        cases,
    )
    mismatches = [(c[3], c[0], c[2], g) for c, g in zip(cases, got, strict=True) if c[2] != g]
    assert not mismatches, mismatches[:10]
    page.close()


# -- formatting -----------------------------------------------------------------------------


def test_durations_read_the_same_way_on_every_page(
    browser: Any, server: str, users: dict[str, tuple[str, str]]
) -> None:
    """One formatter for every duration (stream state, latency, ages, remaining life): the
    unit grows with the value instead of "7200 s" or "300 min"."""
    page, watch = _open(browser, server, users["operator"], "/")
    try:
        got = page.evaluate(
            """async () => {
                const f = await import('/static/js/format.js');
                const ms = [0, 850, 4200, 59_949, 17 * 60_000, 5.3 * 3_600_000,
                            47.9 * 3_600_000, 76 * 3_600_000, 71.8 * 3_600_000, NaN, null];
                return {ms: ms.map((v) => f.durationText(v)), hours: f.hoursText(0.5),
                        age: f.ageText(90_000)};
            }"""
        )
        assert got["ms"] == [
            "0 ms",
            "850 ms",
            "4.2 s",
            "59.9 s",
            "17 min",
            "5.3 h",
            "47.9 h",
            "3 d 4 h",
            "3 d",
            "—",
            "—",
        ]
        assert got["hours"] == "30 min" and got["age"] == "2 min"
        _clean(watch)
    finally:
        page.context.close()
