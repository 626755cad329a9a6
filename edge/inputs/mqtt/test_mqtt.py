"""The MQTT input against a real Mosquitto broker fed by the simulator: both payload shapes,
malformed payloads, a broker restart, and messages published while the edge was down."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge.inputs.mqtt.config import MqttInputConfig, MqttSubscription
from edge.inputs.mqtt.input import MqttInput, PayloadError, map_message
from edge.metrics import EdgeMetrics
from shared.catalog import CORE_SENSOR_NAMES
from shared.message import Reading
from simulator.config import SimConfig
from simulator.server import run_simulator
from tests.support.processes import Mosquitto

PLANT = MqttSubscription.model_validate(
    {
        "topic": "plant/+/+/+",
        "machine_from_topic": 1,
        "sensor_from_topic": 3,
        "value_path": "val",
        "timestamp_path": "time",
    }
)
TELEMETRY = MqttSubscription.model_validate(
    {
        "topic": "rig/+/telemetry",
        "machine_from_topic": 1,
        "values_path": "values",
        "timestamp_path": "ts_ms",
        "timestamp_format": "unix_ms",
    }
)


def test_payload_mapping_and_its_errors() -> None:
    reading = map_message(
        PLANT,
        "plant/B/mechanical/rpm",
        b'{"val": 3100.5, "unit": "RPM", "time": "2026-11-22T10:00:00Z"}',
        "e1",
    )
    assert (reading.machine_id, reading.values) == ("B", {"rpm": 3100.5})
    custom = map_message(
        PLANT, "plant/B/x/arm_torque", b'{"val": 2, "time": "2026-11-22T10:00:00+00:00"}', "e1"
    )
    assert custom.custom == {"arm_torque": 2.0}
    # An implausible value is that sensor's problem, not the message's: marked bad.
    wild = map_message(PLANT, "plant/B/m/rpm", b'{"val": 1e300, "time": "2026-01-01"}', "e1")
    assert (wild.values, wild.quality) == ({"rpm": None}, {"rpm": "bad"})
    for topic, payload, problem in [
        ("plant/B/m/rpm", b"{oops", "not JSON"),
        ("plant/B/m/rpm", b'{"value": 1}', "no 'val'"),
        ("plant/B/m/rpm", b'{"val": "fast", "time": "2026-01-01"}', "expected a number"),
        ("plant/B b/m/rpm", b'{"val": 1, "time": "2026-01-01"}', "machine id"),
        ("plant/B/m/Bad-Name", b'{"val": 1, "time": "2026-01-01"}', "snake_case"),
        ("plant/B/m/rpm", b'{"val": 1, "time": "yesterday"}', "timestamp"),
    ]:
        with pytest.raises(PayloadError, match=problem):
            map_message(PLANT, topic, payload, "e1")


def test_subscription_config_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="exactly one of machine"):
        MqttSubscription.model_validate({"topic": "a/+", "values_path": "v"})
    with pytest.raises(ValueError, match="must be a '\\+' wildcard"):
        MqttSubscription.model_validate(
            {"topic": "a/b", "machine_from_topic": 1, "values_path": "v"}
        )


async def _until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for a condition inside the event loop; fail loudly when it does not come."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def _recorded(record: Path) -> set[tuple[str, int]]:
    if not record.exists():
        return set()
    conn = sqlite3.connect(f"file:{record}?mode=ro", uri=True)
    try:
        return {(m, t) for m, t in conn.execute("SELECT machine_id, ts_ms FROM samples")}
    except sqlite3.OperationalError:
        return set()
    finally:
        conn.close()


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_simulator_values_arrive_through_restarts_and_downtime(tmp_path: Path) -> None:
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    source = MqttInputConfig.model_validate(
        {
            "name": "plant-mqtt",
            "host": "127.0.0.1",
            "port": broker.port,
            "client_id": "edge-test-1",
            "clean_session": False,
            "qos": 1,
            "subscriptions": [TELEMETRY.model_dump(), PLANT.model_dump()],
        }
    )
    metrics = EdgeMetrics()
    readings: list[Reading] = []

    def emit(reading: Reading, ack=None) -> None:
        readings.append(reading)  # committed: acknowledge, as the daemon does after commit
        if ack is not None:
            ack()

    def sim_config(run: int) -> SimConfig:
        return SimConfig.model_validate(
            {
                "machines": ["A", "B"],
                "rate_hz": 10,
                "record_path": tmp_path / f"rec{run}.db",
                "modbus": {"enabled": False},
                "mqtt": {"enabled": True, "port": broker.port, "plant_sensors": ["rpm"]},
            }
        )

    async def run_sim(run: int, until: Callable[[], bool], what: str) -> None:
        """Serve until ``until()`` holds (a condition, never a duration)."""
        stop, started = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(run_simulator(sim_config(run), stop, started=started))
        await asyncio.wait_for(started.wait(), 30)
        try:
            await _until(until, 60, what)
        finally:
            stop.set()
            await task

    def docs() -> list[Reading]:
        return [r for r in readings if len(r.values) == 50]

    async def scenario() -> None:
        # 1. The edge subscribes (persistent session), the simulator publishes.
        connector = MqttInput(source, "e1", emit, metrics)
        stop = asyncio.Event()
        task = asyncio.create_task(connector.run(stop))
        await _until(lambda: connector.health() == {"plant-mqtt": True}, 30, "connected")
        await run_sim(0, lambda: len(docs()) >= 10, "machine documents of the first run")
        bad = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bad")
        bad.connect("127.0.0.1", broker.port)
        bad.loop_start()
        bad.publish("rig/A/telemetry", b"{not json", qos=1).wait_for_publish(5)
        bad.publish("plant/A/mechanical/rpm", b'{"val": "fast"}', qos=1).wait_for_publish(5)
        bad.loop_stop()
        bad.disconnect()
        errors = metrics.source_errors.labels("plant-mqtt", "*")
        await _until(lambda: errors._value.get() == 2, 30, "both bad payloads counted")
        first = len(readings)
        # 2. The broker restarts: the connector reconnects by itself.
        broker.stop()
        broker.start()
        await _until(lambda: connector.health() == {"plant-mqtt": True}, 60, "reconnected")
        await run_sim(1, lambda: len(readings) >= first + 10, "readings after the restart")
        second = len(readings)
        # 3. The edge is down while the simulator publishes; the broker keeps the messages
        #    for the persistent session and delivers them when the edge is back.
        stop.set()
        await task
        record = tmp_path / "rec2.db"
        await run_sim(2, lambda: len(_recorded(record)) >= 20, "samples served while down")
        assert len(readings) == second
        connector = MqttInput(source, "e1", emit, metrics)
        stop = asyncio.Event()
        task = asyncio.create_task(connector.run(stop))

        def got() -> set[tuple[str, int]]:
            return {(r.machine_id, round(r.ts.timestamp() * 1000)) for r in docs()}

        await _until(lambda: _recorded(record) <= got(), 60, "every document of the downtime")
        stop.set()
        await task

    try:
        asyncio.run(scenario())
    finally:
        broker.stop()

    served: dict[tuple[str, int], list] = {}
    for run in range(3):
        conn = sqlite3.connect(tmp_path / f"rec{run}.db")
        served.update(
            {
                (m, t): json.loads(v)
                for m, t, v in conn.execute('SELECT machine_id, ts_ms, "values" FROM samples')
            }
        )
        conn.close()
    machine_docs = [r for r in readings if len(r.values) == 50]
    plant = [r for r in readings if set(r.values) == {"rpm"}]
    assert machine_docs and plant
    for reading in machine_docs:
        expected = served[(reading.machine_id, round(reading.ts.timestamp() * 1000))]
        assert [reading.values[n] for n in CORE_SENSOR_NAMES] == expected
    got = [(r.machine_id, round(r.ts.timestamp() * 1000)) for r in machine_docs]
    assert len(got) == len(set(got)), "a message was delivered twice"
    assert metrics.source_errors.labels("plant-mqtt", "*")._value.get() == 2


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_messages_are_acknowledged_only_when_the_daemon_says_so(tmp_path: Path) -> None:
    """The connector hands each QoS 1 message over with its acknowledgement and never
    acknowledges by itself: what the receiver did not acknowledge (it could not commit it)
    comes back to the next session of the same client, flagged as a redelivery; what it
    acknowledged does not."""
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    source = MqttInputConfig.model_validate(
        {
            "name": "plant-mqtt",
            "host": "127.0.0.1",
            "port": broker.port,
            "client_id": "edge-ack-test",
            "clean_session": False,
            "qos": 1,
            "subscriptions": [TELEMETRY.model_dump()],
        }
    )
    held: list[tuple[Reading, Any]] = []
    again: list[tuple[Reading, Any]] = []

    def publish_ten() -> list[int]:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="publisher")
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        now_ms = int(time.time() * 1000)
        stamps = [now_ms - 10_000 + i for i in range(10)]
        for ts in stamps:
            doc = {"ts_ms": ts, "values": {"rpm": float(ts % 1000)}}
            client.publish("rig/A/telemetry", json.dumps(doc), qos=1).wait_for_publish(5)
        client.loop_stop()
        client.disconnect()
        return stamps

    def stamp(reading: Reading) -> int:
        return round(reading.ts.timestamp() * 1000)

    async def scenario() -> list[int]:
        metrics = EdgeMetrics()
        connector = MqttInput(source, "e1", lambda r, h=None: held.append((r, h)), metrics)
        stop = asyncio.Event()
        task = asyncio.create_task(connector.run(stop))
        await _until(lambda: connector.health() == {"plant-mqtt": True}, 30, "connected")
        # The session's subscription must exist at the broker before publishing: a first
        # message round-trip proves it.
        await _until(lambda: _probe(broker.port, held), 30, "the subscription in place")
        for _, handle in held:
            handle()
        held.clear()
        stamps = await asyncio.to_thread(publish_ten)
        await _until(lambda: len(held) == 10, 30, "ten messages handed over")
        assert all(h is not None and not h.redelivered for _, h in held)
        # Commit (acknowledge) the first four; the daemon could not take the rest.
        for _, handle in held[:4]:
            handle()
        for _, handle in held[4:]:
            handle.refuse()
        stop.set()
        await task

        connector = MqttInput(source, "e1", lambda r, h=None: again.append((r, h)), metrics)
        stop = asyncio.Event()
        task = asyncio.create_task(connector.run(stop))
        await _until(lambda: len(again) >= 6, 30, "the unacknowledged messages again")
        for _, handle in again:
            handle()
        stop.set()
        await task
        return stamps

    try:
        stamps = asyncio.run(scenario())
    finally:
        broker.stop()
    assert [stamp(r) for r, _ in held] == stamps
    assert sorted(stamp(r) for r, _ in again) == stamps[4:]  # exactly the unacknowledged six
    assert all(h.redelivered for _, h in again)


def _probe(port: int, received: list[tuple[Reading, Any]]) -> bool:
    """Publish one probe message and say whether any has arrived yet."""
    if received:
        return True
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="prober")
    client.connect("127.0.0.1", port)
    client.loop_start()
    doc = {"ts_ms": int(time.time() * 1000) - 60_000, "values": {"rpm": 1.0}}
    client.publish("rig/A/telemetry", json.dumps(doc), qos=1).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()
    return False
