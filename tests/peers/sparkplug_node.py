"""A Sparkplug B edge node made with pysparkplug (a third-party implementation), driven by
JSON lines on stdin; it answers with JSON lines on stdout. Runs in the peer venv
(``tests/peers/sparkplug.py``), never imported by the project.

Commands:

- ``start`` (host, port, group, node, metrics): NBIRTH with bdSeq; with ``answer_rebirth``
  a Node Control/Rebirth command makes a new session (NBIRTH and the DBIRTHs);
- ``register`` (device, metrics): DBIRTH;
- ``update`` (device, metrics): DDATA through EdgeNode, names and aliases;
- ``update_alias`` (device, metrics): DDATA with aliases only, pysparkplug's payload and
  seq counter;
- ``skip_seq``: the node's seq counter moves on without a message (the next shows a gap);
- ``deregister`` (device): DDEATH;
- ``stop``.

Each metric: {"name", "alias", "type" (a pysparkplug DataType name), "value"}.
Events: {"event": "ok", "op": ...}, {"event": "error", ...}, and
{"event": "ncmd", "metrics": [{"name", "value"}]} for every NCMD the node receives, and
{"event": "reborn"} when a rebirth it answered is published.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import pysparkplug as spb

_out_lock = threading.Lock()


def say(**doc: Any) -> None:
    with _out_lock:
        print(json.dumps(doc), flush=True)


def metric(spec: dict[str, Any], *, with_name: bool = True) -> spb.Metric:
    return spb.Metric(
        timestamp=spb.get_current_timestamp(),
        name=spec.get("name") if with_name else None,
        alias=spec.get("alias"),
        datatype=spb.DataType[spec.get("type", "DOUBLE")],
        value=spec.get("value"),
    )


REBIRTH = "Node Control/Rebirth"
_rebirth: dict[str, Any] = {}  # set by start with answer_rebirth: host and port


def on_command(node: spb.EdgeNode, message: spb.Message) -> None:
    metrics = [{"name": m.name, "value": m.value} for m in message.payload.metrics]
    say(event="ncmd", topic=str(message.topic), metrics=metrics)
    if _rebirth and {"name": REBIRTH, "value": True} in metrics:
        # pysparkplug has no rebirth of its own: a new session publishes NBIRTH and the
        # DBIRTH of every registered device. Not from paho's callback thread.
        threading.Thread(target=_reborn, args=(node,), daemon=True).start()


def _reborn(node: spb.EdgeNode) -> None:
    node.disconnect()
    node.connect(_rebirth["host"], port=_rebirth["port"], blocking=False)
    deadline = time.monotonic() + 30
    while not node._connected and time.monotonic() < deadline:
        time.sleep(0.01)
    say(event="reborn", connected=node._connected)


def main() -> None:
    node: spb.EdgeNode | None = None
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        try:
            if op == "start":
                if cmd.get("answer_rebirth"):
                    _rebirth.update(host=cmd["host"], port=cmd["port"])
                node = spb.EdgeNode(
                    cmd["group"],
                    cmd["node"],
                    [metric(m) for m in cmd.get("metrics", [])],
                    client=spb.Client(client_id=f"peer-{cmd['node']}"),
                    cmd_callback=on_command,
                )
                node.connect(cmd["host"], port=cmd["port"], blocking=False)
                deadline = time.monotonic() + 30
                # The NBIRTH goes out from the connect callback, which sets _connected first.
                while not node._connected and time.monotonic() < deadline:
                    time.sleep(0.01)
                if not node._connected:
                    raise RuntimeError("not connected within 30 s")
            elif node is None:
                raise RuntimeError("start first")
            elif op == "register":
                metrics = [metric(m) for m in cmd["metrics"]]
                node.register(spb.Device(cmd["device"], metrics))
            elif op == "update":
                node.update_device(cmd["device"], [metric(m) for m in cmd["metrics"]])
            elif op == "update_alias":
                topic = spb.Topic(
                    message_type=spb.MessageType.DDATA,
                    group_id=node.group_id,
                    edge_node_id=node.edge_node_id,
                    device_id=cmd["device"],
                )
                payload = spb.DData(
                    spb.get_current_timestamp(),
                    seq=node._seq,
                    metrics=tuple(metric(m, with_name=False) for m in cmd["metrics"]),
                )
                node._client.publish(
                    spb.Message(
                        topic=topic, payload=payload, qos=spb.QoS.AT_MOST_ONCE, retain=False
                    ),
                    include_dtypes=True,
                )
            elif op == "skip_seq":
                skipped = node._seq
                say(event="skipped", seq=skipped)
            elif op == "deregister":
                node.deregister(cmd["device"])
            elif op == "stop":
                node.disconnect()
                say(event="ok", op=op)
                return
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as exc:
            say(event="error", op=op, error=f"{type(exc).__name__}: {exc}")
            continue
        say(event="ok", op=op)


if __name__ == "__main__":
    main()
