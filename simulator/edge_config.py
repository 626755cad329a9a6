"""An edge config that reads this simulator: what ``rig-sim edge-config`` prints, and what
the demo, the tests and the benchmarks run the edge with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simulator.register_map import edge_modbus_source_config


def simulator_edge_config(
    *,
    sim_host: str,
    sim_port: int,
    machines: list[str],
    output: dict[str, Any],
    buffer_path: Path,
    poll_interval_s: float,
    edge_id: str = "sim-edge",
    metrics_port: int = 9108,
) -> dict[str, Any]:
    modbus_map = edge_modbus_source_config(sim_host, sim_port, machines)
    devices = []
    for device in modbus_map["devices"]:
        devices.append(
            {
                "machine_id": device["machine_id"],
                "unit_id": device["unit_id"],
                "poll_interval_s": poll_interval_s,
                # The counter lets the edge skip polls that see no new sample, so polling faster
                # than the simulator ticks never records a sample twice.
                "sample_counter": {
                    "address": device["sample_counter"]["address"],
                    "type": device["sample_counter"]["type"],
                },
                "timestamp": {
                    "address": device["timestamp"]["address"],
                    "type": device["timestamp"]["type"],
                },
                "fields": [
                    {
                        "name": f["name"],
                        "address": f["address"],
                        "type": f["type"],
                        "byte_order": f.get("byte_order", "big"),
                        "word_order": f.get("word_order", "big"),
                    }
                    for f in device["fields"]
                ],
            }
        )
    return {
        "edge_id": edge_id,
        "log_level": "INFO",
        "buffer": {"path": str(buffer_path)},
        "metrics": {"host": "127.0.0.1", "port": metrics_port},
        "inputs": {
            "modbus": [
                {
                    "name": "simulator",
                    "host": sim_host,
                    "port": sim_port,
                    "timeout_s": 1.0,
                    "devices": devices,
                }
            ]
        },
        "output": output,
        "forwarding": {"retry_initial_s": 0.2, "retry_max_s": 5.0, "shutdown_flush_s": 5},
    }
