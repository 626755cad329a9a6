"""The admin area (issue 13, item 8) in a real headless Chromium against ``rig-cloud serve``
on an embedded PostgreSQL: users (create, role, machine scope, disable, password reset,
delete, and the API's refusal to let an admin demote themselves), edge keys (the key shown
once, working, then revoked and refused), models (metrics, refusal reasons, rollback and its
refusal, retraining queued), custom sensors (unit, category, measuring range, the range seen,
registering one never sent) and fleet thresholds; then a machine-scoped operator, who gets
none of the admin pages and sees no other machine on any page or in any answer its browser
can ask for.

One server and one browser for the module, and a few long flows (each checks a lot) rather
than many small tests: the suite's time budget is tight.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
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
from cloud.lifecycle.registry import Candidate, register
from tests.support.accounts import add_user, bearer
from tests.support.accounts import login as api_login
from tests.support.processes import free_port

pytestmark = pytest.mark.integration

__all__ = ["browser", "module_database", "prerequisites"]

ADMIN_SECTIONS = ("/admin", "/admin/fleet", "/admin/sensors", "/admin/models", "/admin/users")


def _candidate(machine: str, f1: float, rows: int) -> Candidate:
    now = datetime.now(UTC)
    return Candidate(
        machine_id=machine,
        strategy="hybrid_smart",
        metrics={"validation": {"f1": f1, "precision": 0.9, "far_pct": 1.5}, "held_out_rows": 500},
        manifest={"sensors": ["rpm"], "format": 1},
        bundle=b"\x1f\x8b not a real bundle: never served in these tests",
        trained_from=now - timedelta(days=1),
        trained_to=now,
        training_rows=rows,
        created_by="test",
    )


@pytest.fixture(scope="module")
def fleet(
    prerequisites: None, module_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The server, two machines with readings (one with a custom sensor), models in the
    registry, an admin and an operator scoped to the first machine."""
    port = free_port()
    api = _start_api(module_database, tmp_path_factory.mktemp("admin-logs"), port, "api-admin")
    base = f"http://127.0.0.1:{port}"
    tag = uuid.uuid4().hex[:5]
    mine, other = f"M{tag}", f"N{tag}"
    custom = f"arm_torque_{tag}"
    ingest = Ingest(base, INGEST_KEY)
    try:
        now = datetime.now(UTC)
        for i, value in enumerate((10.0, 14.0, 12.0)):
            ts = (now - timedelta(seconds=10 - i)).isoformat()
            ingest.post(
                {"machine_id": mine, "ts": ts, "rpm": 1500.0, "custom_sensors": {custom: value}},
                {
                    "machine_id": other,
                    "ts": ts,
                    "rpm": 1600.0,
                    "custom_sensors": {f"{custom}_n": 1},
                },
            )
        # Past vibration's critical limit: the cloud's own verdict stores an anomaly for each.
        ingest.post(
            {"machine_id": mine, "ts": now.isoformat(), "vibration": 40.0},
            {"machine_id": other, "ts": now.isoformat(), "vibration": 40.0},
        )
    finally:
        ingest.close()
    with psycopg.connect(module_database) as conn, conn.transaction():
        # mine: v1 in service, then v2 replaced it, then v3 was refused; other: v1 only.
        register(
            conn,
            _candidate(mine, 0.8, 1000),
            accepted=True,
            reason="first model",
            baseline_metrics=None,
        )
        baseline = {"model_id": 1, "version": 1, "validation": {"f1": 0.8}}
        register(
            conn,
            _candidate(mine, 0.9, 2000),
            accepted=True,
            reason="f1 0.90 beats 0.80",
            baseline_metrics=baseline,
        )
        refusal = "refused: f1 0.41 is below the model in service (0.90)"
        register(
            conn,
            _candidate(mine, 0.41, 3000),
            accepted=False,
            reason=refusal,
            baseline_metrics=baseline,
        )
        register(
            conn,
            _candidate(other, 0.7, 1000),
            accepted=True,
            reason="first model",
            baseline_metrics=None,
        )
    users = {
        "admin": ("ada", add_user(module_database, "ada", "admin")),
        "scoped": ("sam", add_user(module_database, "sam", "operator", [mine])),
    }
    try:
        yield {
            "base": base,
            "db": module_database,
            "mine": mine,
            "other": other,
            "custom": custom,
            "refusal": refusal,
            "users": users,
        }
    finally:
        api.stop()


def _page(browser: Any, base: str, user: tuple[str, str], path: str) -> tuple[Any, ConsoleWatch]:
    page = browser.new_context(viewport=VIEWPORT).new_page()
    watch = ConsoleWatch(page)
    login(page, base, *user, path=path)
    return page, watch


def _clean(watch: ConsoleWatch, *expected_statuses: int) -> None:
    """No CSP violation, and no error but the refusals the flow provoked on purpose (the
    browser logs each 4xx answer as a failed resource)."""
    assert not watch.csp, watch.csp
    allowed = tuple(f"status of {s}" for s in expected_statuses)
    unexpected = [e for e in watch.errors if not (allowed and any(a in e for a in allowed))]
    assert not unexpected, unexpected


def _tab(page: Any, base: str, name: str, path: str) -> None:
    """Follows the admin tab link (the header stays the same page shell)."""
    page.click(f'.admin-tabs a[data-tab="{name}"]')
    page.wait_for_url(f"{base}{path}*")
    page.wait_for_function("() => document.body.dataset.ready === 'true'")
    assert page.get_attribute(f'.admin-tabs a[data-tab="{name}"]', "aria-current") == "page"
    visible = page.eval_on_selector_all(
        "#main > [data-section]",
        "nodes => nodes.filter(n => !n.hidden).map(n => n.dataset.section)",
    )
    assert visible == [name]


def _row_text(page: Any, selector: str) -> str:
    return str(page.text_content(selector) or "")


def _login_status(base: str, username: str, password: str) -> int:
    with httpx.Client(base_url=base, timeout=10) as client:
        answer = client.post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )
        return answer.status_code


def test_users_and_edge_keys(fleet: dict[str, Any], browser: Any) -> None:
    base, mine = fleet["base"], fleet["mine"]
    page, watch = _page(browser, base, fleet["users"]["admin"], "/admin/users")
    assert page.get_attribute('.admin-tabs a[data-tab="users"]', "aria-current") == "page"
    assert page.is_hidden("#machine-pick")
    page.wait_for_selector('#user-rows tr[data-username="sam"]')

    # Create a scoped operator through the form; it can log in at once.
    password = "first-password-1"
    page.fill("#user-new-name", "nora")
    page.fill("#user-new-password", password)
    page.select_option("#user-new-role", "operator")
    page.uncheck("#user-new-all")
    page.fill("#user-new-machines", f"{mine}, B")
    page.click("#user-form button[type=submit]")
    row = '#user-rows tr[data-username="nora"]'
    page.wait_for_selector(row)
    assert page.input_value(f'{row} select[name="role"]') == "operator"
    assert page.input_value(f'{row} input[name="machines"]') == f"{mine}, B"
    assert _login_status(base, "nora", password) == 200

    # Role and scope: viewer of every machine.
    page.select_option(f'{row} select[name="role"]', "viewer")
    page.check(f'{row} input[name="all"]')
    page.click(f"{row} button.primary")
    page.wait_for_function(
        """(r) => { const n = document.querySelector(r);
                    return n && n.querySelector('select[name="role"]').value === 'viewer'
                      && n.querySelector('input[name="all"]').checked; }""",
        arg=row,
    )
    with psycopg.connect(fleet["db"]) as conn:
        assert conn.execute(
            "SELECT role, machines FROM users WHERE username = 'nora'"
        ).fetchone() == ("viewer", None)

    # Password reset: a new one, shown once; the old one stops working.
    page.click(f'{row} button[name="reset"]')
    page.wait_for_selector("#user-secret:not([hidden])")
    assert page.text_content("#user-secret-name") == "nora"
    fresh = str(page.text_content("#user-secret-value"))
    assert len(fresh) >= 16
    assert _login_status(base, "nora", password) == 401
    assert _login_status(base, "nora", fresh) == 200

    # Disable: refused at login; enable again.
    page.click(f'{row} button[name="toggle"]')
    page.wait_for_selector(f'{row}[data-state="disabled"]')
    assert _login_status(base, "nora", fresh) == 401
    page.click(f'{row} button[name="toggle"]')
    page.wait_for_selector(f'{row}[data-state="active"]')
    assert _login_status(base, "nora", fresh) == 200

    # The API's guard, shown on the row: an admin cannot demote themselves.
    me = '#user-rows tr[data-username="ada"]'
    # One's own password changes with the current one: no reset button, and the API refuses.
    assert page.is_hidden(f'{me} button[name="reset"]')
    own_reset = page.evaluate(
        "() => fetch('/api/v1/users/ada/password-reset', {method: 'POST'})"
        ".then(async r => [r.status, (await r.json()).field])"
    )
    assert own_reset == [422, "username"]
    page.select_option(f'{me} select[name="role"]', "viewer")
    page.click(f"{me} button.primary")
    page.wait_for_function(
        "(r) => document.querySelector(r + ' .row-error').textContent.includes('demote')", arg=me
    )
    assert _row_text(page, f"{me} .row-error").startswith("role: ")
    # A bad name is the API's answer too, naming the field.
    page.fill("#user-new-name", "Bad Name!")
    page.fill("#user-new-password", password)
    page.click("#user-form button[type=submit]")
    page.wait_for_function(
        "() => document.getElementById('user-status').textContent.includes('username')"
    )

    # Delete takes a second press.
    page.click(f'{row} button[name="delete"]')
    assert page.get_attribute(f'{row} button[name="delete"]', "data-armed") == "true"
    page.click(f'{row} button[name="delete"]')
    page.wait_for_selector(row, state="detached")
    assert _login_status(base, "nora", fresh) == 401

    # Edge keys: the key is shown once, lets the edge post readings, is listed without its secret.
    _tab(page, base, "keys", "/admin/keys")
    page.fill("#key-edge", "rig-admin-test")
    page.fill("#key-machines", mine)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#key-secret:not([hidden])")
    key = str(page.text_content("#key-secret-value"))
    assert key.startswith("rig_")
    key_row = '#key-rows tr[data-edge="rig-admin-test"]'
    page.wait_for_selector(f'{key_row}[data-state="active"]')
    key_id = page.get_attribute(key_row, "data-key-id")
    assert key_id and key_id in key
    assert key not in str(page.text_content("#key-rows"))
    with httpx.Client(base_url=base, timeout=10, headers={"X-API-KEY": key}) as edge:
        reading = {"readings": [{"machine_id": mine, "rpm": 1500.0}]}
        assert edge.post("/api/v1/ingest", json=reading).status_code == 200
        assert page.text_content(f"{key_row} td.machines") == mine
        # Bound at issue: not another machine.
        theirs = {"readings": [{"machine_id": fleet["other"], "rpm": 1500.0}]}
        assert edge.post("/api/v1/ingest", json=theirs).status_code == 403
        page.click(f'{key_row} button[name="revoke"]')
        page.click(f'{key_row} button[name="revoke"]')
        page.wait_for_selector(f'{key_row}[data-state="revoked"]')
        assert page.locator(f'{key_row} button[name="revoke"]').count() == 0
        assert edge.post("/api/v1/ingest", json=reading).status_code == 401
    # An edge id no reading could carry: refused, naming the field, and no key shown.
    page.fill("#key-edge", "-bad")
    page.click("#key-form button[type=submit]")
    page.wait_for_function(
        "() => document.getElementById('key-status').textContent.includes('edge_id')"
    )
    assert page.is_hidden("#key-secret")
    _clean(watch, 422)
    page.context.close()


def test_models_custom_sensors_and_fleet_thresholds(fleet: dict[str, Any], browser: Any) -> None:
    base, mine, other, custom = fleet["base"], fleet["mine"], fleet["other"], fleet["custom"]
    page, watch = _page(browser, base, fleet["users"]["admin"], "/admin/models")
    mine_box = f'.model-machine[data-machine="{mine}"]'
    other_box = f'.model-machine[data-machine="{other}"]'
    page.wait_for_selector(f"{mine_box} tbody tr")
    statuses = page.eval_on_selector_all(
        f"{mine_box} tbody tr",
        "rows => rows.map(r => [r.querySelector('th').textContent, r.dataset.status])",
    )
    assert statuses == [["v3", "rejected"], ["v2", "active"], ["v1", "retired"]]
    rejected = f'{mine_box} tr[data-status="rejected"]'
    assert _row_text(page, f"{rejected} td.reason") == fleet["refusal"]
    assert "f1 0.41" in _row_text(page, f"{rejected} td.metrics")
    assert "v1: f1 0.80" in _row_text(page, f"{rejected} td.metrics.muted")

    # Roll back: v1 is in service again.
    page.click(f'{mine_box} button[name="rollback"]')
    page.wait_for_function(
        """(b) => [...document.querySelectorAll(b + ' tbody tr')]
                  .some(r => r.querySelector('th').textContent === 'v1'
                             && r.dataset.status === 'active')""",
        arg=mine_box,
    )
    assert "version 1 is in service again" in _row_text(page, "#models-status")
    # Refused where no earlier model was in service, with the API's reason.
    page.click(f'{other_box} button[name="rollback"]')
    page.wait_for_function(
        "(b) => document.querySelector(b + ' .row-error').textContent.startsWith('Refused')",
        arg=other_box,
    )
    assert "no earlier model" in _row_text(page, f"{other_box} .row-error")
    # Retrain: the job is queued and followed on the page.
    page.click(f'{other_box} button[name="retrain"]')
    page.wait_for_function(
        "(b) => /job \\d+: (queued|running)/.test(document.querySelector(b + ' .job').textContent)",
        arg=other_box,
    )
    with psycopg.connect(fleet["db"]) as conn:
        assert conn.execute(
            "SELECT count(*) FROM training_jobs WHERE machine_id = %s AND requested_by = 'ada'",
            (other,),
        ).fetchone() == (1,)

    # Custom sensors: the range the fleet sent; unit and category saved.
    _tab(page, base, "sensors", "/admin/sensors")
    row = f'#cs-rows tr[data-sensor="{custom}"]'
    page.wait_for_selector(row)
    assert _row_text(page, f"{row} td.range") == "10.00 · 12.00 · 14.00"
    page.fill(f'{row} input[name="unit"]', "Nm")
    page.select_option(f'{row} select[name="category"]', "mechanical")
    page.fill(f'{row} input[name="min_range"]', "0")
    page.fill(f'{row} input[name="max_range"]', "50")
    page.click(f"{row} button.primary")
    page.wait_for_function(
        "() => document.getElementById('cs-status').textContent.startsWith('Saved')"
    )
    assert page.input_value(f'{row} input[name="unit"]') == "Nm"
    assert page.input_value(f'{row} select[name="category"]') == "mechanical"
    assert page.input_value(f'{row} input[name="max_range"]') == "50"
    spec = page.evaluate(
        "(n) => fetch(`/api/v1/custom-sensors/${n}/spec`).then(r => r.json())", custom
    )
    assert (spec["min_range"], spec["max_range"], spec["updated_by"]) == (0, 50, "ada")
    # A range upside down: the API's refusal, naming the field, on the row.
    page.fill(f'{row} input[name="min_range"]', "60")
    page.click(f"{row} button.primary")
    page.wait_for_function(
        "(r) => document.querySelector(r + ' .row-error').textContent.includes('max_range')",
        arg=row,
    )
    # Registered before it is ever sent.
    spare = f"spare_probe_{uuid.uuid4().hex[:4]}"
    page.fill("#cs-name", spare)
    page.fill("#cs-unit", "bar")
    page.select_option("#cs-category", "fluid")
    page.click("#cs-form button[type=submit]")
    page.wait_for_selector(f'#cs-rows tr[data-sensor="{spare}"]')
    assert _row_text(page, f'#cs-rows tr[data-sensor="{spare}"] td.range') == "never received"
    # A core sensor is not a custom one: the API says so, naming the field.
    page.fill("#cs-name", "rpm")
    page.click("#cs-form button[type=submit]")
    page.wait_for_function(
        "() => document.getElementById('cs-status').textContent.includes('core sensor')"
    )

    # Fleet thresholds, reached from the sensor's row: set for the custom sensor...
    page.click(f"{row} td.thresholds a")
    page.wait_for_url(f"{base}/admin/fleet?sensor={custom}")
    page.wait_for_function("() => document.body.dataset.ready === 'true'")
    fleet_row = f'#fleet-rows tr[data-sensor="{custom}"]'
    assert page.is_visible(fleet_row)
    assert page.is_hidden('#fleet-rows tr[data-sensor="rpm"]')  # filtered by the link
    page.fill(f'{fleet_row} input[name="{custom}.critical_high"]', "30")
    page.click(f"{fleet_row} button.primary")
    page.wait_for_selector(f'{fleet_row}[data-source="fleet"]')
    # ... and for a core sensor, which every machine without its own override follows.
    page.fill("#fleet-filter", "temperature")
    temp = '#fleet-rows tr[data-sensor="temperature"]'
    page.fill(f'{temp} input[name="temperature.critical_high"]', "77")
    page.click(f"{temp} button.primary")
    page.wait_for_selector(f'{temp}[data-source="fleet"]')
    with httpx.Client(base_url=base, timeout=10) as client:
        token = api_login(client, *fleet["users"]["admin"])
        answer = client.get(f"/api/v1/machines/{mine}/thresholds", headers=bearer(token))
        table = answer.json()["thresholds"]
        assert table["temperature"]["critical_high"] == 77
        assert table["temperature"]["source"] == "fleet"
    # Reset: back to the catalog default.
    page.click(f"{temp} button:not(.primary)")
    page.wait_for_selector(f'{temp}[data-source="default"]')
    # The sensors tab shows the custom sensor's fleet limit.
    _tab(page, base, "sensors", "/admin/sensors")
    page.wait_for_selector(row)
    assert "30" in _row_text(page, f"{row} td.thresholds") and "(fleet)" in _row_text(
        page, f"{row} td.thresholds"
    )
    _clean(watch, 422)
    page.context.close()


def test_scoped_operator_sees_no_admin_page_and_no_other_machine(
    fleet: dict[str, Any], browser: Any
) -> None:
    base, mine, other = fleet["base"], fleet["mine"], fleet["other"]
    page, watch = _page(browser, base, fleet["users"]["scoped"], "/")
    assert page.is_hidden("#nav-admin")
    options = page.eval_on_selector_all("#machine-select option", "o => o.map(x => x.value)")
    assert options == [mine]
    for path in (*ADMIN_SECTIONS, "/admin/keys"):
        response = page.goto(f"{base}{path}")
        assert response is not None and response.status == 403, path
        assert "admin-tabs" not in page.content()
    response = page.goto(f"{base}/machines/{other}")
    assert response is not None and response.status == 403

    # The fleet feed lists its machine's anomaly only.
    page.goto(f"{base}/anomalies")
    page.wait_for_selector("#feed-rows tr")
    machines = page.eval_on_selector_all(
        "#feed-rows tr td:nth-child(2)", "c => c.map(x => x.textContent)"
    )
    assert machines and set(machines) == {mine}

    # Every answer its session can ask for: other machines nowhere, the admin API refused.
    answers = page.evaluate(
        """async () => {
            const get = async (p) => {
                const r = await fetch(p);
                return [r.status, await r.text()];
            };
            const paths = ['/api/v1/machines', '/api/v1/models', '/api/v1/custom-sensors',
                           '/api/v1/anomalies', '/api/v1/rul', '/api/lstm-predictions',
                           '/api/v1/users', '/api/v1/edge-keys', '/api/admin/custom-sensors'];
            const out = {};
            for (const p of paths) out[p] = await get(p);
            return out;
        }"""
    )
    for path in ("/api/v1/users", "/api/v1/edge-keys", "/api/admin/custom-sensors"):
        assert answers[path][0] == 403, (path, answers[path])
    for path, (status, body) in answers.items():
        if status == 200:
            assert other not in body, f"{path} shows machine {other}: {body[:300]}"
    assert mine in answers["/api/v1/models"][1]
    assert fleet["custom"] in answers["/api/v1/custom-sensors"][1]
    _clean(watch, 403)
    page.context.close()
