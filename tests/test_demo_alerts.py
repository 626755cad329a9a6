"""The demo's fault schedule and alert receivers (tools/demo_alerts.py), without the demo: the
schedule shrinks as asked and reads in wall-clock time, and what a real SMTP client and an
HTTP client deliver lands, readable, in the logs the demo prints."""

from __future__ import annotations

import json
import smtplib
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from simulator.config import SimConfig
from tests.support.processes import free_port
from tools.demo_alerts import (
    MIN_FAULT_S,
    AlertReceivers,
    scaled_scenario,
    schedule_lines,
)

DEMO_SCENARIO = Path(__file__).resolve().parents[1] / "simulator" / "scenarios" / "demo.yaml"


def test_the_schedule_scales_and_stays_a_valid_scenario() -> None:
    full = scaled_scenario(DEMO_SCENARIO, 1.0)
    short = scaled_scenario(DEMO_SCENARIO, 0.1)
    SimConfig.model_validate(short)
    first = min(full["faults"], key=lambda f: f["start_s"])
    # The first fault is one the edge's thresholds catch, within the first two minutes.
    assert first["kind"] == "spike" and first["start_s"] <= 120
    for a, b in zip(full["faults"], short["faults"], strict=True):
        assert b["start_s"] == pytest.approx(a["start_s"] * 0.1)
        assert b["duration_s"] == pytest.approx(max(MIN_FAULT_S, a["duration_s"] * 0.1))
    with pytest.raises(ValueError, match="schedule scale"):
        scaled_scenario(DEMO_SCENARIO, 0)


def test_schedule_lines_in_wall_clock_time() -> None:
    lines = schedule_lines(
        scaled_scenario(DEMO_SCENARIO, 1.0), datetime(2026, 11, 29, 17, 0, tzinfo=UTC)
    )
    assert lines[0].startswith("17:01:00 UTC (+1.0 min)  pressure spike on machine A")
    assert any("machine B's pump cavitates until 17:12:00 UTC" in line for line in lines)
    assert any("machine C's bearing" in line and "18:00:00 UTC" in line for line in lines)


def test_receivers_log_what_arrives(tmp_path: Path) -> None:
    announced: list[str] = []
    receivers = AlertReceivers(tmp_path, smtp_port=free_port(), announce=announced.append)
    receivers.start()
    try:
        message = EmailMessage()
        message["From"] = "alerts@rig-alpha.demo"
        message["To"] = "operator@rig-alpha.demo"
        message["Subject"] = "[Rig Alpha] FIRING critical: spike"
        message.set_content("Machine: A\nSensor: pressure\n")
        with smtplib.SMTP("127.0.0.1", receivers.smtp_port, timeout=10) as smtp:
            smtp.send_message(message)
        response = httpx.post(
            receivers.webhook_url, json={"event": "firing", "alert": {"summary": "spike"}}
        )
        assert response.status_code == 200
    finally:
        receivers.stop()
    mail = receivers.mail_log.read_text()
    assert "Subject: [Rig Alpha] FIRING critical: spike" in mail
    assert "Sensor: pressure" in mail  # decoded, not the wire's transfer encoding
    hook = json.loads(receivers.webhook_log.read_text())
    assert hook["path"] == "/alerts" and hook["body"]["event"] == "firing"
    assert announced == [
        "e-mail to operator@rig-alpha.demo: [Rig Alpha] FIRING critical: spike",
        "webhook /alerts: firing spike",
    ]
