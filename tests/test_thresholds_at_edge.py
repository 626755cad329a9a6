"""Thresholds reach the edge: an admin changes one through the API of a real ``rig-cloud
serve`` (embedded PostgreSQL), or in the admin page of a headless Chromium; within 10 s a real
``rig-edge`` judges by it without restart (an anomaly stored in the cloud names the new
table's version); and after the edge is killed and the API stopped, the edge started again
offline still judges by it (its buffer shows it).

Real processes throughout: ``rig-sim`` (Modbus TCP) -> ``rig-edge`` (HTTP output with its own
edge key, threshold sync against the same API) -> ``rig-cloud serve`` -> PostgreSQL.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from shared.model_bundle import generate_keypair
from tests.support.accounts import add_user, admin_token, bearer
from tests.support.pipeline import buffered_documents, edge_config, start_edge, start_simulator
from tests.support.processes import Service, free_port, http_ok, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

EDGE = "edge-thr"
SENSOR = "temperature"
# Far below anything the simulator's healthy machine reads: every reading breaks it.
NEW_LIMITS = {"critical_low": -1000.0, "critical_high": -999.0}


def _anomalies_judged_by(database_url: str, version: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM anomaly_detections WHERE machine_id = 'A' AND edge_id = %s "
            "AND details->>'thresholds_version' = %s AND %s = ANY(detected_sensors)",
            (EDGE, version, SENSOR),
        ).fetchone()
    return int(row[0]) if row else 0


def _buffered_judged_by(buffer: Path, version: str, after_seq: int) -> list[dict[str, Any]]:
    return [
        doc
        for doc in buffered_documents(buffer)
        if doc["seq"] > after_seq
        and (doc.get("detection") or {}).get("thresholds_version") == version
        and SENSOR in doc["detection"]["sensors"]
    ]


def _change_through_api(base: str, admin: dict[str, str]) -> None:
    changed = httpx.put(
        f"{base}/api/v1/machines/A/thresholds/{SENSOR}", headers=admin, json=NEW_LIMITS, timeout=10
    )
    assert changed.status_code == 200, changed.text


def _change_in_browser(base: str, database_url: str) -> None:
    from cloud.dashboard.browser import ConsoleWatch, chromium, login, missing_prerequisites

    reason = missing_prerequisites()
    if reason and os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run in CI: {reason}")
    if reason:
        pytest.skip(reason)
    password = add_user(database_url, "browser-admin", "admin")
    with chromium() as browser:
        page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
        watch = ConsoleWatch(page)
        login(page, base, "browser-admin", password, path="/admin?machine=A")
        row = f'#thr-rows tr[data-sensor="{SENSOR}"]'
        for name, value in (*NEW_LIMITS.items(), ("warn_low", None), ("warn_high", None)):
            page.fill(f'{row} input[name="{SENSOR}.{name}"]', "" if value is None else str(value))
        page.click(f"{row} button.primary")
        page.wait_for_function(
            f"() => document.querySelector('{row}').dataset.source === 'machine'", timeout=10_000
        )
        assert not watch.errors and not watch.csp, (watch.errors, watch.csp)


@pytest.mark.parametrize("where", ["api", "browser"])
def test_a_threshold_changed_in_the_cloud_is_judged_by_at_the_edge_and_kept_offline(
    tmp_path: Path, log_dir: Path, database_url: str, where: str
) -> None:
    api_port = free_port()
    base = f"http://127.0.0.1:{api_port}"
    env = {"DATABASE_URL": database_url}
    api = Service("api", ["cloud.cli", "serve", "--port", str(api_port)], log_dir, env).start()
    sim, sim_port = start_simulator(log_dir, None, ["A"], 5.0)
    services = [api, sim]
    edge: Service | None = None
    try:
        wait_until(lambda: http_ok(f"{base}/readyz"), 60, "cloud API", services=services)
        admin = bearer(admin_token(base, database_url))
        created = httpx.post(f"{base}/api/v1/edges/{EDGE}/keys", headers=admin, timeout=10)
        assert created.status_code == 201, created.text
        key_file = tmp_path / "edge.key"
        key_file.write_text(created.json()["api_key"])
        _, public = generate_keypair()
        (tmp_path / "signing.pub").write_bytes(public)

        cfg = edge_config(
            tmp_path,
            sim_port=sim_port,
            machines=["A"],
            poll_interval_s=0.2,
            edge_id=EDGE,
            output={
                "kind": "http",
                "url": f"{base}/api/v1/ingest",
                "api_key_file": str(key_file),
                "batch_readings": 50,
            },
        )
        doc = yaml.safe_load(cfg.read_text())
        doc["models"] = {
            "cloud_url": base,
            "api_key_file": str(key_file),
            "public_key_file": str(tmp_path / "signing.pub"),
            "directory": str(tmp_path / "models"),
            "poll_interval_s": 600,
            "thresholds_poll_s": 1.0,
            "timeout_s": 5,
        }
        cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
        buffer = Path(doc["buffer"]["path"])
        edge = start_edge(cfg, log_dir)
        services.append(edge)

        # The catalog (through the cloud's table, still all defaults) judges first.
        wait_until(
            lambda: any(
                (d.get("detection") or {}).get("thresholds_version") not in (None, "catalog")
                for d in buffered_documents(buffer)
            ),
            60,
            "the edge to judge by the cloud's table",
            services=services,
        )
        key = {"X-API-KEY": key_file.read_text()}
        before = httpx.get(f"{base}/api/v1/edge/thresholds/A", headers=key, timeout=10)
        assert before.status_code == 200, before.text
        assert before.json()["thresholds"][SENSOR]["source"] == "default"

        if where == "api":
            _change_through_api(base, admin)
        else:
            _change_in_browser(base, database_url)
        after = httpx.get(f"{base}/api/v1/edge/thresholds/A", headers=key, timeout=10)
        version = after.json()["version"]
        assert version != before.json()["version"]
        assert after.json()["thresholds"][SENSOR]["critical_high"] == -999.0

        # Acceptance: within 10 s, without restart, a stored anomaly names the new version.
        wait_until(
            lambda: _anomalies_judged_by(database_url, version) > 0,
            10,
            "an anomaly judged by the new threshold stored in the cloud",
            services=services,
        )

        # Kill the edge, stop the cloud, start the edge again with no cloud to ask.
        edge.kill()
        api.stop()
        last_seq = max((d["seq"] for d in buffered_documents(buffer)), default=-1)
        edge = start_edge(cfg, log_dir)
        services = [sim, edge]
        wait_until(
            lambda: len(_buffered_judged_by(buffer, version, last_seq)) >= 5,
            60,
            "the edge restarted offline to judge by the saved threshold",
            services=services,
        )
        health = httpx.get(f"http://127.0.0.1:{doc['metrics']['port']}/healthz", timeout=10).json()
        assert health["threshold_sync"]["versions"] == {"A": version}
        assert health["threshold_sync"]["consecutive_failures"] >= 1
    finally:
        for service in (edge, sim, api):
            if service is not None:
                service.stop()
