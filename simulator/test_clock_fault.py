"""A device whose clock is wrong: the simulator serves the wrong timestamps over Modbus,
OPC-UA and MQTT, and its record keeps the true time of every sample (ground truth for the
edge's clock handling and the fault suite)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from asyncua import Client, ua
from pydantic import ValidationError
from pymodbus.client import AsyncModbusTcpClient

from simulator.cli import _scenario, build_parser
from simulator.config import MAX_CLOCK_OFFSET_S, SimConfig
from simulator.engine import MAX_DEVICE_TS_MS, Engine
from simulator.protocols.opcua import NAMESPACE_URI
from simulator.server import run_simulator
from tests.support.processes import free_port

CENTURY_S = 100 * 365.25 * 86400


def _clock_fault(**overrides: object) -> dict[str, object]:
    return {"kind": "clock", "machine": "A", "start_s": 1.0, "duration_s": 2.0, **overrides}


def test_a_clock_fault_needs_an_offset_and_only_clock_faults_take_one() -> None:
    with pytest.raises(ValidationError, match="needs offset_s"):
        SimConfig.model_validate({"faults": [_clock_fault()]})
    with pytest.raises(ValidationError, match="applies to clock faults"):
        SimConfig.model_validate(
            {"faults": [_clock_fault(kind="drift", sensors=["rpm"], offset_s=5.0)]}
        )
    with pytest.raises(ValidationError, match="offset_s"):
        SimConfig.model_validate({"faults": [_clock_fault(offset_s=1e12)]})


def test_clock_offset_flag_sets_every_machine_and_names_itself_when_out_of_range() -> None:
    args = build_parser().parse_args(["run", "--clock-offset-s", str(CENTURY_S)])
    assert _scenario(args).clock_offset_s == CENTURY_S
    bad = build_parser().parse_args(["run", "--clock-offset-s", "1e13"])
    with pytest.raises(ValidationError) as exc:
        _scenario(bad)
    from simulator.cli import _flag_errors

    assert _flag_errors(exc.value)[0].startswith("--clock-offset-s (clock_offset_s)")


def test_clock_fault_moves_only_the_served_time_while_it_lasts() -> None:
    offset = CENTURY_S
    faulty = Engine(SimConfig(machines=["A", "B"], faults=[_clock_fault(offset_s=offset)]))
    clean = Engine(SimConfig(machines=["A", "B"]))
    now_ms = 1_800_000_000_000
    for tick in range(8):
        t = tick * 0.5
        for wrong, right in zip(faulty.tick(t, now_ms), clean.tick(t, now_ms), strict=True):
            # The signals are untouched: same seed, same values, with or without the fault.
            assert wrong.values == right.values
            assert wrong.ts_ms == right.ts_ms == now_ms
            inside = wrong.machine_id == "A" and 1.0 <= t < 3.0
            expected = now_ms + round(offset * 1000) if inside else now_ms
            assert wrong.device_ts_ms == expected, (t, wrong.machine_id)
            assert ("clock" in wrong.faults) == inside


def test_device_time_stays_within_what_the_protocols_can_carry() -> None:
    ahead = Engine(SimConfig(machines=["A"], clock_offset_s=MAX_CLOCK_OFFSET_S))
    behind = Engine(SimConfig(machines=["A"], clock_offset_s=-CENTURY_S))
    now_ms = 1_800_000_000_000
    assert ahead.tick(0.0, now_ms)[0].device_ts_ms == MAX_DEVICE_TS_MS
    assert behind.tick(0.0, now_ms)[0].device_ts_ms == 0
    # The latest representable instant is a real date in every protocol's encoding.
    assert datetime.fromtimestamp(MAX_DEVICE_TS_MS / 1000, UTC).year == 9999


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_modbus_opcua_and_mqtt_serve_the_wrong_clock_and_the_record_the_true_one(
    tmp_path: Path, mqtt_broker: tuple[str, int]
) -> None:
    host, mqtt_port = mqtt_broker
    modbus_port, opcua_port = free_port(), free_port()
    record = tmp_path / "served.db"
    config = SimConfig.model_validate(
        {
            "machines": ["A", "B"],
            "rate_hz": 10,
            "record_path": record,
            "clock_offset_s": CENTURY_S,
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
                "topic_prefix": "clockrig",
                "plant_prefix": "clockplant",
                "plant_sensors": ["temperature"],
            },
        }
    )
    docs: list[dict] = []
    plant: list[dict] = []
    lock = threading.Lock()

    def on_message(client, userdata, message) -> None:
        with lock:
            target = docs if message.topic.startswith("clockrig/") else plant
            target.append(orjson.loads(message.payload))

    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="clock-sub")
    subscriber.on_message = on_message
    subscriber.connect(host, mqtt_port)
    subscriber.subscribe([("clockrig/+/telemetry", 1), ("clockplant/#", 1)])
    subscriber.loop_start()

    modbus_seen: list[tuple[str, int, int]] = []
    opcua_seen: list[tuple[int, datetime]] = []
    started_s = time.time()

    async def scenario() -> None:
        stop, started = asyncio.Event(), asyncio.Event()
        sim = asyncio.create_task(run_simulator(config, stop, started=started))
        await asyncio.wait_for(started.wait(), 30)
        client = Client(f"opc.tcp://127.0.0.1:{opcua_port}/rig-alpha/")
        async with client:
            ns = await client.get_namespace_index(NAMESPACE_URI)
            counter = client.get_node(ua.NodeId("Rig/A/SampleCounter", ns))
            modbus = AsyncModbusTcpClient("127.0.0.1", port=modbus_port)
            await modbus.connect()
            for _ in range(20):
                for unit, machine in ((1, "A"), (2, "B")):
                    regs = (
                        await modbus.read_holding_registers(0, count=8, device_id=unit)
                    ).registers
                    served_ms = (regs[4] << 48) | (regs[5] << 32) | (regs[6] << 16) | regs[7]
                    modbus_seen.append((machine, (regs[0] << 16) | regs[1], served_ms))
                value = await counter.read_data_value()
                if value.Value.Value:
                    opcua_seen.append((value.Value.Value, value.SourceTimestamp))
                await asyncio.sleep(0.05)
            modbus.close()
        stop.set()
        await sim

    asyncio.run(scenario())
    subscriber.loop_stop()
    subscriber.disconnect()

    conn = sqlite3.connect(record)
    rows = {
        (m, s): (ts, device)
        for m, s, ts, device in conn.execute(
            "SELECT machine_id, sample, ts_ms, device_ts_ms FROM samples"
        )
    }
    conn.close()
    offset_ms = round(CENTURY_S * 1000)
    # The record's own time is the true one: within this test's run, not a century ahead.
    for true_ms, device_ms in rows.values():
        assert started_s * 1000 - 1000 <= true_ms <= time.time() * 1000
        assert device_ms == true_ms + offset_ms

    assert len({(m, c) for m, c, _ in modbus_seen}) > 10
    for machine, counter, served_ms in modbus_seen:
        assert served_ms == rows[(machine, counter)][1]
    assert opcua_seen
    for counter, source_ts in opcua_seen:
        aware = source_ts if source_ts.tzinfo else source_ts.replace(tzinfo=UTC)
        assert round(aware.timestamp() * 1000) == rows[("A", counter)][1]
    assert len(docs) >= 10 and plant
    for doc in docs:
        assert doc["ts_ms"] == rows[(doc["machine_id"], doc["sample"])][1]
    for payload in plant:
        year = datetime.fromisoformat(payload["time"].replace("Z", "+00:00")).year
        assert year >= datetime.now(UTC).year + 99
