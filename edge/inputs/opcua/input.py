"""OPC-UA input: subscriptions, assembled into one reading per machine per sample.

Data-change notifications update the latest value of each node; every publishing interval a
machine whose sample counter advanced (or, without a counter, whose values changed) emits one
reading with every mapped sensor. When the connection drops the input reconnects with
back-off and subscribes again; a server restart is survived without a daemon restart.

A reading's time is the newest ``SourceTimestamp`` among the notifications since the previous
reading of that machine (the counter's, when there is a counter), each checked against the
acceptance window on arrival: a server clock far off is replaced by the receive time and
counted, and one bogus timestamp never outlives the reading it came with. Values that are not
finite or beyond ``MAX_ABS_VALUE`` make that sensor ``bad``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import Client, Node, ua

from edge.inputs.base import Emit, Input, ProbeResult
from edge.inputs.opcua.config import NodeMapping, OpcUaInputConfig, OpcUaMachine
from edge.inputs.opcua.units import UnitPlan, certificate_problem, eu_unit, plan_unit
from edge.metrics import EdgeMetrics
from shared.catalog import SENSOR_INDEX
from shared.logs import log_event
from shared.message import CUSTOM_NAME_RE, Reading, TimeWindow
from shared.units import UnitError, catalog_unit

log = logging.getLogger(__name__)

_SECURITY = {
    "basic256sha256_sign": "Basic256Sha256,Sign",
    "basic256sha256_sign_encrypt": "Basic256Sha256,SignAndEncrypt",
}


@dataclass
class MachineState:
    config: OpcUaMachine
    sensors: dict[str, str] = field(default_factory=dict)  # node id string -> sensor name
    counter_node: str | None = None
    values: dict[str, tuple[float | None, str]] = field(default_factory=dict)
    counter: int | None = None
    emitted_counter: int | None = None
    changed: bool = False
    source_ts: datetime | None = None
    healthy: bool = False
    # sensor -> raw value to stored value (scale, offset, unit); sensor -> why it is bad
    convert: dict[str, Callable[[float], float]] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)


async def resolve_node_id(client: Client, text: str) -> ua.NodeId:
    """``nsu=<uri>;s=...`` (namespace by URI) or any ``ns=<index>;...`` form."""
    if text.startswith("nsu="):
        uri, _, rest = text[4:].partition(";")
        index = await client.get_namespace_index(uri)
        return ua.NodeId.from_string(f"ns={index};{rest}")
    return ua.NodeId.from_string(text)


def sensor_for_browse_name(name: str) -> str | None:
    """The sensor a variable's browse name means: a core sensor in any case or spelling
    (``Temperature``, ``BearingTemp``, ``RPM``, ``bearing_temp``), else a name that already is
    a snake_case custom sensor name; None for anything else."""
    if name in SENSOR_INDEX:
        return name
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.strip())
    snake = re.sub(r"[^a-z0-9]+", "_", spaced.lower()).strip("_")
    if snake in SENSOR_INDEX:
        return snake
    if name.lower() in SENSOR_INDEX:
        return name.lower()
    return name if CUSTOM_NAME_RE.fullmatch(name) else None


@dataclass
class Browsed:
    """What browsing a machine's object found: sensors, the sample counter, and the variables
    it skipped with why (shown by the log and check-config --probe)."""

    sensors: dict[str, ua.NodeId] = field(default_factory=dict)
    counter: ua.NodeId | None = None
    skipped: list[str] = field(default_factory=list)


async def browse_sensors(root: Node) -> Browsed:
    """Variables below ``root`` whose browse names are sensor names; plus SampleCounter."""
    found = Browsed()
    names: dict[str, str] = {}  # sensor -> browse name that took it
    stack = [root]
    while stack:
        node = stack.pop()
        for child in await node.get_children():
            name = (await child.read_browse_name()).Name
            node_class = await child.read_node_class()
            if node_class == ua.NodeClass.Variable:
                sensor = sensor_for_browse_name(name)
                if name.replace("_", "").lower() == "samplecounter":
                    found.counter = child.nodeid
                elif sensor is None:
                    found.skipped.append(f"{name} (no sensor of that name)")
                elif sensor in names:
                    found.skipped.append(f"{name} (sensor {sensor} is {names[sensor]})")
                else:
                    names[sensor] = name
                    found.sensors[sensor] = child.nodeid
            elif node_class == ua.NodeClass.Object:
                stack.append(child)
    return found


async def read_engineering_unit(node: Node) -> tuple[str | None, str | None]:
    """(canonical unit, None) from the node's EngineeringUnits property; (None, None) when it
    has none; (None, why) when it has one that is no unit of the table or cannot be read (a
    server that refuses to browse properties must not keep the node from being read)."""
    try:
        props = await node.get_properties()
        found: Node | None = None
        for prop in props:
            if (await prop.read_browse_name()).Name == "EngineeringUnits":
                found = prop
                break
        value = None if found is None else await found.read_value()
    except ua.UaStatusCodeError as exc:
        return None, f"EngineeringUnits unreadable ({exc})"
    if value is None:
        return None, None
    try:
        return eu_unit(value), None
    except UnitError as exc:
        return None, str(exc)


@dataclass
class Resolved:
    """One machine's nodes as the daemon subscribes them and the probe reads them."""

    sensors: dict[str, ua.NodeId]
    counter: ua.NodeId | None
    units: dict[str, UnitPlan]
    skipped: list[str]

    @property
    def problems(self) -> dict[str, str]:
        return {s: p.problem for s, p in self.units.items() if p.problem is not None}


async def resolve_machine(client: Client, machine: OpcUaMachine) -> Resolved:
    """Browse and/or look up the machine's nodes and plan each one's unit conversion from
    the mapping and the node's EngineeringUnits."""
    sensors: dict[str, ua.NodeId] = {}
    counter: ua.NodeId | None = None
    skipped: list[str] = []
    if machine.browse_root:
        root = client.get_node(await resolve_node_id(client, machine.browse_root))
        browsed = await browse_sensors(root)
        sensors, counter, skipped = browsed.sensors, browsed.counter, browsed.skipped
    mappings = machine.node_mappings()
    for sensor, mapping in mappings.items():
        sensors[sensor] = await resolve_node_id(client, mapping.node)
    if machine.sample_counter:
        counter = await resolve_node_id(client, machine.sample_counter)
    units: dict[str, UnitPlan] = {}
    for sensor, node_id in sensors.items():
        mapping = mappings.get(sensor) or NodeMapping(node=node_id.to_string())
        server, server_problem = await read_engineering_unit(client.get_node(node_id))
        units[sensor] = plan_unit(
            sensor, mapping.unit, server, server_problem, mapping.scale, mapping.offset
        )
    return Resolved(sensors, counter, units, skipped)


class _Handler:
    def __init__(self, owner: OpcUaInput) -> None:
        self.owner = owner

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        self.owner._on_change(node.nodeid.to_string(), val, data.monitored_item.Value)

    def status_change_notification(self, status: Any) -> None:
        self.owner._lost.set()


class OpcUaInput(Input[OpcUaInputConfig]):
    scan_help = "the node tree below Objects: node ids, types and values"

    def __init__(
        self,
        config: OpcUaInputConfig,
        edge_id: str,
        emit: Emit,
        metrics: EdgeMetrics,
        *,
        window: TimeWindow | None = None,
    ) -> None:
        super().__init__(config, edge_id, emit, metrics, window=window)
        self._machines = [MachineState(m) for m in config.machines]
        self._by_node: dict[str, MachineState] = {}
        self._lost = asyncio.Event()

    def health(self) -> dict[str, bool]:
        """A machine with a unit problem (a node whose unit cannot be the sensor's) reports
        unhealthy although connected: its values for that sensor are bad until fixed."""
        return {m.config.machine_id: m.healthy and not m.problems for m in self._machines}

    def resume(self, samples: Mapping[str, int]) -> None:
        for machine in self._machines:
            if machine.config.machine_id in samples:
                machine.emitted_counter = samples[machine.config.machine_id]

    def adopt(self, previous: object) -> None:
        """Take over the sample counters the input of the same name had emitted (a reload
        replaces inputs): the sample emitted last is not emitted again."""
        if not isinstance(previous, OpcUaInput):
            return
        old = {m.config.machine_id: m for m in previous._machines}
        for machine in self._machines:
            before = old.get(machine.config.machine_id)
            if before is not None:
                machine.emitted_counter = before.emitted_counter

    def _on_change(self, node_id: str, value: Any, data_value: ua.DataValue | None) -> None:
        machine = self._by_node.get(node_id)
        if machine is None:
            return
        status_ok = (
            data_value is None or data_value.StatusCode is None or data_value.StatusCode.is_good()
        )
        source_ts = self._source_time(data_value, machine)
        if node_id == machine.counter_node:
            if status_ok and value is not None:
                machine.counter = int(value)
                if source_ts is not None:
                    machine.source_ts = source_ts
            return
        sensor = machine.sensors[node_id]
        number: float | None = None
        convert = machine.convert.get(sensor)
        if (
            status_ok
            and convert is not None
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            try:
                converted: float = convert(float(value))
            except OverflowError:
                converted = float("inf")  # refused (and counted) by the sanity check
            number = self.sanity.value(converted, machine.config.machine_id, sensor)
        machine.values[sensor] = (number, "good" if number is not None else "bad")
        machine.changed = True
        if machine.counter_node is None and source_ts is not None:
            # The newest time since the last reading; reset when the reading is emitted.
            machine.source_ts = max(machine.source_ts or source_ts, source_ts)

    def _source_time(
        self, data_value: ua.DataValue | None, machine: MachineState
    ) -> datetime | None:
        if data_value is None or data_value.SourceTimestamp is None:
            return None
        ts = data_value.SourceTimestamp
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)  # asyncua gives UTC without a zone
        return self.sanity.timestamp(ts, machine.config.machine_id)

    def _emit_ready(self) -> None:
        for machine in self._machines:
            if machine.counter_node is not None:
                if machine.counter is None or machine.counter == machine.emitted_counter:
                    continue
                machine.emitted_counter = machine.counter
            elif not machine.changed:
                continue
            machine.changed = False
            if not machine.values:
                continue
            core: dict[str, float | None] = {}
            custom: dict[str, float] = {}
            quality: dict[str, str] = {}
            for sensor, (value, q) in machine.values.items():
                if sensor in SENSOR_INDEX:
                    core[sensor] = value
                elif value is not None:
                    custom[sensor] = value
                if q != "good":
                    quality[sensor] = q
            reading = Reading(
                machine.config.machine_id,
                self.edge_id,
                0,
                machine.source_ts or datetime.now(UTC),
                core,
                custom,
                # A custom sensor has no quality of its own in a reading: a bad one is left
                # out of ``custom`` and of ``quality``.
                {k: q for k, q in quality.items() if k in core},
            )
            machine.source_ts = None
            self.metrics.readings_in.labels(self.config.name).inc()
            self.emit(reading, sample=machine.emitted_counter if machine.counter_node else None)

    def certificate_problem(self) -> str | None:
        """Why a server would refuse the client certificate (its URI is not the application
        URI the client presents), or None."""
        if self.config.security == "none" or self.config.certificate is None:
            return None
        return certificate_problem(
            Path(self.config.certificate), self.config.client_uri(self.edge_id)
        )

    async def _connect(self) -> Client:
        client = Client(self.config.endpoint, timeout=self.config.timeout_s)
        # The same URI for the daemon and the probe: the certificate must carry it.
        client.application_uri = self.config.client_uri(self.edge_id)
        if self.config.security != "none":
            problem = self.certificate_problem()
            if problem is not None:
                raise ConnectionRefusedError(problem)
            await client.set_security_string(
                f"{_SECURITY[self.config.security]},{self.config.certificate},"
                f"{self.config.private_key}"
            )
        if self.config.username:
            client.set_user(self.config.username)
            client.set_password(self.config.password() or "")

        async def lost(exc: Exception) -> None:
            self._lost.set()

        client.connection_lost_callback = lost
        await client.connect()
        return client

    async def _subscribe(self, client: Client) -> None:
        self._by_node.clear()
        nodes: list[Node] = []
        for machine in self._machines:
            machine.sensors.clear()
            resolved = await resolve_machine(client, machine.config)
            machine.convert = {s: p.convert for s, p in resolved.units.items() if not p.problem}
            machine.problems = resolved.problems
            self._report_units(machine.config.machine_id, resolved)
            for sensor, node_id in resolved.sensors.items():
                key = node_id.to_string()
                machine.sensors[key] = sensor
                self._by_node[key] = machine
                nodes.append(client.get_node(node_id))
            if resolved.counter is not None:
                machine.counter_node = resolved.counter.to_string()
                self._by_node[machine.counter_node] = machine
                # Subscribed last: a counter notification follows the sample's values.
            machine.healthy = True
            self.metrics.source_up.labels(self.config.name, machine.config.machine_id).set(
                0 if machine.problems else 1
            )
        counters = [
            client.get_node(ua.NodeId.from_string(m.counter_node))
            for m in self._machines
            if m.counter_node
        ]
        subscription = await client.create_subscription(
            self.config.publishing_interval_ms, _Handler(self)
        )
        await subscription.subscribe_data_change(
            nodes + counters, sampling_interval=ua.Duration(self.config.sampling_interval_ms)
        )

    def _report_units(self, machine: str, resolved: Resolved) -> None:
        """Once per subscription: what browsing skipped, what EngineeringUnits could not be
        read, and (ERROR) the sensors whose unit is wrong."""
        if resolved.skipped:
            log_event(
                log,
                logging.INFO,
                "opcua browse skipped variables that are no sensor",
                source=self.config.name,
                machine=machine,
                skipped=resolved.skipped,
            )
        notes = [p.note for p in resolved.units.values() if p.note]
        if notes:
            log_event(
                log,
                logging.WARNING,
                "opcua EngineeringUnits not understood",
                source=self.config.name,
                machine=machine,
                notes=notes,
            )
        if resolved.problems:
            log_event(
                log,
                logging.ERROR,
                "opcua unit mismatch: these sensors read bad until the mapping is fixed",
                source=self.config.name,
                machine=machine,
                problems=sorted(resolved.problems.values()),
            )

    def _mark_down(self) -> None:
        for machine in self._machines:
            machine.healthy = False
            self.metrics.source_up.labels(self.config.name, machine.config.machine_id).set(0)

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            client: Client | None = None
            self._lost.clear()
            try:
                client = await self._connect()
                await self._subscribe(client)
                self.metrics.source_reconnects.labels(self.config.name).inc()
                log_event(
                    log,
                    logging.INFO,
                    "opcua subscribed",
                    source=self.config.name,
                    endpoint=self.config.endpoint,
                    nodes=len(self._by_node),
                )
                failures = 0
                interval = self.config.publishing_interval_ms / 1000.0
                while not stop.is_set() and not self._lost.is_set():
                    self._emit_ready()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=interval)
                self._emit_ready()
                if self._lost.is_set():
                    log_event(
                        log,
                        logging.WARNING,
                        "opcua connection lost; reconnecting",
                        source=self.config.name,
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self.metrics.source_errors.labels(self.config.name, "*").inc()
                if failures == 1 or failures % 10 == 0:
                    log_event(
                        log,
                        logging.WARNING,
                        "opcua connect failed",
                        source=self.config.name,
                        error=f"{type(exc).__name__}: {exc}",
                        attempt=failures,
                    )
            finally:
                self._mark_down()
                if client is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(client.disconnect(), timeout=2)
            if stop.is_set():
                break
            delay = min(self.config.reconnect_max_s, 0.5 * 2 ** min(failures, 6))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay * random.uniform(0.5, 1.0))

    async def probe(self) -> list[ProbeResult]:
        """Connect (with the configured security and login), resolve each machine's nodes
        as ``run`` would, and read every one once."""
        try:
            client = await self._connect()
        except Exception as exc:  # a probe reports, it never raises
            return [ProbeResult(self.name, self.config.endpoint, False, _describe(exc))]
        results = []
        try:
            for machine in self.config.machines:
                try:
                    resolved = await resolve_machine(client, machine)
                    for node_id in resolved.sensors.values():
                        await client.get_node(node_id).read_value()
                    ok = bool(resolved.sensors) and not resolved.problems
                    detail = self._probe_detail(resolved)
                except Exception as exc:
                    ok, detail = False, _describe(exc)
                results.append(ProbeResult(self.name, machine.machine_id, ok, detail))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), timeout=2)
        return results

    @staticmethod
    def _probe_detail(resolved: Resolved) -> str:
        if not resolved.sensors:
            detail = "no sensor nodes found"
        else:
            detail = f"{len(resolved.sensors)} nodes read"
        converted = sorted(
            f"{s} from {p.source_unit}"
            for s, p in resolved.units.items()
            if p.problem is None
            and p.source_unit is not None
            and catalog_unit(s) not in (None, p.source_unit)
        )
        if converted:
            detail += f"; converted: {', '.join(converted)}"
        if resolved.problems:
            detail += f"; UNIT MISMATCH: {'; '.join(sorted(resolved.problems.values()))}"
        notes = [p.note for p in resolved.units.values() if p.note]
        if notes:
            detail += f"; {'; '.join(notes)}"
        if resolved.skipped:
            detail += f"; skipped: {', '.join(resolved.skipped)}"
        return detail

    @classmethod
    def scan_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--endpoint", required=True, help="opc.tcp://host:port/path")
        parser.add_argument("--depth", type=int, default=6, help="levels below Objects")

    @classmethod
    async def scan(cls, args: argparse.Namespace) -> str:
        from edge.inputs.opcua.scan import scan_opcua

        return "\n".join(await scan_opcua(args.endpoint, args.depth))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
