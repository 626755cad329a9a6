"""The Sparkplug B host logic, free of MQTT: what each message means for the mapped machines.

Per edge node it keeps what the BIRTH certificates declared: the ``bdSeq`` of the session,
the last ``seq`` (0..255, wrapping) and the alias tables of the node and of each device.

- NBIRTH: a new session (bdSeq, seq restarts, aliases); devices must send DBIRTH again.
- DBIRTH / NDATA / DDATA: the mapped metrics become one reading of the mapped machine
  (BIRTH carries the current values too). Historical metrics (``is_historical``) become
  readings of their own timestamps.
- NDEATH (the node's will, or a clean disconnect) with the session's bdSeq, DDEATH: every
  mapped core sensor of the node's / device's machines gets a reading with value null and
  quality ``bad`` (custom sensors have no quality and are left out). An NDEATH with another
  bdSeq belongs to an older session (a will delivered late) and is ignored.
- A rebirth is asked for (``Outcome.rebirth``) when DATA arrives from a node whose BIRTH
  was not seen (the edge joined mid-stream or restarted), when a metric's alias is unknown,
  and when ``seq`` skips (a lost message). The message is still used for what it says.

A message that cannot be decoded, or a metric that cannot be read, is reported in
``Outcome.problems``; it never stops the host.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edge.inputs.common import DeviceSanity
from edge.inputs.mqtt.mapping import number_from
from edge.inputs.sparkplug.config import SparkplugDevice, SparkplugInputConfig
from edge.inputs.sparkplug.payload import (
    Metric,
    Payload,
    SparkplugDecodeError,
    decode_payload,
)
from shared.catalog import SENSOR_INDEX
from shared.message import Reading

NAMESPACE = "spBv1.0"
SEQ_MODULO = 256
BD_SEQ = "bdSeq"
MESSAGE_TYPES = frozenset({"NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA"})


@dataclass(slots=True)
class Outcome:
    readings: list[Reading] = field(default_factory=list)
    # Why the node should send its BIRTH certificates again (empty: no need).
    rebirth: str | None = None
    problems: list[str] = field(default_factory=list)
    ignored: bool = False  # not a message this host maps (commands, other nodes)


@dataclass(slots=True)
class _Mapped:
    machine: str
    metrics: dict[str, tuple[str, Callable[[float], float]]]  # metric -> (sensor, transform)
    core: tuple[str, ...]  # mapped core sensors (what DEATH marks bad)


@dataclass(slots=True)
class NodeState:
    bd_seq: int | None = None
    seq: int | None = None
    born: bool = False
    online: bool = False
    aliases: dict[int, str] = field(default_factory=dict)
    devices: dict[str, dict[int, str]] = field(default_factory=dict)  # device -> aliases
    devices_online: set[str] = field(default_factory=set)


class SparkplugHost:
    def __init__(self, config: SparkplugInputConfig, edge_id: str, sanity: DeviceSanity) -> None:
        self.group = config.group
        self.edge_id = edge_id
        self.sanity = sanity
        self.nodes: dict[str, NodeState] = {}
        self._mapped: dict[tuple[str, str | None], _Mapped] = {}
        for entry in config.devices:
            self._mapped[(entry.node, entry.device)] = _compile(entry)
        self.gaps = 0
        self.rebirths_asked = 0

    # -- what health shows --------------------------------------------------------------

    def machines_online(self) -> dict[str, bool]:
        """Per mapped machine: are its node and device alive (BIRTH seen, no DEATH since)?"""
        out: dict[str, bool] = {}
        for (node, device), mapped in self._mapped.items():
            state = self.nodes.get(node)
            alive = (
                state is not None
                and state.online
                and (device is None or device in state.devices_online)
            )
            out[mapped.machine] = out.get(mapped.machine, True) and alive
        return out

    # -- messages -------------------------------------------------------------------------

    def handle(self, topic: str, data: bytes | bytearray) -> Outcome:
        levels = topic.split("/")
        if len(levels) not in (4, 5) or levels[0] != NAMESPACE or levels[1] != self.group:
            return Outcome(ignored=True)
        kind, node = levels[2], levels[3]
        device = levels[4] if len(levels) == 5 else None
        if kind not in MESSAGE_TYPES or (device is None) != kind.startswith("N"):
            return Outcome(ignored=True)  # NCMD/DCMD (ours included), STATE, odd topics
        if not any(key[0] == node for key in self._mapped):
            return Outcome(ignored=True)
        try:
            payload = decode_payload(data)
        except SparkplugDecodeError as exc:
            return Outcome(problems=[f"{kind} not a Sparkplug B payload: {exc}"])
        out = Outcome()
        state = self.nodes.setdefault(node, NodeState())
        if kind == "NBIRTH":
            self._nbirth(node, state, payload, out)
        elif kind == "NDEATH":
            self._ndeath(node, state, payload, out)
            return out
        else:
            self._check_seq(kind, state, payload, out)
            if not state.born:
                out.rebirth = f"{kind} from a node whose NBIRTH was not seen"
        if kind == "DBIRTH":
            assert device is not None
            state.devices[device] = _aliases(payload)
            state.devices_online.add(device)
        elif kind == "DDEATH":
            assert device is not None
            state.devices.pop(device, None)
            state.devices_online.discard(device)
            self._mark_bad(node, device, payload, out)
            return out
        if (node, device) not in self._mapped:
            # A device (or the node's own metrics) nobody mapped: its seq counted, nothing
            # else to do; its aliases are not needed, so no rebirth on their account.
            return out
        if device is not None and kind == "DDATA" and device not in state.devices:
            out.rebirth = out.rebirth or f"DDATA from device {device!r} without its DBIRTH"
        self._values(node, device, state, payload, out)
        return out

    def _nbirth(self, node: str, state: NodeState, payload: Payload, out: Outcome) -> None:
        bd_seq = next(
            (m.value() for m in payload.metrics if m.name == BD_SEQ),
            None,
        )
        if payload.seq is None:
            out.problems.append("NBIRTH without seq")
        state.bd_seq = bd_seq if isinstance(bd_seq, int) else None
        state.seq = payload.seq
        state.born = True
        state.online = True
        state.aliases = _aliases(payload)
        # A new session: the devices' BIRTH certificates of the last one no longer hold.
        state.devices.clear()
        state.devices_online.clear()

    def _ndeath(self, node: str, state: NodeState, payload: Payload, out: Outcome) -> None:
        bd_seq = next((m.value() for m in payload.metrics if m.name == BD_SEQ), None)
        if state.born and state.bd_seq is not None and bd_seq != state.bd_seq:
            out.problems.append(
                f"NDEATH with bdSeq {bd_seq!r} ignored: the session alive has bdSeq {state.bd_seq}"
            )
            return
        state.online = False
        state.born = False
        state.seq = None
        state.devices.clear()
        state.devices_online.clear()
        for (mapped_node, device), _ in self._mapped.items():
            if mapped_node == node:
                self._mark_bad(node, device, payload, out)

    def _check_seq(self, kind: str, state: NodeState, payload: Payload, out: Outcome) -> None:
        seq = payload.seq
        if seq is None:
            out.problems.append(f"{kind} without seq")
            if state.born:
                out.rebirth = f"{kind} without seq"
            return
        if not 0 <= seq < SEQ_MODULO:
            out.problems.append(f"{kind} seq {seq} outside 0..255")
        if state.born and state.seq is not None:
            expected = (state.seq + 1) % SEQ_MODULO
            if seq != expected:
                self.gaps += 1
                out.rebirth = f"seq gap: expected {expected}, got {seq} ({kind})"
        state.seq = seq % SEQ_MODULO

    def _mark_bad(self, node: str, device: str | None, payload: Payload, out: Outcome) -> None:
        mapped = self._mapped.get((node, device))
        if mapped is None or not mapped.core:
            return
        ts = self._ts(payload.timestamp, mapped.machine)
        values: dict[str, float | None] = dict.fromkeys(mapped.core)
        quality = dict.fromkeys(mapped.core, "bad")
        out.readings.append(Reading(mapped.machine, self.edge_id, 0, ts, values, {}, quality))

    def _values(
        self, node: str, device: str | None, state: NodeState, payload: Payload, out: Outcome
    ) -> None:
        mapped = self._mapped[(node, device)]
        aliases = state.aliases if device is None else state.devices.get(device, {})
        unknown = 0
        # (timestamp or None for the payload's) -> (core, custom, quality)
        groups: dict[int | None, tuple[dict[str, float | None], dict[str, float], dict[str, str]]]
        groups = {}
        for metric in payload.metrics:
            name = metric.name
            if name is None:
                if metric.alias is None or metric.alias not in aliases:
                    unknown += 1
                    continue
                name = aliases[metric.alias]
            if name not in mapped.metrics:
                continue
            sensor, transform = mapped.metrics[name]
            key = metric.timestamp if metric.is_historical else None
            core, custom, quality = groups.setdefault(key, ({}, {}, {}))
            value = self._number(metric, sensor, transform, mapped.machine, out)
            if sensor in SENSOR_INDEX:
                core[sensor] = value
                if value is None:
                    quality[sensor] = "bad"
            elif value is not None:
                custom[sensor] = value
        if unknown:
            out.problems.append(f"{unknown} metric(s) with an alias no BIRTH declared skipped")
            out.rebirth = out.rebirth or "metric alias unknown"
        for key, (core, custom, quality) in groups.items():
            if not core and not custom:
                continue
            ts = self._ts(payload.timestamp if key is None else key, mapped.machine)
            out.readings.append(Reading(mapped.machine, self.edge_id, 0, ts, core, custom, quality))

    def _number(
        self,
        metric: Metric,
        sensor: str,
        transform: Callable[[float], float],
        machine: str,
        out: Outcome,
    ) -> float | None:
        raw: Any = metric.value()
        if isinstance(raw, bool):
            raw = 1.0 if raw else 0.0  # a Boolean metric (a running flag) as 0/1
        raw = number_from(raw, numeric_strings=True)
        if raw is None:
            return None  # is_null: the device says it has no value
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            try:
                scaled = transform(float(raw))
            except (ArithmeticError, ValueError) as exc:
                out.problems.append(f"{metric.name_or_alias()}: {exc}")
                return None
            return self.sanity.value(scaled, machine, sensor)
        out.problems.append(
            f"{metric.name_or_alias()} -> {sensor}: not a number ({type(raw).__name__})"
        )
        return self.sanity.value(raw, machine, sensor)

    def _ts(self, millis: int | None, machine: str) -> datetime:
        if millis is None:
            return self.sanity.timestamp(None, machine)
        try:
            ts = datetime.fromtimestamp(millis / 1000.0, UTC)
        except (OverflowError, OSError, ValueError):
            return self.sanity.timestamp(datetime.max.replace(tzinfo=UTC), machine)
        return self.sanity.timestamp(ts, machine)


def _aliases(payload: Payload) -> dict[int, str]:
    return {m.alias: m.name for m in payload.metrics if m.alias is not None and m.name is not None}


def _compile(entry: SparkplugDevice) -> _Mapped:
    metrics = {
        name: (target.sensor, target.for_sensor(target.sensor))
        for name, target in entry.mapped().items()
    }
    core = tuple(sensor for sensor, _ in metrics.values() if sensor in SENSOR_INDEX)
    return _Mapped(entry.machine, metrics, core)
