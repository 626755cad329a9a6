"""`make demo` shows the operator's loop (issue 13 item 7): a fresh demo with its fault schedule
shrunk (--schedule-scale) stores the first anomaly, the alert reaches the mail catcher and the
webhook log the demo printed, and the operator acknowledges the anomaly through the API the
feed page uses. Thresholds only (--without-ml): the first fault must not need a model."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.accounts import bearer
from tests.support.processes import free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]
ROOT = Path(__file__).resolve().parents[1]


def _printed(log: Path, pattern: str) -> re.Match[str] | None:
    return re.search(pattern, log.read_text(errors="replace"))


def test_demo_fault_becomes_anomaly_and_alert_delivered_where_printed(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "demo.log"
    # --schedule-scale 0.2: the spike on A after 12 s of simulation instead of 60 s.
    command = [
        sys.executable, "-m", "tools.demo", "--port", str(port),
        "--state-dir", str(tmp_path / "state"), "--rate", "2",
        "--schedule-scale", "0.2", "--without-ml",
    ]  # fmt: skip
    with out.open("wb") as handle:
        demo = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive() -> bool:
        assert demo.poll() is None, out.read_text(errors="replace")
        return True

    try:
        wait_until(lambda: alive() and bool(_printed(out, "Press Ctrl-C")), 90, "demo banner")
        login = _printed(out, r"Log in as\s*:\s*(\S+) / (\S+)")
        mail = _printed(out, r"e-mail\s*:.*\n\s*-> (\S+mail\.log)")
        webhook = _printed(out, r"webhook\s*:.*\n\s*-> (\S+webhook\.log)")
        assert login and mail and webhook, out.read_text()
        assert re.search(r"pressure spike on machine A", out.read_text()), out.read_text()
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        token = client.post(
            "/api/v1/auth/login", json={"username": login[1], "password": login[2]}
        ).json()["token"]

        found: list[dict[str, Any]] = []

        def anomaly_on_a() -> bool:
            alive()
            rows = client.get("/api/v1/anomalies", headers=bearer(token)).json()["anomalies"]
            found[:] = [r for r in rows if r["machine_id"] == "A" and "pressure" in r["sensors"]]
            return bool(found)

        wait_until(anomaly_on_a, 60, "the spike on A in the anomaly feed", interval=1)
        assert found[0]["severity"] == "critical" and found[0]["method"] == "thresholds"

        mail_log, webhook_log = Path(mail[1]), Path(webhook[1])

        def delivered() -> bool:
            alive()
            return (
                mail_log.exists()
                and "sensor pressure" in mail_log.read_text()
                and webhook_log.exists()
                and webhook_log.stat().st_size > 0
            )

        wait_until(delivered, 60, "the alert in the mail catcher and the webhook log")
        mail_text = mail_log.read_text()
        assert "To: operator@rig-alpha.demo" in mail_text, mail_text
        assert "FIRING critical" in mail_text and "machine A" in mail_text, mail_text
        first = json.loads(webhook_log.read_text().splitlines()[0])
        assert first["body"]["event"] == "firing", first
        assert first["body"]["alert"]["machine_id"] == "A", first
        assert "alert delivered: e-mail" in out.read_text()

        # The alert as the feed page lists it, and the operator's acknowledgement.
        alerts = client.get("/api/v1/alerts", headers=bearer(token)).json()["alerts"]
        assert any(a["machine_id"] == "A" and a["sensor"] == "pressure" for a in alerts), alerts
        acked = client.post(
            f"/api/v1/anomalies/{found[0]['id']}/acknowledge",
            headers=bearer(token),
            json={"note": "seen in the demo"},
        )
        assert acked.status_code == 200, acked.text
        assert acked.json()["state"] == "acknowledged"
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(60)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0, out.read_text()
    # Nothing is left running (the alerting service and the embedded PostgreSQL included).
    import psutil

    state = str(tmp_path / "state")
    leftovers = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any(state in part for part in (p.info["cmdline"] or []))
    ]
    assert leftovers == []
