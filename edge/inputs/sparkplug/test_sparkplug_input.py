"""The Sparkplug input against a real Mosquitto: the probe, the host's STATE, and the
acknowledgement of a message that makes several readings (an NDEATH for two machines):
the broker delivers it again until every reading is committed, each with a digest of its
own that the daemon recognises."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge.inputs.common import DeliveryHandle
from edge.inputs.sparkplug.config import SparkplugInputConfig
from edge.inputs.sparkplug.input import SparkplugInput
from edge.inputs.sparkplug.test_host import bd_seq, metric, payload
from edge.metrics import EdgeMetrics
from shared.message import Reading
from tests.support.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _config(broker: tuple[str, int], client_id: str, **extra: Any) -> SparkplugInputConfig:
    return SparkplugInputConfig.model_validate(
        {
            "name": "spb",
            "host": broker[0],
            "port": broker[1],
            "client_id": client_id,
            "group": "G",
            "devices": [
                {"node": "N", "device": "D", "machine": "A", "metrics": {"T": "temperature"}},
                {"node": "N", "machine": "B", "metrics": {"Cab": "ambient_temp"}},
            ],
            **extra,
        }
    )


def _publisher(broker: tuple[str, int]) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{time.monotonic_ns()}")
    client.connect(*broker)
    client.loop_start()
    return client


async def _until(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class _Run:
    """One SparkplugInput running in the test's event loop; collects what it emits."""

    def __init__(self, config: SparkplugInputConfig) -> None:
        self.got: list[tuple[Reading, DeliveryHandle | None]] = []
        self.input = SparkplugInput(config, "e1", self._emit, EdgeMetrics())
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.input.run(self.stop))

    def _emit(self, reading: Reading, handle: DeliveryHandle | None = None, **_: Any) -> bool:
        self.got.append((reading, handle))
        return True

    async def subscribed(self) -> None:
        """Connected. The session is persistent: after the first run its subscriptions are
        the broker's, so what is published from now on is delivered (the first run sends
        until it sees its message, as its SUBSCRIBE may still be on the way)."""
        await _until(lambda: self.input.health()["spb"], "connected")

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


def test_probe_against_the_broker_and_a_closed_port(mqtt_broker: tuple[str, int]) -> None:
    ok = SparkplugInput(_config(mqtt_broker, "probe-ok"), "e1", lambda *a, **k: True, EdgeMetrics())
    [result] = asyncio.run(ok.probe())
    assert result.ok and "2 subscription(s) granted" in result.detail
    closed = _config(("127.0.0.1", free_port()), "probe-closed")
    bad = SparkplugInput(closed, "e1", lambda *a, **k: True, EdgeMetrics())
    [result] = asyncio.run(bad.probe())
    assert not result.ok and "Connection refused" in result.detail


def test_state_of_the_host_application(mqtt_broker: tuple[str, int]) -> None:
    seen: list[bytes] = []
    got = threading.Event()
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="state-watch")

    def on_message(c: mqtt.Client, u: Any, message: mqtt.MQTTMessage) -> None:
        seen.append(bytes(message.payload))
        got.set()

    watcher.on_message = on_message
    watcher.connect(*mqtt_broker)
    watcher.subscribe("spBv1.0/STATE/rig-test", qos=1)
    watcher.loop_start()

    async def main() -> None:
        run = _Run(_config(mqtt_broker, "state-host", host_id="rig-test"))
        await _until(lambda: any(b'"online":true' in s for s in seen), "STATE online")
        await run.close()
        await _until(lambda: b'"online":false' in seen[-1], "STATE offline after a clean stop")

    try:
        asyncio.run(main())
    finally:
        watcher.loop_stop()
        watcher.disconnect()


def test_one_message_many_readings_is_acknowledged_when_all_are_committed(
    mqtt_broker: tuple[str, int],
) -> None:
    config = _config(mqtt_broker, "spb-acks")
    publisher = _publisher(mqtt_broker)
    birth = payload(bd_seq(5), metric("Cab", double=60.0), seq=0)
    death = payload(bd_seq(5))

    async def main() -> None:
        run = _Run(config)
        await run.subscribed()

        def send_birth() -> bool:
            if not run.got:
                publisher.publish("spBv1.0/G/NBIRTH/N", birth, qos=1).wait_for_publish(10)
            return bool(run.got)

        await _until(send_birth, "the NBIRTH reading")
        for _, handle in run.got:
            assert handle is not None
            handle()
        run.got.clear()
        publisher.publish("spBv1.0/G/NDEATH/N", death, qos=1).wait_for_publish(10)
        await _until(lambda: len(run.got) == 2, "two death readings")
        first = [(r.machine_id, h.message_key) for r, h in run.got if h is not None]
        assert sorted(m for m, _ in first) == ["A", "B"]
        assert len({key for _, key in first}) == 2  # a digest per reading
        assert all(set(r.quality.values()) == {"bad"} for r, _ in run.got)
        handle = run.got[0][1]
        assert handle is not None
        handle()  # one of the two committed: the message stays unacknowledged
        await run.close()

        again = _Run(config)
        await _until(lambda: len(again.got) == 2, "the NDEATH delivered again")
        assert all(h is not None and h.redelivered for _, h in again.got)
        assert [(r.machine_id, h.message_key) for r, h in again.got if h is not None] == first
        for _, handle in again.got:
            assert handle is not None
            handle()
        await again.close()

        last = _Run(config)
        await last.subscribed()
        # Garbage on the node's topics is counted and acknowledged; the input goes on. A
        # marker published after it arrives after anything the broker still had queued.
        for junk in (b"\xff\xff\xff", b'{"temperature": 1}', b""):
            publisher.publish("spBv1.0/G/DDATA/N/D", junk, qos=1).wait_for_publish(10)
        publisher.publish("spBv1.0/G/NBIRTH/N", birth, qos=1).wait_for_publish(10)
        await _until(lambda: len(last.got) >= 1, "the marker")
        assert [r.values for r, _ in last.got] == [{"ambient_temp": 60.0}]
        # Two malformed payloads (b"" is an empty, valid payload: no seq, counted too).
        errors = last.input.metrics.source_errors.labels("spb", "*")._value.get()
        assert errors >= 2
        for _, handle in last.got:
            if handle is not None:
                handle()
        await last.close()

    try:
        asyncio.run(main())
    finally:
        publisher.loop_stop()
        publisher.disconnect()
