"""The line-protocol ingest against Telegraf itself: Telegraf's own inputs (mem, and a PLC's
values read from a line-protocol file) written by its outputs.http with the configuration
docs/integrations.md gives (gzip, X-API-KEY from the environment, global tag machine_id) to
a real API process on a real PostgreSQL. Readings are stored, a resent line is stored once,
and a line without numbers is refused with its reason in the API's log while Telegraf, told
not to retry a 422, carries on.

Telegraf is built from the Go module proxy with only the plugins used here
(``make peer-telegraf``, about ten minutes on two cores); without it this test is skipped."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from tests.support.processes import Service, free_port, http_ok, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
BUILT = ROOT / ".cache" / "bin" / "telegraf"
KEY = "k-" + "t" * 30


def _telegraf() -> str:
    found = os.environ.get("TELEGRAF_BIN") or (str(BUILT) if BUILT.exists() else None)
    found = found or shutil.which("telegraf")
    if not found:
        pytest.skip("telegraf not built: `make peer-telegraf` (Go module proxy)")
    return found


def _documented_output(port: int) -> str:
    """The telegraf.conf snippet of docs/integrations.md, pointed at this test's API."""
    doc = (ROOT / "docs" / "integrations.md").read_text(encoding="utf-8")
    (conf,) = [b for b in re.findall(r"```toml\n(.*?)```", doc, re.S) if "[[outputs.http]]" in b]
    return conf.replace("http://cloud.example:8080", f"http://127.0.0.1:{port}").replace(
        'machine_id = "A"', 'machine_id = "T"'
    )


def test_telegraf_writes_through_the_documented_output(
    database_url: str, tmp_path: Path, log_dir: Path
) -> None:
    telegraf = _telegraf()
    port = free_port()
    api = Service(
        "api",
        ["cloud.cli", "serve", "--port", str(port)],
        log_dir,
        {"DATABASE_URL": database_url, "RIG_INGEST_API_KEY": KEY},
    ).start()
    try:
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 60, "the API", services=[api]
        )
        ts = time.time_ns()
        plc = tmp_path / "plc.lp"
        plc.write_text(
            f"modbus,name=press-1,slave_id=1,type=holding_register "
            f"temperature=71.2,pressure=10.4,rpm=2950i {ts}\n"
            f'status,name=press-1 state="running",alarm=false {ts}\n'
        )
        conf = tmp_path / "telegraf.conf"
        conf.write_text(
            _documented_output(port) + f'\n[[inputs.mem]]\n\n[[inputs.file]]\n  files = ["{plc}"]\n'
            '  data_format = "influx"\n'
        )
        env = {**os.environ, "RIG_INGEST_KEY": KEY}

        def run_once() -> None:
            done = subprocess.run(
                [telegraf, "--config", str(conf), "--once"],
                capture_output=True,
                env=env,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr.decode()[-2000:]

        run_once()
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(
                "SELECT machine_id, temperature, pressure, rpm, custom_sensors "
                "FROM sensor_readings ORDER BY temperature NULLS LAST"
            ).fetchall()
        assert len(rows) == 2, rows
        plc_row, mem_row = rows
        assert plc_row[:4] == ("T", 71.2, 10.4, 2950.0)
        assert {r[0] for r in rows} == {"T"}
        assert "used_percent" in mem_row[4] and "total" in mem_row[4]
        wait_until(
            lambda: "line protocol refused" in api.log_path.read_text(errors="replace"),
            30,
            "the refused status line in the API log",
        )

        # Again, two seconds on (Telegraf rounds gather times to its 1 s interval, to the
        # nearest second): it reads the file anew (same timestamp: stored once) and gathers
        # memory at a new time (a new reading).
        second = int(time.time())
        wait_until(lambda: int(time.time()) >= second + 2, 5, "two seconds on")
        run_once()
        with psycopg.connect(database_url) as conn:
            count, plc_count = conn.execute(
                "SELECT count(*), count(temperature) FROM sensor_readings"
            ).fetchone()
        assert (count, plc_count) == (3, 1)
    finally:
        api.stop()
