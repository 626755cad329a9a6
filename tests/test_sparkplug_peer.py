"""Sparkplug B end to end against an implementation nobody here wrote: a pysparkplug edge
node (its own process and venv, ``tests.peers.sparkplug``) publishes through a real
Mosquitto to a real ``rig-edge`` process, whose buffer file the test reads.

- NBIRTH/DBIRTH with aliases, then DDATA with aliases only: the values arrive under the
  mapped sensors, psi converted to the catalog's bar;
- a seq gap: the edge publishes NCMD Node Control/Rebirth, which the peer receives;
- DDEATH: the device's sensors get a reading with quality bad;
- the edge started after the node was born (joined mid-stream): it asks for a rebirth,
  the node answers with a new session, and its aliased DATA is understood from then on;
- the node killed (its will, NDEATH with the session's bdSeq): its machines are marked bad.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml

from tests.peers.sparkplug import SparkplugPeer
from tests.support.pipeline import buffered_documents, kafka_output, start_edge, wait_health
from tests.support.processes import free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

GROUP = "Plant1"
PSI_TO_BAR = 0.0689475729
DEVICE_METRICS = [
    {"name": "Sensors/Temperature", "alias": 1, "type": "DOUBLE", "value": 70.0},
    {"name": "Sensors/Pressure", "alias": 2, "type": "FLOAT", "value": 30.0},
    {"name": "Sensors/Vibration", "alias": 3, "type": "INT32", "value": -4},
    {"name": "Unmapped/Setpoint", "alias": 4, "type": "DOUBLE", "value": 1.0},
]


def _config(tmp: Path, broker: tuple[str, int], node: str) -> Path:
    doc = {
        "edge_id": "edge-spb",
        "log_level": "INFO",
        "buffer": {"path": str(tmp / "buffer.db")},
        "metrics": {"host": "127.0.0.1", "port": free_port()},
        "inputs": {
            "sparkplug": [
                {
                    "name": "spb",
                    "host": broker[0],
                    "port": broker[1],
                    "client_id": f"edge-spb-{node}",
                    "group": GROUP,
                    "host_id": f"rig-{node}",
                    "rebirth_interval_s": 0.5,
                    "devices": [
                        {
                            "node": node,
                            "device": "Dev1",
                            "machine": "A",
                            "metrics": {
                                "Sensors/Temperature": "temperature",
                                # The device reports psi; stored in bar (shared.units).
                                "Sensors/Pressure": {"sensor": "pressure", "unit": "psi"},
                                "Sensors/Vibration": "spindle_offset",
                            },
                        }
                    ],
                }
            ]
        },
        # Nothing listens there: every reading stays in the buffer, where the test reads it.
        "output": kafka_output(f"127.0.0.1:{free_port()}", "spb"),
        "forwarding": {"retry_initial_s": 0.2, "retry_max_s": 2.0, "shutdown_flush_s": 1},
    }
    path = tmp / "edge.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _buffered(tmp: Path) -> list[dict[str, Any]]:
    return buffered_documents(tmp / "buffer.db")


def _has(tmp: Path, **values: Any) -> bool:
    return any(
        all(
            doc["values"].get(k, doc.get("custom", {}).get(k, "absent")) == v
            for k, v in values.items()
        )
        for doc in _buffered(tmp)
    )


def _bad(tmp: Path) -> int:
    return sum(d.get("quality", {}).get("temperature") == "bad" for d in _buffered(tmp))


def _rebirths(peer: SparkplugPeer) -> int:
    return sum(
        1
        for command in peer.commands
        if {"name": "Node Control/Rebirth", "value": True} in command["metrics"]
    )


@pytest.fixture
def peer() -> Iterator[SparkplugPeer]:
    node = SparkplugPeer()
    try:
        yield node
    finally:
        node.close()


def _connected(doc: dict[str, Any]) -> bool:
    return doc["inputs"]["spb"]["devices"]["spb"] is True


def _wait_host_online(broker: tuple[str, int], host_id: str) -> None:
    """The edge publishes its STATE after its SUBSCRIBE on the same connection: once the
    broker shows it online, the edge's subscriptions are in place."""
    seen: list[bytes] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watch-{host_id}")
    client.on_message = lambda c, u, message: seen.append(bytes(message.payload))
    client.connect(*broker)
    client.subscribe(f"spBv1.0/STATE/{host_id}", qos=1)
    client.loop_start()
    try:
        wait_until(lambda: any(b'"online":true' in s for s in seen), 60, "the host online")
    finally:
        client.loop_stop()
        client.disconnect()


def test_births_aliases_gap_and_death_from_a_third_party_node(
    tmp_path: Path, log_dir: Path, mqtt_broker: tuple[str, int], peer: SparkplugPeer
) -> None:
    cfg = _config(tmp_path, mqtt_broker, "Node1")
    edge = start_edge(cfg, log_dir)
    try:
        wait_health(cfg, _connected, "the edge connected", services=[edge])
        _wait_host_online(mqtt_broker, "rig-Node1")
        host, port = mqtt_broker
        peer.send("start", host=host, port=port, group=GROUP, node="Node1", metrics=[])
        peer.send("register", device="Dev1", metrics=DEVICE_METRICS)
        # DBIRTH carries the current values: stored, pressure scaled from psi.
        wait_until(
            lambda: _has(tmp_path, temperature=70.0, spindle_offset=-4.0),
            60,
            "the DBIRTH values buffered",
            services=[edge],
        )
        birth = next(d for d in _buffered(tmp_path) if d["values"].get("temperature") == 70.0)
        assert birth["machine_id"] == "A"
        assert birth["values"]["pressure"] == pytest.approx(30.0 * PSI_TO_BAR)
        assert "setpoint" not in json.dumps(birth).lower()  # unmapped metrics stay out
        wait_health(cfg, lambda d: d["inputs"]["spb"]["devices"]["A"] is True, "machine A online")

        # DDATA with aliases only (what real nodes send after the BIRTH).
        peer.send("update_alias", device="Dev1", metrics=[{"alias": 1, "value": 71.5}])
        wait_until(lambda: _has(tmp_path, temperature=71.5), 60, "aliased DDATA buffered")
        # Names and aliases, a partial report: only what it carries.
        peer.send(
            "update",
            device="Dev1",
            metrics=[{"name": "Sensors/Pressure", "alias": 2, "type": "FLOAT", "value": 40.0}],
        )
        wait_until(
            lambda: any(
                d["values"].get("pressure") == pytest.approx(40.0 * PSI_TO_BAR)
                for d in _buffered(tmp_path)
            ),
            60,
            "named DDATA buffered",
        )
        latest = _buffered(tmp_path)[-1]
        assert set(latest["values"]) == {"pressure"}
        assert _rebirths(peer) == 0, "no rebirth while the sequence is whole"

        # A lost message: the seq skips one; the edge asks the node for a rebirth, and the
        # message itself is still stored.
        peer.send("skip_seq")
        peer.send("update_alias", device="Dev1", metrics=[{"alias": 1, "value": 72.5}])
        wait_until(lambda: _rebirths(peer) >= 1, 60, "NCMD rebirth received by the node")
        assert peer.commands[0]["topic"] == f"spBv1.0/{GROUP}/NCMD/Node1"
        wait_until(lambda: _has(tmp_path, temperature=72.5), 60, "DDATA after the gap stored")

        # DDEATH: the device's sensors are bad.
        peer.send("deregister", device="Dev1")
        wait_until(
            lambda: any(
                d.get("quality", {}).get("temperature") == "bad" for d in _buffered(tmp_path)
            ),
            60,
            "DDEATH marks the device bad",
        )
        dead = next(d for d in _buffered(tmp_path) if d.get("quality", {}).get("temperature"))
        assert dead["machine_id"] == "A"
        assert dead["values"]["temperature"] is None and dead["values"]["pressure"] is None
        assert dead["quality"] == {"temperature": "bad", "pressure": "bad"}
        wait_health(cfg, lambda d: d["inputs"]["spb"]["devices"]["A"] is False, "machine A offline")
    finally:
        edge.stop()


def test_edge_joining_mid_stream_asks_for_a_rebirth_and_a_node_death_marks_bad(
    tmp_path: Path, log_dir: Path, mqtt_broker: tuple[str, int], peer: SparkplugPeer
) -> None:
    host, port = mqtt_broker
    # The node is born before the edge runs: the edge never sees its BIRTH certificates.
    peer.send(
        "start", host=host, port=port, group=GROUP, node="Node2", metrics=[], answer_rebirth=True
    )
    peer.send("register", device="Dev1", metrics=DEVICE_METRICS)
    cfg = _config(tmp_path, mqtt_broker, "Node2")
    edge = start_edge(cfg, log_dir)
    try:
        wait_health(cfg, _connected, "the edge connected", services=[edge])

        # Aliases the edge cannot resolve: nothing stored, a rebirth asked for. Sent again
        # until the request arrives (the edge's subscription may complete after a send).
        def asked() -> bool:
            if _rebirths(peer) == 0:
                peer.send("update_alias", device="Dev1", metrics=[{"alias": 1, "value": 60.0}])
            return _rebirths(peer) >= 1

        wait_until(asked, 60, "NCMD rebirth after DATA without BIRTH", services=[edge])
        assert not _has(tmp_path, temperature=60.0), "an unresolvable alias is not guessed"

        # The node answers with a new session (NBIRTH, DBIRTH): its values and aliases are
        # known from then on.
        wait_until(lambda: peer.reborn >= 1, 60, "the node reborn", services=[edge])
        wait_until(lambda: _has(tmp_path, temperature=70.0), 60, "the DBIRTH values stored")
        wait_health(cfg, lambda d: d["inputs"]["spb"]["devices"]["A"] is True, "machine A online")
        peer.send("update_alias", device="Dev1", metrics=[{"alias": 1, "value": 61.0}])
        wait_until(lambda: _has(tmp_path, temperature=61.0), 60, "aliased DDATA after rebirth")

        # (pysparkplug's rebirth was a clean disconnect first: its NDEATH, from a session
        # the edge never saw born, already marked the machine bad once.)
        bad_before = _bad(tmp_path)

        # The node killed: the broker publishes its will, NDEATH with the bdSeq of the
        # session the edge saw born; the node's machine is marked bad.
        peer.kill()
        wait_until(
            lambda: _bad(tmp_path) > bad_before,
            60,
            "NDEATH marks the node's machine bad",
            services=[edge],
        )
    finally:
        edge.stop()
