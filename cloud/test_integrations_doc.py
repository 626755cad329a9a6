"""The examples of docs/integrations.md work as written: the Node-RED flow is valid JSON
whose function node (run by Node.js) builds a reading the JSON ingest stores, and the
telegraf.conf snippet is valid TOML whose outputs.http (URL, headers, gzip, data_format)
gets Telegraf-shaped lines stored by the line-protocol endpoint (real PostgreSQL)."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.settings import CloudSettings
from cloud.test_ingest_influx import telegraf_batch

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parent.parent / "docs" / "integrations.md"
KEY = "k-" + "d" * 30


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    settings = CloudSettings(database_url=database_url, ingest_api_key=KEY)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _rows(database_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            'SELECT machine_id, "timestamp", temperature, pressure, custom_sensors '
            "FROM sensor_readings ORDER BY temperature NULLS LAST"
        ).fetchall()


def test_node_red_flow_posts_a_reading_that_is_stored(
    client: TestClient, database_url: str
) -> None:
    (flow_text,) = _blocks("json")
    flow = json.loads(flow_text)
    nodes = {node["id"]: node for node in flow}
    # The wiring: inject -> function -> http request -> debug.
    assert nodes["rig_inject"]["wires"] == [["rig_reading"]]
    assert nodes["rig_reading"]["wires"] == [["rig_post"]]
    post = nodes["rig_post"]
    assert (post["type"], post["method"], post["ret"]) == ("http request", "POST", "obj")
    assert urlsplit(post["url"]).path == "/api/v1/ingest"

    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is required (make system-deps installs npm and node)")
    # Node-RED runs a function node's body with msg and env in scope.
    script = (
        "const env = {get: (name) => name === 'RIG_KEY' ? process.argv[1] : undefined};\n"
        f"const msg = (function (msg) {{\n{nodes['rig_reading']['func']}\n}})({{}});\n"
        "process.stdout.write(JSON.stringify(msg));\n"
    )
    out = subprocess.run(
        [node, "-e", script, KEY], capture_output=True, check=True, timeout=30
    ).stdout
    msg = json.loads(out)
    before = datetime.now(UTC)
    response = client.post(
        urlsplit(post["url"]).path, content=json.dumps(msg["payload"]), headers=msg["headers"]
    )
    assert response.status_code == 200, response.text
    ((machine, ts, temperature, pressure, custom),) = _rows(database_url)
    assert (machine, pressure, custom) == ("A", 10.2, {"spindle_load": 0.42})
    assert 70 <= temperature <= 72
    # Date.now() in milliseconds, taken as such.
    assert abs((ts - before).total_seconds()) < 60


def test_telegraf_conf_output_gets_lines_stored(client: TestClient, database_url: str) -> None:
    (conf_text,) = [b for b in _blocks("toml") if "[[outputs.http]]" in b]
    conf = tomllib.loads(conf_text.replace("${RIG_INGEST_KEY}", KEY))
    (output,) = conf["outputs"]["http"]
    assert output["data_format"] == "influx" and output["method"] == "POST"
    assert 503 not in output["non_retryable_statuscodes"]  # Kafka down: Telegraf retries
    url = urlsplit(output["url"])
    machine = conf["global_tags"]["machine_id"]
    body = telegraf_batch(datetime.now(UTC), machine).encode()
    headers = dict(output["headers"])
    if output.get("content_encoding") == "gzip":
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    response = client.post(f"{url.path}?{url.query}", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 4
    assert {row[0] for row in _rows(database_url)} == {machine}
