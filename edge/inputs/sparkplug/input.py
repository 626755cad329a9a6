"""Sparkplug B input: the edge as a Sparkplug host application for one group on one broker.

The meaning of each message (BIRTH, DATA, DEATH, aliases, bdSeq and seq) is in
``edge.inputs.sparkplug.host``; this module is the MQTT side, built like the MQTT input
(``edge.inputs.mqtt.input``) and sharing its client set-up and probe:

- a persistent session with a fixed client id; QoS 1 messages are acknowledged to the
  broker only after their readings are committed, with a digest per reading so that a
  message delivered again after a crash is not stored twice (``DeliveryHandle``). One
  message can make several readings (an NDEATH marks every machine of the node bad): each
  has its own digest, and the message is acknowledged when all of them are committed;
- a rebirth request (NCMD ``Node Control/Rebirth`` = true) when the host asks for one, at
  most once per node per ``rebirth_interval_s``;
- with ``host_id``, the Sparkplug 3.0 STATE of the host (retained, with an offline will).

A payload that is not Sparkplug B, or a metric that is not a number, is counted and logged
(rate-limited) with its topic and never stops the input; the message is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from edge.inputs.base import Emit, Input, ProbeResult
from edge.inputs.common import DeliveryHandle
from edge.inputs.mqtt.input import RESUME_FIRST_S, RESUME_MAX_S, make_client, probe_broker
from edge.inputs.sparkplug.config import SparkplugInputConfig
from edge.inputs.sparkplug.host import NAMESPACE, Outcome, SparkplugHost
from edge.inputs.sparkplug.payload import rebirth_request
from edge.metrics import EdgeMetrics
from shared.logs import log_event
from shared.message import Reading, TimeWindow

log = logging.getLogger(__name__)

# The same problem of the same node is logged at most this often (metrics count all).
_LOG_EVERY_S = 30.0


def part_key(topic: str, payload: bytes | bytearray, part: int) -> bytes:
    """The digest reading ``part`` of a message is recognised by when it comes again."""
    digest = hashlib.blake2b(topic.encode("utf-8", "surrogatepass"), digest_size=16)
    digest.update(b"\0")
    digest.update(payload)
    digest.update(b"\0sparkplug-part\0")
    digest.update(part.to_bytes(4, "big"))
    return digest.digest()


class SparkplugInput(Input[SparkplugInputConfig]):
    def __init__(
        self,
        config: SparkplugInputConfig,
        edge_id: str,
        emit: Emit,
        metrics: EdgeMetrics,
        *,
        window: TimeWindow | None = None,
    ) -> None:
        super().__init__(config, edge_id, emit, metrics, window=window)
        self.host = SparkplugHost(config, edge_id, self.sanity)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = threading.Event()
        self._closing = False
        self._lock = threading.Lock()
        self._unacked = 0
        self._refused = 0
        self._last_refusal = 0.0
        self._resume_after = RESUME_FIRST_S
        self._last_rebirth: dict[str, float] = {}
        self._last_log: dict[tuple[str, str], float] = {}
        self.rebirths_sent = 0
        self._state_ts = int(time.time() * 1000)
        client = make_client(config, client_id=config.client_id, clean_session=config.clean_session)
        client.manual_ack_set(True)
        client.reconnect_delay_set(0.5, 10)  # type: ignore[arg-type]  # see the MQTT input
        if config.host_id is not None:
            client.will_set(self._state_topic(), self._state(False), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client

    def health(self) -> dict[str, bool]:
        return {self.config.name: self._connected.is_set(), **self.host.machines_online()}

    # -- connection ---------------------------------------------------------------------

    def _state_topic(self) -> str:
        return f"{NAMESPACE}/STATE/{self.config.host_id}"

    def _state(self, online: bool) -> bytes:
        return orjson.dumps({"online": online, "timestamp": self._state_ts})

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None
    ) -> None:
        if reason.is_failure:
            log_event(
                log,
                logging.WARNING,
                "sparkplug connect refused",
                source=self.name,
                reason=str(reason),
            )
            return
        self._connected.set()
        self.metrics.source_reconnects.labels(self.name).inc()
        self.metrics.source_up.labels(self.name, "*").set(1)
        topics: list[tuple[str, int]] = [(t, self.config.qos) for t in self.config.topics()]
        client.subscribe(topics)
        if self.config.host_id is not None:
            client.publish(self._state_topic(), self._state(True), qos=1, retain=True)
        log_event(
            log,
            logging.INFO,
            "sparkplug connected",
            source=self.name,
            group=self.config.group,
            session_present=bool(getattr(flags, "session_present", False)),
        )

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None
    ) -> None:
        if self._connected.is_set() and not self._closing:
            log_event(
                log,
                logging.WARNING,
                "sparkplug disconnected; reconnecting",
                source=self.name,
                reason=str(reason),
            )
        self._connected.clear()
        self.metrics.source_up.labels(self.name, "*").set(0)

    # -- messages -----------------------------------------------------------------------

    def _handles(self, message: mqtt.MQTTMessage, parts: int) -> list[DeliveryHandle | None]:
        """One acknowledgement per reading of ``message``; the broker hears of it when all
        are committed (and not if one was refused: then it delivers the message again)."""
        if not message.qos:
            return [None] * parts
        with self._lock:
            self._unacked += parts
        left = [parts]
        refused = [False]

        def ack_part() -> None:
            with self._lock:
                self._unacked -= 1
                left[0] -= 1
                done = left[0] == 0 and not refused[0]
            if done:
                self._resume_after = RESUME_FIRST_S
                self.client.ack(message.mid, message.qos)

        def refuse_part() -> None:
            with self._lock:
                self._unacked -= 1
                left[0] -= 1
                refused[0] = True
                self._refused += 1
                self._last_refusal = time.monotonic()

        dup = bool(message.dup)
        return [
            DeliveryHandle(ack_part, refuse_part, part_key(message.topic, message.payload, i), dup)
            for i in range(parts)
        ]

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._closing:
            return  # not acknowledged: the broker redelivers it to the next session
        try:
            outcome = self.host.handle(message.topic, message.payload)
        except Exception as exc:  # a bug must cost this message, not the input
            log.exception("sparkplug message handling failed", extra={"topic": message.topic})
            outcome = Outcome(problems=[f"internal error: {type(exc).__name__}: {exc}"])
        if outcome.problems:
            self.metrics.source_errors.labels(self.name, "*").inc(len(outcome.problems))
            self._log_problems(message.topic, outcome.problems)
        if outcome.rebirth is not None:
            self._ask_rebirth(message.topic, outcome.rebirth)
        self._hand_over(message, outcome.readings)

    def _hand_over(self, message: mqtt.MQTTMessage, readings: list[Reading]) -> None:
        if not readings:
            if message.qos:
                self.client.ack(message.mid, message.qos)
            return
        handles = self._handles(message, len(readings))
        assert self._loop is not None
        for reading, handle in zip(readings, handles, strict=True):
            self.metrics.readings_in.labels(self.name).inc()
            self._loop.call_soon_threadsafe(self.emit, reading, handle)

    def _ask_rebirth(self, topic: str, why: str) -> None:
        node = topic.split("/")[3]
        now = time.monotonic()
        last = self._last_rebirth.get(node)
        if not self.config.rebirth or (
            last is not None and now - last < self.config.rebirth_interval_s
        ):
            return
        self._last_rebirth[node] = now
        self.rebirths_sent += 1
        self.host.rebirths_asked += 1
        command = f"{NAMESPACE}/{self.config.group}/NCMD/{node}"
        self.client.publish(command, rebirth_request(int(time.time() * 1000)), qos=0)
        log_event(
            log,
            logging.WARNING,
            "sparkplug rebirth requested",
            source=self.name,
            node=node,
            reason=why,
            topic=command,
        )

    def _log_problems(self, topic: str, problems: list[str]) -> None:
        now = time.monotonic()
        for problem in problems:
            kind = (topic.split("/")[3] if topic.count("/") >= 3 else topic, problem[:24])
            last = self._last_log.get(kind)
            if last is not None and now - last < _LOG_EVERY_S:
                continue
            self._last_log[kind] = now
            log_event(
                log,
                logging.WARNING,
                "sparkplug message problem",
                source=self.name,
                topic=topic,
                problem=problem,
            )

    # -- life cycle -------------------------------------------------------------------------

    def _restart_session(self) -> None:
        """Reconnect so the broker delivers the refused messages again."""
        with self._lock:
            refused, self._refused = self._refused, 0
        log_event(
            log,
            logging.WARNING,
            "sparkplug: reconnecting so the broker delivers refused messages again",
            source=self.name,
            refused=refused,
        )
        self._resume_after = min(RESUME_MAX_S, self._resume_after * 2)
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()
        self.client.connect_async(
            self.config.host, self.config.port, keepalive=self.config.keepalive_s
        )
        self.client.loop_start()

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self.client.connect_async(
            self.config.host, self.config.port, keepalive=self.config.keepalive_s
        )
        self.client.loop_start()
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
                if self._refused and time.monotonic() - self._last_refusal >= self._resume_after:
                    await asyncio.to_thread(self._restart_session)
            self._closing = True
            for _ in range(100):
                with self._lock:
                    if self._unacked == 0:
                        break
                await asyncio.sleep(0.05)
        finally:
            self._closing = True
            if self.config.host_id is not None and self._connected.is_set():
                # A clean stop says offline itself (the will is only for a crash).
                with contextlib.suppress(Exception):
                    self.client.publish(
                        self._state_topic(), self._state(False), qos=1, retain=True
                    ).wait_for_publish(2.0)
            with contextlib.suppress(Exception):
                self.client.disconnect()
            self.client.loop_stop()

    async def probe(self) -> list[ProbeResult]:
        config = self.config
        return await asyncio.to_thread(probe_broker, config, self.name, config.topics())
