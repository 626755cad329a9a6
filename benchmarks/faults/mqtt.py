"""The edge killed while it reads an MQTT broker (QoS 1, persistent session).

MQTT is a push source: Mosquitto keeps every message published while the edge is down and
delivers it again if the edge died before acknowledging it. So here, unlike with Modbus, a
sample published after the edge first subscribed must be stored — exactly once: the edge is
killed right after a buffer commit, before its PUBACKs go out (the window in which the issue
saw a message stored twice), and the broker's redelivery must be recognised, not committed
again under a new sequence number.
"""

from __future__ import annotations

import time

from benchmarks.faults.harness import Scenario, log_time, say, wait_for
from benchmarks.faults.processes import TAIL_S, WARM_S


def edge_sigkill_mqtt(sc: Scenario) -> None:
    from tests.support.processes import Mosquitto

    broker = Mosquitto(sc.dir)
    broker.start()
    sc.teardown.append(broker.stop)
    sc.connect_event = "mqtt connected"
    sc.start_aggregator()
    sc.start_sim(extra_args=["--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker.port)])
    sc.write_edge_config(
        inputs={
            "mqtt": [
                {
                    "name": "plant-mqtt",
                    "host": "127.0.0.1",
                    "port": broker.port,
                    "client_id": f"edge-{sc.name}",
                    "clean_session": False,
                    "qos": 1,
                    "subscriptions": [
                        {
                            "topic": "rig/+/telemetry",
                            "machine_from_topic": 1,
                            "values_path": "values",
                            "timestamp_path": "ts_ms",
                            "timestamp_format": "unix_ms",
                        }
                    ],
                }
            ]
        }
    )
    sc.start_edge()
    assert sc.edge is not None
    # Subscribed from here on: the broker queues for this session whatever comes next.
    sc.push_from = log_time(sc.edge.events("mqtt connected")[0]) + 0.5
    sc.wait_flowing()
    time.sleep(WARM_S)
    say("  SIGKILL the edge")
    sc.kill_edge()
    time.sleep(1.0)
    for point in ("edge.buffer.after_commit=10", "edge.buffer.after_commit=40"):
        say(f"  restart the edge with failpoint {point}")
        edge = sc.start_edge(env={"RIG_FAILPOINTS": point})
        wait_for(lambda e=edge: not e.running, 60, f"failpoint {point} to fire")
        sc.edge_died()
        sc.notes.setdefault("failpoints_fired", []).append(point)
    sc.start_edge()
    sc.fault_ended()
    time.sleep(TAIL_S)
    metrics = sc.edge_metrics() or {}
    sc.notes["redelivered_recognised"] = metrics.get("rig_edge_mqtt_redelivered_total")
