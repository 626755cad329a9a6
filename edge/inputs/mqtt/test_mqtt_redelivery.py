"""Exactly once through a crash between commit and PUBACK: a real Mosquitto, a real
``rig-edge`` process that stops itself (SIGKILL) right after a buffer commit, before it has
acknowledged the messages of that commit, while a publisher sends QoS 1 messages with unique
ids. The broker delivers those messages again (DUP) to the restarted edge, which recognises
them by the digest committed with them: every message is stored exactly once."""

from __future__ import annotations

import re
import sqlite3
import threading
import uuid
from collections import Counter
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
import yaml

from tests.support.processes import Service, free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

FAILPOINT = "edge.buffer.after_commit"


def _metric(port: int, name: str, labels: str = "") -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return -1.0
    pattern = rf"^{re.escape(name)}(?:\{{[^}}]*{re.escape(labels)}[^}}]*\}})? ([0-9.e+]+)$"
    values = [float(m) for m in re.findall(pattern, text, re.MULTILINE)]
    return sum(values) if values else 0.0


def _stored_ids(buffer: Path) -> Counter[int]:
    """Message ids of the readings in the buffer (read-only, beside a running edge)."""
    if not buffer.exists():
        return Counter()
    conn = sqlite3.connect(f"file:{buffer}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT payload FROM readings").fetchall()
    finally:
        conn.close()
    ids: Counter[int] = Counter()
    for (payload,) in rows:
        msg_id = orjson.loads(payload).get("custom", {}).get("msg_id")
        if msg_id is not None and msg_id >= 0:
            ids[int(msg_id)] += 1
    return ids


class _Publisher(threading.Thread):
    """Publishes QoS 1 messages with ids 0, 1, ... at a steady pace until told to finish,
    each confirmed by the broker (PUBACK) before the next, so every id sent is the broker's
    to deliver."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        super().__init__(daemon=True)
        self.topic = topic
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4()}")
        self.client.connect(host, port)
        self.client.loop_start()
        self.sent = 0
        self.error: BaseException | None = None
        self.finish = threading.Event()

    def publish(self, msg_id: int) -> None:
        payload = orjson.dumps({"values": {"rpm": 1500.0, "msg_id": msg_id}})
        self.client.publish(self.topic, payload, qos=1).wait_for_publish(timeout=10)

    def run(self) -> None:
        try:
            while not self.finish.is_set():
                self.publish(self.sent)
                self.sent += 1
                self.finish.wait(0.0025)  # pacing: a few hundred messages a second
        except BaseException as exc:
            self.error = exc

    def close(self) -> None:
        self.finish.set()
        self.join(30)
        self.client.loop_stop()
        self.client.disconnect()


def test_messages_redelivered_after_a_crash_are_stored_once(
    tmp_path: Path, log_dir: Path, mqtt_broker: tuple[str, int]
) -> None:
    host, port = mqtt_broker
    prefix = f"redelivery-{uuid.uuid4().hex[:8]}"
    metrics_port = free_port()
    buffer = tmp_path / "buffer.db"
    config = {
        "edge_id": "mqtt-redelivery",
        "buffer": {"path": str(buffer), "min_free_bytes": 1 << 20},
        "metrics": {"port": metrics_port},
        "inputs": {
            "mqtt": [
                {
                    "name": "plant",
                    "host": host,
                    "port": port,
                    "client_id": f"edge-{prefix}",
                    "clean_session": False,
                    "qos": 1,
                    "subscriptions": [
                        {
                            "topic": f"{prefix}/+/telemetry",
                            "machine_from_topic": 1,
                            "values_path": "values",
                        }
                    ],
                }
            ]
        },
        # Nowhere to forward: every reading stays in the buffer, where it is counted.
        "output": {
            "kind": "http",
            "url": f"http://127.0.0.1:{free_port()}/api/v1/ingest",
            "api_key_env": "PATH",
        },
    }
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(yaml.safe_dump(config))

    def edge(run: int, failpoint_at: int | None) -> Service:
        env = {"RIG_FAILPOINTS": f"{FAILPOINT}={failpoint_at}" if failpoint_at else ""}
        return Service(f"rig-edge-{run}", ["edge.cli", "run", "-c", str(cfg)], log_dir, env).start()

    publisher = _Publisher(host, port, f"{prefix}/A/telemetry")
    services: list[Service] = []
    try:
        services.append(edge(0, 40))

        # The edge's persistent session exists once its first message arrives; from then on
        # the broker keeps everything published for it, edge running or not.
        def subscribed() -> bool:
            if _metric(metrics_port, "rig_edge_readings_in_total") > 0:
                return True
            publisher.publish(-1)
            return False

        wait_until(subscribed, 60, "the edge's MQTT subscription", services=services)
        publisher.start()
        # Three crashes right after a commit, each before the PUBACKs of that commit; the
        # publisher goes on meanwhile.
        for run, failpoint_at in enumerate((25, 60, None), start=1):
            services[-1].wait_failpoint(FAILPOINT, timeout=120)
            services.append(edge(run, failpoint_at))
        last = services[-1]
        wait_until(
            lambda: _metric(metrics_port, "rig_edge_readings_in_total") > 0,
            60,
            "the last edge to receive messages",
            services=[last],
        )
        publisher.finish.set()
        publisher.join(60)
        assert publisher.error is None, publisher.error
        sent = publisher.sent
        assert sent > 0
        wait_until(
            lambda: len(_stored_ids(buffer)) >= sent,
            120,
            f"all {sent} messages in the buffer",
            services=[last],
        )
        # The last crash's unacknowledged messages came back flagged DUP and were recognised.
        redelivered = _metric(metrics_port, "rig_edge_mqtt_redelivered_total")
        assert last.stop() == 0, last.tail()
    finally:
        publisher.close()
        for service in services:
            service.stop()
    stored = _stored_ids(buffer)
    duplicates = {msg_id: n for msg_id, n in stored.items() if n > 1}
    assert not duplicates, f"stored more than once: {sorted(duplicates.items())[:20]}"
    assert sorted(stored) == list(range(sent))
    assert redelivered >= 1
