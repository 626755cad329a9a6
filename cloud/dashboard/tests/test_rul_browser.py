"""EST. LIFE end to end in a real headless Chromium: a real `rig-sim` machine whose bearing
wears out, a real `rig-edge` that polls it over Modbus, downloads the signed RUL model from the
cloud's registry, computes the remaining life beside the detector and forwards it with the
readings; the cloud stores it and the dashboard shows the countdown falling, coloured by the
bands, on the overview, in the health matrix and on the machine page with its history and
critical sensors. A machine without a model says so, in the API and on the page.

Reuses the dashboard browser tests' fixtures (module database, API server, users, Chromium).
Every wait is on a condition in the page or the database, never on elapsed time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from cloud.dashboard.browser import INGEST_KEY, ConsoleWatch, Ingest, login
from cloud.dashboard.tests import test_browser as dashboard_tests
from cloud.lifecycle import registry
from shared.model_bundle import generate_keypair, pack_bundle
from tests.support.pipeline import edge_config, start_simulator
from tests.support.processes import Service, wait_until
from tests.support.rul_bundle import write_test_rul_bundle

# The dashboard browser tests' fixtures, shared (module database, API server, users, Chromium).
prerequisites = dashboard_tests.prerequisites
module_database = dashboard_tests.module_database
server = dashboard_tests.server
users = dashboard_tests.users
browser = dashboard_tests.browser
VIEWPORT = dashboard_tests.VIEWPORT

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

MACHINE = "R1"
WEAR_S = 120  # the bearing of R1 fails this long after the wear starts (5 s in)


def _publish_rul(database_url: str, tmp: Path, private: bytes) -> int:
    """The test RUL model (hand-built ONNX, one row per 2 s, life falling with vibration),
    signed and put in service for MACHINE through the registry the edges poll."""
    write_test_rul_bundle(
        tmp / "bundle", private_key=private, version="rul-e2e", step_s=2.0, hours_per_unit=80.0
    )
    archive = pack_bundle(tmp / "bundle", tmp / "bundle.tar.gz").read_bytes()
    manifest = json.loads((tmp / "bundle" / "manifest.json").read_text())
    with psycopg.connect(database_url) as conn, conn.transaction():
        row = registry.register(
            conn,
            registry.Candidate(
                MACHINE, "rul", {}, manifest, archive, None, None, 0, "test", kind="rul"
            ),
            accepted=True,
            reason="test",
            baseline_metrics=None,
        )
    return int(row["id"])


def _estimates(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM machine_rul WHERE machine_id = %s", (MACHINE,))
        return int(row.fetchone()[0])  # type: ignore[index]


def _row(page: Any, machine: str) -> dict[str, Any] | None:
    return page.evaluate(
        """(m) => {
            const r = document.querySelector(`#rul-fleet [data-machine="${m}"]`);
            return r && {hours: r.dataset.hours, band: r.dataset.band, status: r.dataset.status,
                         text: r.querySelector('.rul-value').textContent,
                         trend: r.dataset.trend};
        }""",
        machine,
    )


def test_a_wearing_machine_counts_down_through_the_edge_and_one_without_a_model_says_so(
    browser: Any,
    server: str,
    module_database: str,
    users: dict[str, tuple[str, str]],
    tmp_path: Path,
) -> None:
    private, public = generate_keypair()
    (tmp_path / "signing.pub").write_bytes(public)
    (tmp_path / "api-key").write_text(INGEST_KEY)
    _publish_rul(module_database, tmp_path, private)

    scenario = tmp_path / "wear.yaml"
    scenario.write_text(
        yaml.safe_dump(
            {
                "machines": [MACHINE],
                "faults": [
                    {"kind": "bearing_wear", "machine": MACHINE, "start_s": 5, "duration_s": WEAR_S}
                ],
            }
        )
    )
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    sim, sim_port = start_simulator(
        log_dir, None, [MACHINE], 5.0, extra_args=["--scenario", str(scenario)]
    )
    cfg = edge_config(
        tmp_path,
        sim_port=sim_port,
        machines=[MACHINE],
        poll_interval_s=0.1,
        edge_id="edge-rul",
        output={
            "kind": "http",
            "url": f"{server}/api/v1/ingest",
            "api_key_file": str(tmp_path / "api-key"),
            "batch_readings": 50,
            "timeout_s": 5,
        },
    )
    doc = yaml.safe_load(cfg.read_text())
    doc["models"] = {
        "cloud_url": server,
        "api_key_file": str(tmp_path / "api-key"),
        "public_key_file": str(tmp_path / "signing.pub"),
        "directory": str(tmp_path / "models"),
        "poll_interval_s": 1,
    }
    cfg.write_text(yaml.safe_dump(doc))
    edge = Service("rig-edge", ["edge.cli", "run", "-c", str(cfg)], log_dir).start()
    services = [sim, edge]
    ingest = Ingest(server)
    context = browser.new_context(viewport=VIEWPORT)
    try:
        # A machine with readings and no RUL model anywhere.
        ingest.post({"machine_id": "NOMODEL", "rpm": 3000.0, "vibration": 2.0})
        wait_until(
            lambda: _estimates(module_database) >= 3, 120, "RUL estimates", services=services
        )

        page = context.new_page()
        watch = ConsoleWatch(page)
        login(page, server, *users["operator"], path=f"/?machine={MACHINE}")
        page.wait_for_function(
            """(m) => {
                const r = document.querySelector(`#rul-fleet [data-machine="${m}"]`);
                return r && r.dataset.hours !== "";
            }""",
            arg=MACHINE,
            timeout=60_000,
        )
        first = _row(page, MACHINE)
        assert first is not None
        start_hours = float(first["hours"])
        # The countdown falls as the bearing wears, until it is red (below the 24 h band).
        page.wait_for_function(
            """([m, h]) => {
                const r = document.querySelector(`#rul-fleet [data-machine="${m}"]`);
                return r && r.dataset.hours !== "" && Number(r.dataset.hours) < h - 10;
            }""",
            arg=[MACHINE, start_hours],
            timeout=WEAR_S * 2000,
        )
        page.wait_for_function(
            """(m) => {
                const r = document.querySelector(`#rul-fleet [data-machine="${m}"]`);
                return r && r.dataset.band === "red";
            }""",
            arg=MACHINE,
            timeout=WEAR_S * 2000,
        )
        red = _row(page, MACHINE)
        assert red is not None and float(red["hours"]) < 24.0 < start_hours
        assert red["trend"] in ("degrading", "accelerating")
        card = page.evaluate(
            """() => {
                const c = document.querySelector('#health [data-category="rul"]');
                return c && {state: c.dataset.state, text: c.querySelector('.state').textContent};
            }"""
        )
        assert card["state"] == "critical" and card["text"] != "—"
        none = _row(page, "NOMODEL")
        assert none is not None and none["text"] == "NO MODEL" and none["band"] == "none"

        api = page.evaluate("() => fetch('/api/v1/machines/NOMODEL/rul').then((r) => r.json())")
        assert api["status"] == "no_model" and api["rul_hours"] is None
        assert api["interval"] is None and api["degradation_trend"] is None

        # The machine page: the history with its interval band and the critical sensors.
        page.goto(f"{server}/machines/{MACHINE}")
        page.wait_for_function(
            """() => {
                const s = window.__rulMachine;
                return s && s.points.length >= 3
                    && document.querySelector('#rul-sensors [data-sensor="vibration"]');
            }""",
            timeout=60_000,
        )
        state = page.evaluate("() => window.__rulMachine")
        hours = [p["rul_hours"] for p in state["points"]]
        assert hours[-1] < hours[0], hours
        assert all(p["low_hours"] <= p["rul_hours"] <= p["high_hours"] for p in state["points"])
        assert page.get_attribute("#rul-panel", "data-band") == "red"
        drawn = page.evaluate(
            """() => {
                const c = document.getElementById('rul-chart');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let ink = 0;
                for (let i = 3; i < d.length; i += 4) if (d[i] > 0) ink++;
                return ink;
            }"""
        )
        assert drawn > 100  # the band and the line are on the canvas
        assert not watch.csp, f"Content-Security-Policy violations: {watch.csp}"
        assert not watch.errors, f"errors in the page: {watch.errors}"
    finally:
        context.close()
        ingest.close()
        edge.stop()
        sim.stop()
