"""The AI assistant in a real headless Chromium against the real API (``rig-cloud serve``)
and PostgreSQL, first without a model (the offline path): an admin imports a transmitter
datasheet PDF, reviews the proposal with the source of each value, edits it and confirms;
the custom sensor's widget then shows on the overview with its unit and thresholds. On an
anomaly's page "Generate report" writes the report, shown on the page, and the PDF downloads.
The same flows through a real local OpenAI-compatible server, a broken answer falling back
visibly.
Every page is checked for uncaught errors and Content-Security-Policy violations."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pypdf import PdfReader

from cloud.dashboard.browser import (
    INGEST_KEY,
    ConsoleWatch,
    Ingest,
    chromium,
    login,
    missing_prerequisites,
)
from cloud.db.migrate import apply_migrations
from tests.support.accounts import add_user
from tests.support.openai_server import FakeOpenAI
from tests.support.processes import Service, free_port, http_ok, wait_until

pytestmark = pytest.mark.integration

DATASHEET = Path(__file__).resolve().parents[2] / "assistant" / "testdata"
VIEWPORT = {"width": 1500, "height": 1000}


@pytest.fixture(scope="module")
def prerequisites() -> None:
    reason = missing_prerequisites()
    if reason and os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run in CI: {reason}")
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def module_database(pg_server: Any) -> Iterator[str]:
    name = f"t_ai_{uuid.uuid4().hex[:10]}"
    admin = f"postgresql://postgres@127.0.0.1:{pg_server.port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://postgres@127.0.0.1:{pg_server.port}/{name}"
    apply_migrations(url)
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def server(
    prerequisites: None, module_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port()
    env = {"DATABASE_URL": module_database, "RIG_INGEST_API_KEY": INGEST_KEY}
    for name in ("RIG_AI_BASE_URL", "RIG_AI_API_KEY", "GROQ_API_KEY"):
        env[name] = ""  # the offline path, whatever the developer's shell has set
    logs = tmp_path_factory.mktemp("ai-dash-logs")
    api = Service("api", ["cloud.cli", "serve", "--port", str(port)], logs, env).start()
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), 60, "api up", services=[api])
    yield f"http://127.0.0.1:{port}"
    api.stop()


@pytest.fixture(scope="module")
def users(module_database: str) -> dict[str, tuple[str, str]]:
    return {
        "admin": ("admin", add_user(module_database, "admin", "admin")),
        "operator": ("op", add_user(module_database, "op", "operator")),
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


def _open(browser: Any, server: str, user: tuple[str, str], path: str) -> tuple[Any, Any]:
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    watch = ConsoleWatch(page)
    login(page, server, *user, path=path)
    return page, watch


def _clean(watch: ConsoleWatch) -> None:
    assert not watch.csp, f"Content-Security-Policy violations: {watch.csp}"
    assert not watch.errors, f"errors in the page: {watch.errors}"


def test_spec_sheet_review_confirm_and_widget(
    browser: Any, server: str, users: dict[str, tuple[str, str]], ingest: Ingest
) -> None:
    page, watch = _open(browser, server, users["admin"], "/admin")
    page.wait_for_selector("#spec-import[data-ready='true']")
    assert "offline reader" in page.text_content("#spec-mode")
    page.set_input_files("#spec-file", str(DATASHEET / "transmitter_datasheet.pdf"))
    page.click("#spec-parse")
    table = page.wait_for_selector(".spec-table")
    assert page.get_attribute("#spec-path", "data-path") == "offline"
    assert "hydraulic_pressure" in table.text_content()

    def cell(field: str, what: str) -> str:
        selector = f".spec-table tr[data-field='{field}'] {what}"
        return str(page.eval_on_selector(selector, "e => e.value ?? e.textContent"))

    assert cell("unit", "input") == "psi"
    assert cell("category", "select") == "fluid"
    assert (cell("min_range", "input"), cell("max_range", "input")) == ("0", "5000")
    assert cell("max_range", ".spec-source") == "p.1 l.4: “Measuring range: 0 … 5000 psi”"
    assert cell("low_threshold", ".spec-source") == "p.2 l.2: “Low alarm: 500 psi”"
    # Nothing exists before the confirm.
    status = page.evaluate(
        "() => fetch('/api/v1/custom-sensors/hydraulic_pressure').then(r => r.status)"
    )
    assert status == 404
    # A value outside the range is refused, naming the field; the admin corrects it.
    page.fill(".spec-table tr[data-field='high_threshold'] input", "6000")
    page.click("#spec-confirm")
    page.wait_for_function(
        "() => document.getElementById('spec-error').textContent.includes('high_threshold')"
    )
    assert "inside the range" in page.text_content("#spec-error")
    page.fill(".spec-table tr[data-field='high_threshold'] input", "4400")
    page.click("#spec-confirm")
    created = page.wait_for_selector("#spec-created li")
    assert created.text_content() == "hydraulic_pressure (psi, fluid, thresholds 500 … 4400)"
    # The 404 of the check above and the 422 of the refused confirm are logged by the
    # browser; nothing else may be.
    assert all("status of 404" in e or "status of 422" in e for e in watch.errors), watch.errors
    page.context.close()

    # The widget: readings carrying the sensor show it on the overview, coloured by the
    # confirmed thresholds (4450 psi is above the 4400 psi high threshold).
    machine = f"P{uuid.uuid4().hex[:5]}"
    ingest.post({"machine_id": machine, "custom_sensors": {"hydraulic_pressure": 2500.0}})
    page, watch = _open(browser, server, users["operator"], f"/?machine={machine}")
    widget = '#custom-tiles [data-sensor="hydraulic_pressure"]'
    page.wait_for_selector(widget)
    assert page.text_content(f"{widget} .tile-unit") == "psi"
    ingest.post({"machine_id": machine, "custom_sensors": {"hydraulic_pressure": 4450.0}})
    page.wait_for_function(
        "(w) => document.querySelector(w).dataset.state === 'critical'", arg=widget
    )
    _clean(watch)
    page.context.close()


def test_anomaly_page_generates_report_and_downloads_pdf(
    browser: Any, server: str, users: dict[str, tuple[str, str]], ingest: Ingest
) -> None:
    machine = f"R{uuid.uuid4().hex[:5]}"
    start = datetime.now(UTC) - timedelta(minutes=30)

    def detection(shares: dict[str, float]) -> dict[str, Any]:
        return {
            "method": "hybrid_smart",
            "is_anomaly": True,
            "score": 1.2,
            "sensors": list(shares),
            "contributions": [{"sensor": s, "share": v} for s, v in shares.items()],
        }

    ingest.post(
        *[
            {
                "machine_id": machine,
                "timestamp": (start + timedelta(minutes=i)).isoformat(),
                "vibration": 2.0 + 0.02 * (i % 4),
                "bearing_temp": 140.0,
            }
            for i in range(15)
        ],
        {
            # Edges' own verdicts (edge_id and seq; cloud/scoring.py's trust rule).
            "machine_id": machine,
            "edge_id": f"rig-{machine}",
            "seq": 1,
            "timestamp": (start - timedelta(days=1)).isoformat(),
            "vibration": 8.0,
            "bearing_temp": 160.0,
            "detection": detection({"vibration": 0.6, "bearing_temp": 0.4}),
        },
        {
            "machine_id": machine,
            "edge_id": f"rig-{machine}",
            "seq": 2,
            "timestamp": (start + timedelta(minutes=16)).isoformat(),
            "vibration": 9.5,
            "bearing_temp": 172.0,
            "detection": detection({"vibration": 0.7, "bearing_temp": 0.3}),
        },
    )
    page, watch = _open(browser, server, users["operator"], f"/machines/{machine}")
    page.wait_for_selector("#anomaly-rows tr a")
    page.click("#anomaly-rows tr:first-child a")  # newest first: the anomaly of today
    page.wait_for_url(f"{server}/anomalies/*")
    page.wait_for_function("() => document.body.dataset.ready === 'true'")
    assert page.text_content("#anomaly-title").startswith("ANOMALY ")
    assert "No report yet" in page.text_content("#report-status")
    assert page.is_hidden("#report-pdf")

    page.click("#report-generate")
    page.wait_for_selector("#report-summary")
    assert page.get_attribute("#report", "data-path") == "offline"
    assert "written by the offline writer" in page.text_content("#report-status")
    summary = page.text_content("#report-summary")
    assert "vibration (70 %)" in summary and "bearing_temp (30 %)" in summary
    sensors = page.eval_on_selector_all(
        "#report-sensors tbody tr", "rows => rows.map(r => r.dataset.sensor)"
    )
    assert sensors == ["vibration", "bearing_temp"]
    readings = page.text_content("#report-readings")
    assert "value at the anomaly" in readings and "9.50" in readings
    assert page.eval_on_selector_all("#report-similar tbody tr", "rows => rows.length") == 1
    assert page.get_attribute("#report-causes li", "data-mode") == "bearing_wear"

    with page.expect_download() as download:
        page.click("#report-pdf")
    pdf = Path(download.value.path()).read_bytes()
    assert pdf.startswith(b"%PDF")
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)
    assert "vibration" in text and "Similar past anomalies" in text

    # A second version; the first stays selectable.
    page.click("#report-generate")
    page.wait_for_function("() => document.getElementById('report').dataset.version === '2'")
    assert page.eval_on_selector_all("#report-version option", "o => o.length") == 2
    page.select_option("#report-version", "1")
    page.wait_for_function("() => document.getElementById('report').dataset.version === '1'")
    _clean(watch)
    page.context.close()


# -- through a model: a real local OpenAI-compatible server ---------------------------------


def _model_answers(request: dict[str, Any]) -> dict[str, Any]:
    if request["model"] == "report-model":
        return {
            "summary": "vibration at 9.5 mm/s with bearing_temp at 172 °F: the bearing.",
            "likely_causes": [
                {
                    "cause": "Drive-end bearing defect",
                    "likelihood": 0.8,
                    "evidence": ["vibration 9.5 mm/s against a 2.0 mm/s baseline"],
                    "failure_mode": "bearing_wear",
                }
            ],
            "recommended_actions": ["Grease and inspect the drive-end bearing"],
            "confidence": {"level": "medium", "score": 0.6, "why": "one similar event"},
        }
    return {
        "sensors": [
            {
                "sensor_name": "hpu_supply_pressure",
                "min_range": 0,
                "max_range": 5000,
                "unit": "psi",
                "low_threshold": 500,
                "high_threshold": 4500,
                "category": "fluid",
                "provenance": {"max_range": {"page": 1, "text": "Measuring range: 0 … 5000 psi"}},
            }
        ]
    }


@pytest.fixture(scope="module")
def model_server(
    prerequisites: None, module_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, FakeOpenAI]]:
    fake = FakeOpenAI().start()
    fake.default = _model_answers
    port = free_port()
    env = {
        "DATABASE_URL": module_database,
        "RIG_INGEST_API_KEY": INGEST_KEY,
        "RIG_AI_BASE_URL": fake.base_url,
        "RIG_AI_API_KEY": "",
        "GROQ_API_KEY": "",
        "RIG_AI_MODEL_PARSING": "parse-model",
        "RIG_AI_MODEL_REPORTS": "report-model",
        "RIG_AI_MAX_RETRIES": "0",
    }
    logs = tmp_path_factory.mktemp("ai-model-logs")
    api = Service("api-model", ["cloud.cli", "serve", "--port", str(port)], logs, env).start()
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), 60, "api up", services=[api])
        yield f"http://127.0.0.1:{port}", fake
    finally:
        api.stop()
        fake.stop()


def test_through_the_model_and_a_visible_fallback(
    browser: Any,
    model_server: tuple[str, FakeOpenAI],
    users: dict[str, tuple[str, str]],
    ingest: Ingest,
) -> None:
    server, fake = model_server
    page, watch = _open(browser, server, users["admin"], "/admin")
    page.wait_for_selector("#spec-import[data-ready='true']")
    assert "model parse-model" in page.text_content("#spec-mode")
    # A broken answer: the offline reader answers, and the page says why.
    fake.reply("Sure! The range is 0 to 5000 psi.")
    page.set_input_files("#spec-file", str(DATASHEET / "transmitter_datasheet.pdf"))
    page.click("#spec-parse")
    page.wait_for_selector(".spec-table")
    assert page.get_attribute("#spec-path", "data-path") == "offline"
    assert "not JSON" in page.text_content("#spec-note")
    # The model's answer, reviewed like any other: nothing created until the confirm.
    page.click("#spec-parse")
    page.wait_for_selector("#spec-path[data-path='model']")
    assert page.text_content("#spec-path") == "Produced by: local-test-model"
    assert page.query_selector("#spec-note") is None
    source = page.text_content(".spec-table tr[data-field='max_range'] .spec-source")
    assert source == "p.1 l.4: “Measuring range: 0 … 5000 psi”"
    page.click("#spec-confirm")
    created = page.wait_for_selector("#spec-created li")
    assert created.text_content().startswith("hpu_supply_pressure (psi, fluid")
    _clean(watch)
    page.context.close()

    # The report through the model.
    machine = f"M{uuid.uuid4().hex[:5]}"
    ingest_model = Ingest(server)
    try:
        ingest_model.post(
            {
                "machine_id": machine,
                "edge_id": f"rig-{machine}",
                "seq": 1,
                "vibration": 9.5,
                "bearing_temp": 172.0,
                "detection": {
                    "method": "hybrid_smart",
                    "is_anomaly": True,
                    "score": 1.2,
                    "sensors": ["vibration", "bearing_temp"],
                    "contributions": [
                        {"sensor": "vibration", "share": 0.7},
                        {"sensor": "bearing_temp", "share": 0.3},
                    ],
                },
            }
        )
    finally:
        ingest_model.close()
    page, watch = _open(browser, server, users["operator"], f"/machines/{machine}")
    page.wait_for_selector("#anomaly-rows tr a")
    page.click("#anomaly-rows tr:first-child a")
    page.wait_for_url(f"{server}/anomalies/*")
    page.wait_for_function("() => document.body.dataset.ready === 'true'")
    page.click("#report-generate")
    page.wait_for_selector("#report-summary")
    assert page.get_attribute("#report", "data-path") == "model"
    assert "written by model local-test-model" in page.text_content("#report-status")
    assert page.text_content("#report-causes li strong") == "Drive-end bearing defect"
    sensors = page.eval_on_selector_all(
        "#report-sensors tbody tr", "rows => rows.map(r => r.dataset.sensor)"
    )
    assert sensors == ["vibration", "bearing_temp"]
    _clean(watch)
    page.context.close()
