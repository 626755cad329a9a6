"""MQTT publishing of the simulated machines (paho-mqtt), in two shapes so the edge's topic
and payload mapping gets exercised:

- machine documents: ``<topic_prefix>/<machine>/telemetry``, one JSON document per machine per
  tick: ``{"machine_id", "sample", "ts_ms", "state", "values": {sensor: number|null}}``;
- plant devices: ``<plant_prefix>/<machine>/<category>/<sensor>``, one message per sensor:
  ``{"val": number|null, "unit": "°F", "time": "<ISO 8601 UTC>"}``.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import UTC, datetime

import orjson
import paho.mqtt.client as mqtt

from shared.catalog import CORE_SENSORS
from simulator.config import MqttSettings
from simulator.engine import Sample, as_mapping

log = logging.getLogger(__name__)


class MqttPublisher:
    def __init__(self, settings: MqttSettings, client_id: str = "rig-sim") -> None:
        self.settings = settings
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True
        )
        if settings.username:
            self.client.username_pw_set(
                settings.username, os.environ.get(settings.password_env or "", None)
            )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.2, 5)
        self._connected = threading.Event()
        self.client.on_connect = lambda *args: self._connected.set()
        self.client.on_disconnect = lambda *args: self._connected.clear()
        if settings.plant_sensors == "all":
            self._plant = list(range(len(CORE_SENSORS)))
        else:
            names = [s.name for s in CORE_SENSORS]
            self._plant = [names.index(n) for n in settings.plant_sensors]
        self.published = 0

    def start(self, timeout: float = 10.0) -> None:
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            log.warning(
                "mqtt broker not reachable yet; publishing resumes when it is",
                extra={"fields": {"broker": f"{self.settings.host}:{self.settings.port}"}},
            )

    def publish(self, samples: list[Sample]) -> None:
        qos = self.settings.qos
        for sample in samples:
            values = as_mapping(sample)
            doc = {
                "machine_id": sample.machine_id,
                "sample": sample.counter,
                "ts_ms": sample.device_ts_ms,
                "state": sample.state,
                "values": values,
            }
            self.client.publish(
                f"{self.settings.topic_prefix}/{sample.machine_id}/telemetry",
                orjson.dumps(doc),
                qos=qos,
            )
            if self._plant:
                when = (
                    datetime.fromtimestamp(sample.device_ts_ms / 1000, UTC)
                    .isoformat()
                    .replace("+00:00", "Z")
                )
                for index in self._plant:
                    spec = CORE_SENSORS[index]
                    topic = (
                        f"{self.settings.plant_prefix}/{sample.machine_id}/"
                        f"{spec.category.value}/{spec.name}"
                    )
                    payload = {"val": values[spec.name], "unit": spec.unit, "time": when}
                    self.client.publish(topic, orjson.dumps(payload), qos=qos)
            self.published += 1

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
