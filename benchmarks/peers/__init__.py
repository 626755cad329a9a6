"""Configurations for `make bench-peers`: Rig Alpha's edge, ThingsBoard IoT Gateway and
Telegraf pointed at the same simulator Modbus device, reading the same 50 float32 sensor values
(holding registers 10..109, big-endian words and bytes) at the same poll interval.

Every tool reads every poll (the edge's sample counter is left out, as for a plain PLC that
has none), so what each one delivers is what its poll loop and output really sustain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.catalog import CORE_SENSORS
from simulator.edge_config import simulator_edge_config
from simulator.register_map import sensor_address

HERE = Path(__file__).resolve().parent
TB_REQUIREMENTS = HERE / "requirements-thingsboard.txt"
# The simulator's first machine answers as Modbus unit 1.
UNIT_ID = 1
DEVICE_NAME = "rig-sim-A"
# The MQTT topic ThingsBoard's gateway API publishes device telemetry on.
TB_TELEMETRY_TOPIC = "v1/gateway/telemetry"
EDGE_KEY_ENV = "RIG_BENCH_PEERS_KEY"
# What a ThingsBoard server answers a gateway's ``getSessionLimits`` RPC with, here without
# rate limits: the gateway publishes nothing until it has this answer, and the benchmark
# measures the gateway, not a server's throttling.
TB_SESSION_LIMITS: dict[str, Any] = {
    "maxPayloadSize": 65536,
    "maxInflightMessages": 1000,
    "rateLimits": {"messages": "0:0,", "telemetryMessages": "0:0,", "telemetryDataPoints": "0:0,"},
    "gatewayRateLimits": {
        "messages": "0:0,",
        "telemetryMessages": "0:0,",
        "telemetryDataPoints": "0:0,",
    },
}


def sensors() -> list[tuple[str, int]]:
    """(name, first holding register) of the 50 float32 values every tool reads."""
    return [(s.name, sensor_address(i)) for i, s in enumerate(CORE_SENSORS)]


def rig_edge_config(
    sim_port: int, poll_s: float, ingest_url: str, buffer_path: Path, metrics_port: int
) -> dict[str, Any]:
    """`rig-edge` polling unit 1 every ``poll_s``, forwarding through its HTTP output."""
    config = simulator_edge_config(
        sim_host="127.0.0.1",
        sim_port=sim_port,
        machines=["A"],
        output={
            "kind": "http",
            "url": ingest_url,
            "api_key_env": EDGE_KEY_ENV,
            "batch_readings": 1000,
        },
        buffer_path=buffer_path,
        poll_interval_s=poll_s,
        edge_id="bench-peers",
        metrics_port=metrics_port,
    )
    config["log_level"] = "WARNING"
    for device in config["inputs"]["modbus"][0]["devices"]:
        # Acquire on every poll like the peers (they have no notion of a sample counter).
        device.pop("sample_counter")
    return config


def telegraf_config(sim_port: int, poll_s: float, out_file: Path, log_file: Path) -> str:
    """telegraf.conf: inputs.modbus on unit 1, every value to ``out_file`` as line protocol."""
    registers = ",\n".join(
        f'    {{ name = "{name}", byte_order = "ABCD", data_type = "FLOAT32-IEEE", '
        f"scale = 1.0, address = [{addr}, {addr + 1}] }}"
        for name, addr in sensors()
    )
    interval = f"{round(poll_s * 1000)}ms"
    return f"""[agent]
  interval = "{interval}"
  round_interval = false
  collection_jitter = "0s"
  metric_batch_size = 1000
  metric_buffer_limit = 1000000
  flush_interval = "250ms"
  flush_jitter = "0s"
  omit_hostname = true
  logfile = "{log_file}"

[[outputs.file]]
  files = ["{out_file}"]
  data_format = "influx"

[[inputs.modbus]]
  name = "{DEVICE_NAME}"
  slave_id = {UNIT_ID}
  timeout = "1s"
  controller = "tcp://127.0.0.1:{sim_port}"
  configuration_type = "register"
  holding_registers = [
{registers}
  ]
"""


def thingsboard_configs(sim_port: int, poll_s: float, mqtt_port: int) -> dict[str, str]:
    """The files of ThingsBoard IoT Gateway's config folder (name -> JSON text): the gateway
    sending to a ThingsBoard MQTT endpoint (a local Mosquitto), one Modbus TCP slave."""
    gateway = {
        "thingsboard": {
            "host": "127.0.0.1",
            "port": mqtt_port,
            "remoteShell": False,
            "remoteConfiguration": False,
            "latencyDebugMode": False,
            "statistics": {
                "enable": False,
                "statsSendPeriodInSeconds": 3600,
                "customStatsSendPeriodInSeconds": 3600,
            },
            "deviceFiltering": {"enable": False, "filterFile": "list.json"},
            "maxPayloadSizeBytes": 8196,
            "minPackSendDelayMS": 50,
            "minPackSizeToSend": 500,
            "checkConnectorsConfigurationInSeconds": 3600,
            "handleDeviceRenaming": True,
            "security": {"type": "accessToken", "accessToken": "bench-peers"},
            "qos": 1,
            # Every polled value is sent, changed or not (the default strategy).
            "reportStrategy": {"type": "ON_RECEIVED"},
            "checkingDeviceActivity": {
                "checkDeviceInactivity": False,
                "inactivityTimeoutSeconds": 300,
                "inactivityCheckPeriodSeconds": 10,
            },
        },
        "storage": {"type": "memory", "read_records_count": 100, "max_records_count": 1000000},
        "grpc": {"enabled": False},
        "connectors": [{"type": "modbus", "name": "rig-sim", "configuration": "modbus.json"}],
    }
    modbus = {
        "master": {
            "slaves": [
                {
                    "host": "127.0.0.1",
                    "port": sim_port,
                    "type": "tcp",
                    "method": "socket",
                    "unitId": UNIT_ID,
                    "deviceName": DEVICE_NAME,
                    "deviceType": "rig",
                    "timeout": 1,
                    "byteOrder": "BIG",
                    "wordOrder": "BIG",
                    "retries": 1,
                    "retryOnEmpty": True,
                    "retryOnInvalid": True,
                    "pollPeriod": round(poll_s * 1000),
                    "connectAttemptTimeMs": 500,
                    "connectAttemptCount": 5,
                    "waitAfterFailedAttemptsMs": 1000,
                    "attributes": [],
                    "timeseries": [
                        {
                            "tag": name,
                            "type": "32float",
                            "functionCode": 3,
                            "objectsCount": 2,
                            "address": addr,
                        }
                        for name, addr in sensors()
                    ],
                    "attributeUpdates": [],
                    "rpc": [],
                }
            ]
        }
    }
    logs = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stdout",
            }
        },
        # Warnings only: the gateway logs every poll at INFO, which would cost it CPU here.
        "loggers": {
            name: {"handlers": ["console"], "level": "WARNING", "propagate": False}
            for name in ("service", "connector", "converter", "tb_connection", "storage")
        }
        # pymodbus warns of a deprecated decoder on every value the connector decodes.
        | {"pymodbus": {"handlers": ["console"], "level": "ERROR", "propagate": False}},
        "root": {"level": "WARNING", "handlers": ["console"]},
    }
    return {
        "tb_gateway.json": json.dumps(gateway, indent=2),
        "modbus.json": json.dumps(modbus, indent=2),
        "logs.json": json.dumps(logs, indent=2),
    }


def line_protocol_values(line: str) -> int:
    """Fields in one line-protocol line (``measurement,tags fields timestamp``); 0 for a
    blank or partial line. Values here are numbers, so no field contains a space or comma."""
    parts = line.split(" ")
    if len(parts) != 3 or not parts[1]:
        return 0
    return parts[1].count(",") + 1


def tb_telemetry_values(payload: bytes) -> int:
    """Values in one gateway-API telemetry message: ``{device: [{ts, values: {...}}, ...]}``
    (or a bare ``{key: value}`` per entry, which the API also accepts)."""
    doc = json.loads(payload)
    count = 0
    for entries in doc.values():
        for entry in entries if isinstance(entries, list) else [entries]:
            values = entry.get("values", entry) if isinstance(entry, dict) else {}
            count += len(values)
    return count
