"""Predictions shown (issue 13 item 5) in a real headless Chromium.

The acceptance test: prediction dots from real edge forecasts. A small LSTM detector is
trained on the simulator's own signal model, signed and put in service through the registry;
a real ``rig-sim`` machine is polled over Modbus by a real ``rig-edge`` that downloads the
model, and forwards the de-standardised 10-step forecast of the priority sensors with its
verdicts over HTTPS ingest; the overview tiles draw the dots from it, live.

And the fleet feed's predicted anomalies: a verdict over the predicted rule's bound shows as
*predicted*, and an actual anomaly within the horizon turns it *confirmed*.

Reuses the dashboard browser tests' fixtures (module database, API server, users, Chromium).
Every wait is on a condition in the page or the database, never on elapsed time."""

from __future__ import annotations

import os
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import yaml

from cloud.dashboard.browser import INGEST_KEY, ConsoleWatch, Ingest, login
from cloud.dashboard.tests import test_browser as dashboard_tests
from cloud.lifecycle import registry
from cloud.store.predicted import track
from shared.catalog import CORE_SENSOR_NAMES, PRIORITY_SENSORS
from shared.model_bundle import generate_keypair, pack_bundle
from simulator.signals import MachineSignals
from tests.support.pipeline import edge_config, start_simulator
from tests.support.processes import Service, wait_until

prerequisites = dashboard_tests.prerequisites
module_database = dashboard_tests.module_database
server = dashboard_tests.server
users = dashboard_tests.users
browser = dashboard_tests.browser
VIEWPORT = dashboard_tests.VIEWPORT

pytestmark = pytest.mark.integration

MACHINE = "P1"
HORIZON = 10  # the LSTM's prediction_horizon (models/lstm_autoencoder.py default)


def _train_and_publish(database_url: str, private: bytes) -> str:
    """A signed LSTM-only bundle (2 epochs: the forecast's existence is under test, not its
    quality) put in service for MACHINE; returns its version."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from models.ensemble import EnsembleConfig, HybridDetector
    from models.export import export_bundle
    from models.lstm_autoencoder import LSTMAutoencoder

    signals = MachineSignals(MACHINE, 7)
    X = np.array([signals.step(float(i)) for i in range(400)])
    config = EnsembleConfig(
        components=("lstm",), strategy="lstm", lstm=LSTMAutoencoder(epochs=2, encoding_dim=8)
    )
    detector = HybridDetector(config).fit(X, sensors=list(CORE_SENSOR_NAMES))
    version = f"lstm-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp:
        manifest = export_bundle(detector, Path(tmp) / "b", version=version, private_key=private)
        archive = pack_bundle(Path(tmp) / "b", Path(tmp) / "b.tar.gz").read_bytes()
    with psycopg.connect(database_url) as conn, conn.transaction():
        registry.register(
            conn,
            registry.Candidate(
                MACHINE, manifest["strategy"], {}, manifest, archive, None, None, 400, "test"
            ),
            accepted=True,
            reason="test",
            baseline_metrics=None,
        )
    return version


def _stored_forecast(database_url: str) -> dict[str, list[float]] | None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT detection->'forecast' FROM sensor_readings WHERE machine_id = %s "
            "AND detection ? 'forecast' ORDER BY \"timestamp\" DESC LIMIT 1",
            (MACHINE,),
        ).fetchone()
    return None if row is None else row[0]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_prediction_dots_from_real_edge_forecasts(
    browser: Any,
    server: str,
    module_database: str,
    users: dict[str, tuple[str, str]],
    tmp_path: Path,
) -> None:
    private, public = generate_keypair()
    (tmp_path / "signing.pub").write_bytes(public)
    (tmp_path / "api-key").write_text(INGEST_KEY)
    version = _train_and_publish(module_database, private)

    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    sim, sim_port = start_simulator(log_dir, None, [MACHINE], 4.0)
    cfg = edge_config(
        tmp_path,
        sim_port=sim_port,
        machines=[MACHINE],
        poll_interval_s=0.1,
        edge_id="edge-forecast",
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
    context = browser.new_context(viewport=VIEWPORT)
    try:
        wait_until(
            lambda: _stored_forecast(module_database) is not None,
            180,
            "a reading with the edge's forecast stored",
            services=[sim, edge],
        )
        forecast = _stored_forecast(module_database)
        assert forecast is not None
        drawn = [s for s in PRIORITY_SENSORS if s in forecast]
        assert drawn and all(len(forecast[s]) == HORIZON for s in drawn)

        page = context.new_page()
        watch = ConsoleWatch(page)
        login(page, server, *users["operator"], path=f"/?machine={MACHINE}")
        sensor = drawn[0]
        dots = f'#tiles [data-sensor="{sensor}"] .dots'
        # Drawn from a forecast that arrived live (the page keeps the newest one).
        page.wait_for_selector(f"{dots}:not([hidden])", timeout=60_000)
        assert page.eval_on_selector_all(f"{dots} .dot", "els => els.length") == HORIZON
        assert page.evaluate("() => window.__dash.forecast.model") == version
        dashboard_tests._clean(watch)
    finally:
        context.close()
        edge.stop()
        sim.stop()


def test_predicted_anomaly_in_the_feed_then_confirmed(
    browser: Any, server: str, module_database: str, users: dict[str, tuple[str, str]]
) -> None:
    machine = f"Q{uuid.uuid4().hex[:5]}"
    ingest = Ingest(server)

    def verdict(seq: int, **detection: Any) -> dict[str, Any]:
        # The edge's own verdict (edge_id and seq: cloud/scoring.py's trust rule).
        return {
            "machine_id": machine,
            "edge_id": f"rig-{machine}",
            "seq": seq,
            "timestamp": datetime.now(UTC).isoformat(),
            "vibration": 2.0,
            "detection": {"method": "lstm", "score": 0.4, "model_version": "m-1", **detection},
        }

    def evaluate() -> None:  # what the alert evaluator's predicted rule does on each pass
        with psycopg.connect(module_database) as conn, conn.transaction():
            track(conn, 0.8, window_s=300, horizon_s=300)

    try:
        # A client's claimed probability (no edge seq) raises nothing.
        ingest.post(
            {
                "machine_id": machine,
                "vibration": 2.0,
                "detection": {
                    "method": "lstm",
                    "is_anomaly": False,
                    "score": 0.1,
                    "probability_ahead": 0.99,
                },
            }
        )
        ingest.post(verdict(1, is_anomaly=False, probability_ahead=0.93))
        evaluate()
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        watch = ConsoleWatch(page)
        login(page, server, *users["operator"], path=f"/anomalies?machine_id={machine}")
        item = f'#predicted [data-machine="{machine}"]'
        page.wait_for_selector(f'{item}[data-state="predicted"]')
        assert page.locator(item).count() == 1
        ingest.post(verdict(2, is_anomaly=True, score=2.5, sensors=["vibration"]))
        evaluate()
        # Polled by the page (the evaluator's tick is not announced on the live stream).
        page.wait_for_selector(f'{item}[data-state="confirmed"] a[href^="/anomalies/"]')
        dashboard_tests._clean(watch)
        context.close()
    finally:
        ingest.close()
