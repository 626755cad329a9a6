"""MQTT input: wildcard subscriptions, JSON payloads mapped to readings.

QoS 1 messages are acknowledged to the broker only after their reading is committed to the
buffer (paho manual acks), and the session is persistent, so a crash or restart of the edge
loses nothing: the broker redelivers what was not acknowledged. A payload that does not
parse or map is counted and logged with its topic, acknowledged (it will never parse) and
never stops the input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from edge.inputs.mqtt.config import MqttSource, MqttSubscription
from edge.metrics import EdgeMetrics
from shared.catalog import SENSOR_INDEX
from shared.logs import log_event
from shared.message import CUSTOM_NAME_RE, MACHINE_ID_RE, MAX_ABS_VALUE, Reading

log = logging.getLogger(__name__)


class PayloadError(ValueError):
    pass


def _path(doc: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(doc, dict) or key not in doc:
            raise PayloadError(f"payload has no {path!r}")
        doc = doc[key]
    return doc


def _number(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadError(f"{name}: expected a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or abs(number) > MAX_ABS_VALUE:
        raise PayloadError(f"{name}: {number!r} is not a plausible reading")
    return number


def _timestamp(value: Any, fmt: str) -> datetime:
    try:
        if fmt == "iso8601":
            ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            return ts if ts.tzinfo else ts.replace(tzinfo=UTC)
        seconds = float(value) / (1000.0 if fmt == "unix_ms" else 1.0)
        return datetime.fromtimestamp(seconds, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        raise PayloadError(f"timestamp {value!r} is not {fmt}") from None


def map_message(sub: MqttSubscription, topic: str, payload: bytes, edge_id: str) -> Reading:
    """One message -> one reading, or PayloadError saying what is wrong."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"not JSON: {exc}") from None
    levels = topic.split("/")
    if sub.machine is not None:
        machine = sub.machine
    elif sub.machine_from_topic is not None:
        machine = levels[sub.machine_from_topic]
    else:
        machine = _path(doc, sub.machine_path or "")
    if not isinstance(machine, str) or not MACHINE_ID_RE.match(machine):
        raise PayloadError(f"machine id {machine!r} is not valid")

    raw: dict[str, Any] = {}
    if sub.values_path:
        values = _path(doc, sub.values_path)
        if not isinstance(values, dict):
            raise PayloadError(f"{sub.values_path!r} is not an object")
        raw = values
    elif sub.fields:
        raw = {sensor: _path(doc, path) for sensor, path in sub.fields.items()}
    else:
        raw = {levels[sub.sensor_from_topic or 0]: _path(doc, sub.value_path or "")}

    core: dict[str, float | None] = {}
    custom: dict[str, float] = {}
    quality: dict[str, str] = {}
    for name, value in raw.items():
        number = _number(name, value)
        if name in SENSOR_INDEX:
            core[name] = number
            if number is None:
                quality[name] = "bad"
        elif CUSTOM_NAME_RE.match(name):
            if number is not None:
                custom[name] = number
        else:
            raise PayloadError(f"sensor name {name!r} is not snake_case")
    if not core and not custom:
        raise PayloadError("no sensor values in the payload")
    ts = (
        _timestamp(_path(doc, sub.timestamp_path), sub.timestamp_format)
        if sub.timestamp_path
        else datetime.now(UTC)
    )
    return Reading(machine, edge_id, 0, ts, core, custom, quality)


class MqttConnector:
    def __init__(
        self, source: MqttSource, edge_id: str, emit: Callable[..., None], metrics: EdgeMetrics
    ) -> None:
        self.source = source
        self.edge_id = edge_id
        self.emit = emit
        self.metrics = metrics
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = threading.Event()
        self._closing = False
        self._unacked = 0
        self._unacked_lock = threading.Lock()
        self._matchers = [(s, s.topic) for s in source.subscriptions]
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=source.client_id,
            clean_session=source.clean_session,
        )
        client.manual_ack_set(True)
        if source.username:
            client.username_pw_set(source.username, source.password())
        if source.tls is not None:
            client.tls_set(
                ca_certs=str(source.tls.ca_file) if source.tls.ca_file else None,
                certfile=str(source.tls.cert_file) if source.tls.cert_file else None,
                keyfile=str(source.tls.key_file) if source.tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        client.reconnect_delay_set(0.5, 10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client

    def health(self) -> dict[str, bool]:
        return {self.source.name: self._connected.is_set()}

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None
    ) -> None:
        if reason.is_failure:
            log_event(
                log,
                logging.WARNING,
                "mqtt connect refused",
                source=self.source.name,
                reason=str(reason),
            )
            return
        self._connected.set()
        self.metrics.source_reconnects.labels(self.source.name).inc()
        self.metrics.source_up.labels(self.source.name, "*").set(1)
        client.subscribe([(s.topic, self.source.qos) for s in self.source.subscriptions])
        log_event(
            log,
            logging.INFO,
            "mqtt connected",
            source=self.source.name,
            session_present=bool(getattr(flags, "session_present", False)),
        )

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None
    ) -> None:
        if self._connected.is_set():
            log_event(
                log,
                logging.WARNING,
                "mqtt disconnected; reconnecting",
                source=self.source.name,
                reason=str(reason),
            )
        self._connected.clear()
        self.metrics.source_up.labels(self.source.name, "*").set(0)

    def _ack_later(self, message: mqtt.MQTTMessage) -> Callable[[], None] | None:
        if not message.qos:
            return None
        with self._unacked_lock:
            self._unacked += 1

        def ack() -> None:
            self.client.ack(message.mid, message.qos)
            with self._unacked_lock:
                self._unacked -= 1

        return ack

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._closing:
            return  # not acknowledged: the broker redelivers it to the next session
        ack = self._ack_later(message)
        for sub, pattern in self._matchers:
            if mqtt.topic_matches_sub(pattern, message.topic):
                try:
                    reading = map_message(sub, message.topic, message.payload, self.edge_id)
                except PayloadError as exc:
                    self.metrics.source_errors.labels(self.source.name, "*").inc()
                    log_event(
                        log,
                        logging.WARNING,
                        "mqtt payload rejected",
                        source=self.source.name,
                        topic=message.topic,
                        error=str(exc),
                        payload=message.payload[:200].decode("utf-8", "replace"),
                    )
                    break
                self.metrics.readings_in.labels(self.source.name).inc()
                assert self._loop is not None
                # Hand over to the event loop; the ack goes out once the reading is committed.
                self._loop.call_soon_threadsafe(self.emit, reading, ack)
                return
        if ack is not None:
            ack()

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self.client.connect_async(
            self.source.host, self.source.port, keepalive=self.source.keepalive_s
        )
        self.client.loop_start()
        try:
            await stop.wait()
            # Stop taking messages, then wait until every reading handed over has been
            # committed and acknowledged, so a clean shutdown causes no redelivery.
            self._closing = True
            for _ in range(100):
                with self._unacked_lock:
                    if self._unacked == 0:
                        break
                await asyncio.sleep(0.05)
        finally:
            with contextlib.suppress(Exception):
                self.client.disconnect()
            self.client.loop_stop()
