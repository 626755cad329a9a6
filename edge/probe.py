"""``rig-edge check-config --probe``: read every configured source once before deployment."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from edge.config import EdgeConfig
from edge.inputs.modbus.config import ModbusSource
from edge.inputs.modbus.connector import ModbusConnector
from edge.inputs.mqtt.config import MqttSource
from edge.inputs.opcua.config import OpcUaSource
from edge.metrics import EdgeMetrics
from shared.message import Reading


@dataclass(frozen=True)
class ProbeResult:
    source: str
    target: str
    ok: bool
    detail: str


async def _probe_modbus(source: ModbusSource) -> list[ProbeResult]:
    readings: list[Reading] = []
    connector = ModbusConnector(source, "probe", readings.append, EdgeMetrics())
    connector._client = connector._make_client()
    results = []
    try:
        for device in source.devices:
            readings.clear()
            await connector._poll_once(device)
            if not readings:
                results.append(
                    ProbeResult(
                        source.name,
                        f"unit {device.unit_id} ({device.machine_id})",
                        False,
                        f"no answer from {source.endpoint}",
                    )
                )
                continue
            reading = readings[0]
            bad = sorted(reading.quality)
            values = len(reading.values) + len(reading.custom)
            detail = f"{values} values read" + (f"; bad: {', '.join(bad)}" if bad else "")
            results.append(
                ProbeResult(
                    source.name, f"unit {device.unit_id} ({device.machine_id})", not bad, detail
                )
            )
    finally:
        connector._client.close()
    return results


async def _probe_opcua(source: OpcUaSource) -> list[ProbeResult]:
    from edge.inputs.opcua.connector import OpcUaConnector, browse_sensors, resolve_node_id

    connector = OpcUaConnector(source, "probe", lambda *a: None, EdgeMetrics())
    try:
        client = await connector._connect()
    except Exception as exc:
        return [ProbeResult(source.name, source.endpoint, False, f"{type(exc).__name__}: {exc}")]
    results = []
    try:
        for machine in source.machines:
            try:
                mapping = {}
                if machine.browse_root:
                    root = client.get_node(await resolve_node_id(client, machine.browse_root))
                    mapping, _ = await browse_sensors(root)
                for sensor, text in machine.nodes.items():
                    mapping[sensor] = await resolve_node_id(client, text)
                values = [await client.get_node(n).read_value() for n in mapping.values()]
                ok = bool(mapping)
                detail = f"{len(values)} nodes read" if ok else "no sensor nodes found"
            except Exception as exc:
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            results.append(ProbeResult(source.name, machine.machine_id, ok, detail))
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()
    return results


def _probe_mqtt(source: MqttSource) -> list[ProbeResult]:
    # A separate, clean client id: probing must not disturb the daemon's persistent session.
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"{source.client_id}-probe", clean_session=True
    )
    if source.username:
        client.username_pw_set(source.username, source.password())
    outcome: dict[str, str] = {}
    done = threading.Event()

    def on_connect(c, u, flags, reason, props=None) -> None:  # type: ignore[no-untyped-def]
        outcome["reason"] = str(reason)
        outcome["ok"] = "" if reason.is_failure else "yes"
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(source.host, source.port, keepalive=10)
    except OSError as exc:
        return [ProbeResult(source.name, f"{source.host}:{source.port}", False, str(exc))]
    client.loop_start()
    done.wait(10)
    client.loop_stop()
    client.disconnect()
    ok = outcome.get("ok") == "yes"
    detail = "connected" if ok else f"refused: {outcome.get('reason', 'no answer in 10 s')}"
    return [ProbeResult(source.name, f"{source.host}:{source.port}", ok, detail)]


async def probe_sources(config: EdgeConfig) -> list[ProbeResult]:
    results: list[ProbeResult] = []
    for modbus in config.sources.modbus:
        results += await _probe_modbus(modbus)
    for opcua in config.sources.opcua:
        results += await _probe_opcua(opcua)
    for source in config.sources.mqtt:
        results += await asyncio.to_thread(_probe_mqtt, source)
    return results
