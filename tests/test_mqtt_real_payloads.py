"""Payloads as plant devices publish them, sent with ``mosquitto_pub`` (the Mosquitto
project's CLI, Debian package mosquitto-clients) through a real Mosquitto into a real
``rig-edge``, whose buffer the test reads: a flat object, a partial object, a numeric
string and a bare scalar each store what they carry under the mapping documented in
edge/inputs/mqtt/README.md."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.pipeline import buffered_documents, kafka_output, start_edge, wait_health
from tests.support.processes import free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SUBSCRIPTIONS = [
    # {"temperature": 71.2, "pressure": 2400}: every key a sensor, none listed.
    {"topic": "site/+/flat", "machine_from_topic": 1, "values_path": "$"},
    # Reports by exception: whichever fields a message has.
    {
        "topic": "site/+/fields",
        "machine_from_topic": 1,
        "fields": {"temperature": "t", "pressure": "p", "rpm": "motor.rpm"},
    },
    # {"temperature": "71.9"}: numbers sent as strings.
    {
        "topic": "site/+/strings",
        "machine_from_topic": 1,
        "values_path": "$",
        "numeric_strings": True,
    },
    # 72.5 on plant/<machine>/<sensor>: the sensor is the topic's last level.
    {
        "topic": "plant/+/+",
        "machine_from_topic": 1,
        "sensor_from_topic": 2,
        "value_path": "$",
        "numeric_strings": True,
        "scaling": {"pressure": {"unit": "psi"}},  # stored in the catalog's bar
    },
]


def _config(tmp: Path, broker: tuple[str, int]) -> Path:
    doc = {
        "edge_id": "edge-mqtt-real",
        "log_level": "INFO",
        "buffer": {"path": str(tmp / "buffer.db")},
        "metrics": {"host": "127.0.0.1", "port": free_port()},
        "inputs": {
            "mqtt": [
                {
                    "name": "plant",
                    "host": broker[0],
                    "port": broker[1],
                    "client_id": "edge-mqtt-real",
                    "subscriptions": SUBSCRIPTIONS,
                }
            ]
        },
        # Nothing listens there: every reading stays in the buffer, where the test reads it.
        "output": kafka_output(f"127.0.0.1:{free_port()}", "mqtt-real"),
        "forwarding": {"retry_initial_s": 0.2, "retry_max_s": 2.0, "shutdown_flush_s": 1},
    }
    path = tmp / "edge.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _buffered(tmp: Path) -> list[dict[str, Any]]:
    return buffered_documents(tmp / "buffer.db")


def _of(tmp: Path, machine: str) -> list[dict[str, Any]]:
    return [d for d in _buffered(tmp) if d["machine_id"] == machine]


def test_mosquitto_pub_payloads_store_what_they_carry(
    tmp_path: Path, log_dir: Path, mqtt_broker: tuple[str, int]
) -> None:
    pub = shutil.which("mosquitto_pub")
    assert pub, "mosquitto_pub missing: apt-get install mosquitto-clients"
    host, port = mqtt_broker

    def publish(topic: str, message: str) -> None:
        subprocess.run(
            [pub, "-h", host, "-p", str(port), "-q", "1", "-t", topic, "-m", message],
            check=True,
            timeout=30,
        )

    cfg = _config(tmp_path, mqtt_broker)
    edge = start_edge(cfg, log_dir)
    try:
        wait_health(cfg, lambda d: d["inputs"]["plant"]["devices"]["plant"], "connected")

        # The subscription is in place once a message gets through (until then one may be
        # published before the SUBSCRIBE and never delivered): send a warm-up until stored.
        def through() -> bool:
            if not _of(tmp_path, "W"):
                publish("plant/W/rpm", "1")
            return bool(_of(tmp_path, "W"))

        wait_until(through, 60, "the warm-up message stored", services=[edge])

        publish("site/A/flat", '{"temperature": 71.2, "pressure": 2400}')
        publish("site/B/fields", '{"p": 2.5}')
        publish("site/C/strings", '{"temperature": "71.9", "vibration": "0.25"}')
        publish("plant/D/temperature", "72.5")
        publish("plant/D/pressure", "100")
        wait_until(
            lambda: all(_of(tmp_path, m) for m in "ABC") and len(_of(tmp_path, "D")) == 2,
            60,
            "every payload stored",
            services=[edge],
        )
        [flat] = _of(tmp_path, "A")
        assert flat["values"] == {"temperature": 71.2, "pressure": 2400.0}
        [partial] = _of(tmp_path, "B")
        assert partial["values"] == {"pressure": 2.5}  # t and motor.rpm absent: not fatal
        assert partial.get("quality", {}) == {}
        [strings] = _of(tmp_path, "C")
        assert strings["values"] == {"temperature": 71.9, "vibration": 0.25}
        scalars = {k: v for d in _of(tmp_path, "D") for k, v in d["values"].items()}
        assert scalars == {"temperature": 72.5, "pressure": pytest.approx(6.894757)}

        # What does not map is logged and acknowledged; the input goes on.
        publish("site/E/flat", '{"Temperature": 1}')
        publish("plant/E/temperature", "hot")
        publish("plant/E/rpm", "1500")
        wait_until(lambda: bool(_of(tmp_path, "E")), 60, "the input goes on", services=[edge])
        assert [d["values"] for d in _of(tmp_path, "E")] == [{"rpm": 1500.0}]
    finally:
        edge.stop()
