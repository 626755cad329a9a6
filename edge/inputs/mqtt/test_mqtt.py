"""The MQTT input against a real Mosquitto broker fed by the simulator: both payload shapes,
malformed payloads, a broker restart, and messages published while the edge was down."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edge.inputs.mqtt.config import MqttSource, MqttSubscription
from edge.inputs.mqtt.connector import MqttConnector, PayloadError, map_message
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
    for topic, payload, problem in [
        ("plant/B/m/rpm", b"{oops", "not JSON"),
        ("plant/B/m/rpm", b'{"value": 1}', "no 'val'"),
        ("plant/B/m/rpm", b'{"val": "fast", "time": "2026-01-01"}', "expected a number"),
        ("plant/B/m/rpm", b'{"val": 1e300, "time": "2026-01-01"}', "plausible"),
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


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_simulator_values_arrive_through_restarts_and_downtime(tmp_path: Path) -> None:
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    source = MqttSource.model_validate(
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

    def emit(reading: Reading, ack=None) -> None:  # type: ignore[no-untyped-def]
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

    async def run_sim(run: int, seconds: float) -> None:
        stop, started = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(run_simulator(sim_config(run), stop, started=started))
        await asyncio.wait_for(started.wait(), 30)
        await asyncio.sleep(seconds)
        stop.set()
        await task

    async def wait_for(count: int) -> None:
        for _ in range(100):
            if len(readings) >= count:
                return
            await asyncio.sleep(0.1)

    async def scenario() -> None:
        # 1. The edge subscribes (persistent session), the simulator publishes.
        connector = MqttConnector(source, "e1", emit, metrics)
        stop = asyncio.Event()
        task = asyncio.create_task(connector.run(stop))
        await asyncio.sleep(1.0)
        await run_sim(0, 1.5)
        bad = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bad")
        bad.connect("127.0.0.1", broker.port)
        bad.loop_start()
        bad.publish("rig/A/telemetry", b"{not json", qos=1).wait_for_publish(5)
        bad.publish("plant/A/mechanical/rpm", b'{"val": "fast"}', qos=1).wait_for_publish(5)
        bad.loop_stop()
        bad.disconnect()
        await asyncio.sleep(0.5)
        first = len(readings)
        assert first > 0
        # 2. The broker restarts: the connector reconnects by itself.
        broker.stop()
        broker.start()
        await asyncio.sleep(2.0)
        assert connector.health() == {"plant-mqtt": True}
        await run_sim(1, 1.0)
        await asyncio.sleep(0.5)
        second = len(readings)
        assert second > first
        # 3. The edge is down while the simulator publishes; the broker keeps the messages
        #    for the persistent session and delivers them when the edge is back.
        stop.set()
        await task
        await run_sim(2, 1.0)
        connector = MqttConnector(source, "e1", emit, metrics)
        stop = asyncio.Event()
        task = asyncio.create_task(connector.run(stop))
        await wait_for(second + 20)
        await asyncio.sleep(1.0)
        stop.set()
        await task

    asyncio.run(scenario())
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
    docs = [r for r in readings if len(r.values) == 50]
    plant = [r for r in readings if set(r.values) == {"rpm"}]
    assert docs and plant
    for reading in docs:
        expected = served[(reading.machine_id, round(reading.ts.timestamp() * 1000))]
        assert [reading.values[n] for n in CORE_SENSOR_NAMES] == expected
    # Every machine document of the downtime run arrived, exactly once.
    conn = sqlite3.connect(tmp_path / "rec2.db")
    downtime = {(m, t) for m, t in conn.execute("SELECT machine_id, ts_ms FROM samples")}
    conn.close()
    got = [(r.machine_id, round(r.ts.timestamp() * 1000)) for r in docs]
    assert downtime <= set(got)
    assert len(got) == len(set(got)), "a message was delivered twice"
    assert metrics.source_errors.labels("plant-mqtt", "*")._value.get() == 2
