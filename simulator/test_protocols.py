"""One simulator run read over Modbus TCP, OPC-UA (by subscription) and MQTT at once: every
protocol serves exactly what the simulator recorded."""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import threading
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from asyncua import Client, ua
from pymodbus.client import AsyncModbusTcpClient

from shared.catalog import CORE_SENSOR_NAMES, CORE_SENSORS
from simulator.config import SimConfig
from simulator.protocols.opcua import NAMESPACE_URI
from simulator.register_map import decode_float32_be
from simulator.server import run_simulator
from tests.support.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _record(path: Path) -> dict[tuple[str, int], list[float | None]]:
    conn = sqlite3.connect(path)
    rows = conn.execute('SELECT machine_id, sample, "values" FROM samples').fetchall()
    conn.close()
    return {(m, s): json.loads(v) for m, s, v in rows}


def test_modbus_opcua_and_mqtt_serve_the_recorded_values(
    tmp_path: Path, mqtt_broker: tuple[str, int]
) -> None:
    host, mqtt_port = mqtt_broker
    modbus_port, opcua_port = free_port(), free_port()
    record = tmp_path / "served.db"
    config = SimConfig.model_validate(
        {
            "machines": ["A", "B"],
            "rate_hz": 10,
            "seed": 3,
            "record_path": record,
            "modbus": {"port": modbus_port},
            "opcua": {
                "enabled": True,
                "port": opcua_port,
                "security": ["none"],
                "cert_dir": str(tmp_path / "pki"),
            },
            "mqtt": {
                "enabled": True,
                "host": host,
                "port": mqtt_port,
                "topic_prefix": "t1rig",
                "plant_prefix": "t1plant",
                "plant_sensors": ["temperature", "rpm"],
            },
        }
    )
    mqtt_docs: list[dict] = []
    plant_msgs: list[tuple[str, dict]] = []
    lock = threading.Lock()

    def on_message(client, userdata, message) -> None:
        with lock:
            if message.topic.startswith("t1rig/"):
                mqtt_docs.append(orjson.loads(message.payload))
            else:
                plant_msgs.append((message.topic, orjson.loads(message.payload)))

    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="t1-sub")
    subscriber.on_message = on_message
    subscriber.connect(host, mqtt_port)
    subscriber.subscribe([("t1rig/+/telemetry", 1), ("t1plant/#", 1)])
    subscriber.loop_start()

    modbus_seen: list[tuple[str, int, list[float]]] = []
    opcua_seen: list[tuple[str, float]] = []
    counters_seen: list[int] = []

    class Handler:
        def __init__(self, names: dict) -> None:
            self.names = names

        def datachange_notification(self, node, val, data) -> None:
            name = self.names[node.nodeid.Identifier]
            if name == "SampleCounter":
                counters_seen.append(val)
            else:
                opcua_seen.append((name, val))

    async def scenario() -> None:
        stop, started = asyncio.Event(), asyncio.Event()
        sim = asyncio.create_task(run_simulator(config, stop, started=started))
        await asyncio.wait_for(started.wait(), 30)
        client = Client(f"opc.tcp://127.0.0.1:{opcua_port}/rig-alpha/")
        async with client:
            ns = await client.get_namespace_index(NAMESPACE_URI)
            ids = {f"Rig/A/{s.category.value}/{s.name}": s.name for s in CORE_SENSORS}
            ids["Rig/A/SampleCounter"] = "SampleCounter"
            nodes = [client.get_node(ua.NodeId(i, ns)) for i in ids]
            units = await client.get_node(
                ua.NodeId("Rig/A/thermal/coolant_temp/EngineeringUnits", ns)
            ).read_value()
            assert units.DisplayName.Text == "°F"
            subscription = await client.create_subscription(50, Handler(ids))
            await subscription.subscribe_data_change(nodes, sampling_interval=0)
            modbus = AsyncModbusTcpClient("127.0.0.1", port=modbus_port)
            await modbus.connect()
            for _ in range(30):
                for unit, machine in ((1, "A"), (2, "B")):
                    regs = (
                        await modbus.read_holding_registers(0, count=110, device_id=unit)
                    ).registers
                    modbus_seen.append(
                        (machine, (regs[0] << 16) | regs[1], decode_float32_be(regs[10:110]))
                    )
                await asyncio.sleep(0.05)
            modbus.close()
        stop.set()
        await sim

    asyncio.run(scenario())
    subscriber.loop_stop()
    subscriber.disconnect()
    served = _record(record)

    # Modbus: every block read is exactly one recorded sample.
    assert len(modbus_seen) == 60
    for machine, counter, values in modbus_seen:
        assert served[(machine, counter)] == values

    # OPC-UA: notifications arrived for every sensor, and each value was served for it.
    served_a = {
        name: {row[i] for (m, _), row in served.items() if m == "A"}
        for i, name in enumerate(CORE_SENSOR_NAMES)
    }
    assert {name for name, _ in opcua_seen} == set(CORE_SENSOR_NAMES)
    for name, value in opcua_seen:
        assert value in served_a[name], (name, value)
    assert len(set(counters_seen)) >= 10

    # MQTT machine documents: values identical to the record, for both machines.
    assert {d["machine_id"] for d in mqtt_docs} == {"A", "B"}
    assert len(mqtt_docs) >= 20
    for doc in mqtt_docs:
        expected = served[(doc["machine_id"], doc["sample"])]
        assert [doc["values"][n] for n in CORE_SENSOR_NAMES] == expected
    # MQTT plant-device messages: one topic per sensor, the other payload shape.
    topics = {t for t, _ in plant_msgs}
    assert "t1plant/A/environmental/temperature" in topics
    assert "t1plant/B/mechanical/rpm" in topics
    temps_a = {row[0] for (m, _), row in served.items() if m == "A"}
    for topic, payload in plant_msgs:
        assert set(payload) == {"val", "unit", "time"}
        if topic == "t1plant/A/environmental/temperature":
            assert payload["val"] in temps_a and payload["unit"] == "°F"
    assert all(not math.isnan(v) for _, v in opcua_seen)
