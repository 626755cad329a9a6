"""MQTT input: wildcard subscriptions, JSON payloads mapped to readings.

QoS 1 messages are acknowledged to the broker only after their reading is committed to the
buffer (paho manual acks), and the session is persistent, so a crash or restart of the edge
loses nothing: the broker redelivers what was not acknowledged. A payload that does not
parse or map is counted and logged with its topic, acknowledged (it will never parse) and
never stops the input.

Exactly once across a crash: each QoS 1 message carries a digest of its topic and payload
(``message_key``) that the daemon commits with its reading. A message killed between that
commit and its acknowledgement comes back after the restart flagged DUP; its digest is found
in the buffer, so it is acknowledged and not stored again.

Device values and clocks are checked like every input's (``edge.inputs.common``): a number
that is not finite or beyond ``MAX_ABS_VALUE`` makes that sensor ``bad`` (a custom sensor,
which has no quality, is left out), and a ``timestamp_path`` time outside the acceptance
window is replaced by the receive time and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import ssl
import threading
import time
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
import paho.mqtt.client as mqtt

from edge.inputs.base import Emit, Input, ProbeResult
from edge.inputs.common import DeliveryHandle, DeviceSanity
from edge.inputs.mqtt.config import MqttInputConfig, MqttSubscription, MqttTls
from edge.inputs.mqtt.mapping import SelectError, Selector, compile_path, number_from
from edge.metrics import EdgeMetrics
from shared.catalog import SENSOR_INDEX
from shared.logs import log_event
from shared.message import CUSTOM_NAME_RE, DEFAULT_WINDOW, MACHINE_ID_RE, Reading, TimeWindow

log = logging.getLogger(__name__)

# After the daemon refused messages (its queue was full), the session is restarted so the
# broker delivers them again: first after this long without a refusal, doubling to the max.
RESUME_FIRST_S = 5.0
RESUME_MAX_S = 60.0
# ``check-config --probe`` waits this long for the broker's CONNACK and SUBACK.
PROBE_TIMEOUT_S = 10.0


class PayloadError(ValueError):
    pass


@functools.cache
def _default_sanity() -> DeviceSanity:
    # For map_message called on its own (tests, tools): checks apply, counters go nowhere.
    return DeviceSanity("mqtt", EdgeMetrics(), DEFAULT_WINDOW)


def message_key(topic: str, payload: bytes | bytearray) -> bytes:
    """The digest a message is recognised by when the broker delivers it again."""
    digest = hashlib.blake2b(topic.encode("utf-8", "surrogatepass"), digest_size=16)
    digest.update(b"\0")
    digest.update(payload)
    return digest.digest()


@functools.lru_cache(maxsize=1024)
def _selector(path: str) -> Selector:
    # The config validated every path with the same function: this does not raise.
    return compile_path(path)


def _path(doc: Any, path: str) -> Any:
    try:
        return _selector(path).select(doc)
    except SelectError as exc:
        raise PayloadError(str(exc)) from None


def _check_type(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise PayloadError(f"{name}: expected a number, got {type(value).__name__}")


def _timestamp(value: Any, fmt: str, sanity: DeviceSanity, machine: str) -> datetime:
    """The payload's time; unparseable is the payload's error, out of range (a number too
    large for a date, year 1 in another time zone, a clock far off) is the device clock's,
    which the receive time replaces."""
    if fmt == "iso8601":
        if not isinstance(value, str):
            raise PayloadError(f"timestamp {value!r} is not {fmt}")
        try:
            ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise PayloadError(f"timestamp {value!r} is not {fmt}") from None
        return sanity.timestamp(ts if ts.tzinfo else ts.replace(tzinfo=UTC), machine)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadError(f"timestamp {value!r} is not {fmt}")
    try:
        ts = datetime.fromtimestamp(float(value) / (1000.0 if fmt == "unix_ms" else 1.0), UTC)
    except (ValueError, OverflowError, OSError):
        return sanity.timestamp(datetime.max.replace(tzinfo=UTC), machine)
    return sanity.timestamp(ts, machine)


def _parse(sub: MqttSubscription, payload: bytes | bytearray) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        if sub.numeric_strings:
            # A bare text payload ("072.5", "+1e3") that JSON does not take as a number.
            text = bytes(payload).decode("utf-8", "replace")
            number = number_from(text, numeric_strings=True)
            if isinstance(number, float):
                return number
        raise PayloadError(f"not JSON: {exc}") from None


def _skipped_keys(sub: MqttSubscription) -> set[str]:
    """Keys of a values object that are not sensors: ``ignore`` and the timestamp's and
    machine's own keys when they sit in the same object (a flat payload)."""
    skipped = set(sub.ignore)
    values = _selector(sub.values_path or "$")
    for path in (sub.timestamp_path, sub.machine_path):
        if path is None:
            continue
        steps = _selector(path).steps
        same_object = len(steps) == len(values.steps) + 1 and steps[:-1] == values.steps
        if same_object and steps[-1].kind == "key":
            skipped.add(steps[-1].key)
    return skipped


def _raw_values(sub: MqttSubscription, doc: Any, levels: list[str]) -> dict[str, Any]:
    """Name -> raw value of one message, by the subscription's mode."""
    if sub.values_path is not None:
        values = _path(doc, sub.values_path)
        if isinstance(values, list):
            if sub.name_key is None or sub.value_key is None:
                raise PayloadError(
                    f"{sub.values_path!r} is an array: set name_key and value_key to map it"
                )
            pairs: dict[str, Any] = {}
            for index, element in enumerate(values):
                if not isinstance(element, dict) or sub.name_key not in element:
                    raise PayloadError(f"{sub.values_path!r}[{index}] has no {sub.name_key!r}")
                if sub.value_key in element:  # a missing value: absent, as in fields
                    pairs[str(element[sub.name_key])] = element[sub.value_key]
            values = pairs
        if not isinstance(values, dict):
            raise PayloadError(f"{sub.values_path!r} is not an object")
        skipped = _skipped_keys(sub)
        renamed: dict[str, Any] = {}
        for key, value in values.items():
            if key not in skipped:
                renamed[sub.rename.get(str(key), str(key))] = value
        return renamed
    if sub.fields:
        raw: dict[str, Any] = {}
        for sensor, target in sub.fields.items():
            path = target if isinstance(target, str) else target.path
            try:
                raw[sensor] = _selector(path).select(doc)
            except SelectError:
                continue  # reported by exception: absent from this reading
        return raw
    return {levels[sub.sensor_from_topic or 0]: _path(doc, sub.value_path or "$")}


def map_message(
    sub: MqttSubscription,
    topic: str,
    payload: bytes | bytearray,
    edge_id: str,
    sanity: DeviceSanity | None = None,
) -> Reading:
    """One message -> one reading, or PayloadError saying what is wrong."""
    sanity = sanity or _default_sanity()
    doc = _parse(sub, payload)
    levels = topic.split("/")
    if sub.machine is not None:
        machine = sub.machine
    elif sub.machine_from_topic is not None:
        machine = levels[sub.machine_from_topic]
    else:
        machine = _path(doc, sub.machine_path or "")
    if not isinstance(machine, str) or not MACHINE_ID_RE.fullmatch(machine):
        raise PayloadError(f"machine id {machine!r} is not valid")

    raw = _raw_values(sub, doc, levels)
    transforms = sub.transforms()
    core: dict[str, float | None] = {}
    custom: dict[str, float] = {}
    quality: dict[str, str] = {}
    for name, found in raw.items():
        value = number_from(found, numeric_strings=sub.numeric_strings)
        _check_type(name, value)
        if value is not None and name in transforms:
            value = transforms[name](float(value))
        if name in SENSOR_INDEX:
            number = sanity.value(value, machine, name)
            core[name] = number
            if number is None:
                quality[name] = "bad"
        elif isinstance(name, str) and CUSTOM_NAME_RE.fullmatch(name):
            number = sanity.value(value, machine, name)
            if number is not None:
                custom[name] = number
        else:
            raise PayloadError(
                f"sensor name {name!r} is not snake_case (map it with rename: or skip it with "
                "ignore:)"
                if sub.values_path is not None
                else f"sensor name {name!r} is not snake_case"
            )
    if not core and not custom:
        raise PayloadError("no sensor values in the payload")
    ts = (
        _timestamp(_path(doc, sub.timestamp_path), sub.timestamp_format, sanity, machine)
        if sub.timestamp_path
        else datetime.now(UTC)
    )
    return Reading(machine, edge_id, 0, ts, core, custom, quality)


class BrokerConfig(Protocol):
    """What ``make_client`` reads of a config (the MQTT and the Sparkplug inputs')."""

    @property
    def username(self) -> str | None: ...
    @property
    def tls(self) -> MqttTls | None: ...
    def password(self) -> str | None: ...


def make_client(config: BrokerConfig, *, client_id: str, clean_session: bool) -> mqtt.Client:
    """A client for the configured broker with its credentials and TLS: the one set-up the
    input, its probe and the Sparkplug input share."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session
    )
    if config.username:
        client.username_pw_set(config.username, config.password())
    if config.tls is not None:
        client.tls_set(
            ca_certs=str(config.tls.ca_file) if config.tls.ca_file else None,
            certfile=str(config.tls.cert_file) if config.tls.cert_file else None,
            keyfile=str(config.tls.key_file) if config.tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
    return client


class MqttInput(Input[MqttInputConfig]):
    def __init__(
        self,
        config: MqttInputConfig,
        edge_id: str,
        emit: Emit,
        metrics: EdgeMetrics,
        *,
        window: TimeWindow | None = None,
    ) -> None:
        super().__init__(config, edge_id, emit, metrics, window=window)
        # Messages the daemon could not take (queue full), still unacknowledged at the
        # broker; it delivers them again when the session restarts.
        self._refused = 0
        self._last_refusal = 0.0
        self._resume_after = RESUME_FIRST_S
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = threading.Event()
        self._closing = False
        self._unacked = 0
        self._unacked_lock = threading.Lock()
        self._matchers = [(s, s.topic) for s in config.subscriptions]
        client = make_client(config, client_id=config.client_id, clean_session=config.clean_session)
        client.manual_ack_set(True)
        # paho's stub says int, but Client._reconnect_wait only adds the delay to a clock
        # reading and sleeps it, so half a second before the first reconnect works as meant.
        client.reconnect_delay_set(0.5, 10)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client

    def health(self) -> dict[str, bool]:
        return {self.config.name: self._connected.is_set()}

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None
    ) -> None:
        if reason.is_failure:
            log_event(
                log,
                logging.WARNING,
                "mqtt connect refused",
                source=self.config.name,
                reason=str(reason),
            )
            return
        self._connected.set()
        self.metrics.source_reconnects.labels(self.config.name).inc()
        self.metrics.source_up.labels(self.config.name, "*").set(1)
        topics: list[tuple[str, int]] = [
            (s.topic, self.config.qos) for s in self.config.subscriptions
        ]
        client.subscribe(topics)
        log_event(
            log,
            logging.INFO,
            "mqtt connected",
            source=self.config.name,
            session_present=bool(getattr(flags, "session_present", False)),
        )

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None
    ) -> None:
        if self._connected.is_set():
            log_event(
                log,
                logging.WARNING,
                "mqtt disconnected; reconnecting",
                source=self.config.name,
                reason=str(reason),
            )
        self._connected.clear()
        self.metrics.source_up.labels(self.config.name, "*").set(0)

    def _ack_later(self, message: mqtt.MQTTMessage) -> DeliveryHandle | None:
        if not message.qos:
            return None
        with self._unacked_lock:
            self._unacked += 1

        def ack() -> None:
            with self._unacked_lock:
                self._unacked -= 1
            self._resume_after = RESUME_FIRST_S
            self.client.ack(message.mid, message.qos)

        def refuse() -> None:
            with self._unacked_lock:
                self._unacked -= 1
                self._refused += 1
                self._last_refusal = time.monotonic()

        return DeliveryHandle(
            ack, refuse, message_key(message.topic, message.payload), bool(message.dup)
        )

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._closing:
            return  # not acknowledged: the broker redelivers it to the next session
        ack = self._ack_later(message)
        for sub, pattern in self._matchers:
            if mqtt.topic_matches_sub(pattern, message.topic):
                try:
                    reading = map_message(
                        sub, message.topic, message.payload, self.edge_id, self.sanity
                    )
                except PayloadError as exc:
                    self.metrics.source_errors.labels(self.config.name, "*").inc()
                    log_event(
                        log,
                        logging.WARNING,
                        "mqtt payload rejected",
                        source=self.config.name,
                        topic=message.topic,
                        error=str(exc),
                        payload=message.payload[:200].decode("utf-8", "replace"),
                    )
                    break
                self.metrics.readings_in.labels(self.config.name).inc()
                assert self._loop is not None
                # Hand over to the event loop; the ack goes out once the reading is committed.
                self._loop.call_soon_threadsafe(self.emit, reading, ack)
                return
        if ack is not None:
            ack()

    def _restart_session(self) -> None:
        """Reconnect so the broker delivers the refused messages again (MQTT resends
        unacknowledged messages only to a new connection of the session)."""
        with self._unacked_lock:
            refused, self._refused = self._refused, 0
        log_event(
            log,
            logging.WARNING,
            "mqtt: reconnecting so the broker delivers refused messages again",
            source=self.config.name,
            refused=refused,
        )
        self._resume_after = min(RESUME_MAX_S, self._resume_after * 2)
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()
        self.client.connect_async(
            self.config.host, self.config.port, keepalive=self.config.keepalive_s
        )
        self.client.loop_start()

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self.client.connect_async(
            self.config.host, self.config.port, keepalive=self.config.keepalive_s
        )
        self.client.loop_start()
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
                if self._refused and time.monotonic() - self._last_refusal >= self._resume_after:
                    await asyncio.to_thread(self._restart_session)
            # Stop taking messages, then wait until every reading handed over has been
            # committed and acknowledged, so a clean shutdown causes no redelivery.
            self._closing = True
            for _ in range(100):
                with self._unacked_lock:
                    if self._unacked == 0:
                        break
                await asyncio.sleep(0.05)
        finally:
            with contextlib.suppress(Exception):
                self.client.disconnect()
            self.client.loop_stop()

    async def probe(self) -> list[ProbeResult]:
        return await asyncio.to_thread(self._probe_blocking)

    def _probe_blocking(self) -> list[ProbeResult]:
        config = self.config
        return probe_broker(config, self.name, [s.topic for s in config.subscriptions])


class ProbedBroker(BrokerConfig, Protocol):
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def client_id(self) -> str: ...
    @property
    def qos(self) -> int: ...
    @property
    def keepalive_s(self) -> int: ...


def probe_broker(config: ProbedBroker, name: str, topics: list[str]) -> list[ProbeResult]:
    """Connect (with the configured credentials and TLS) and subscribe to every topic
    once. A client id of its own and a clean session: probing must not take over or
    change the daemon's persistent session."""
    target = f"{config.host}:{config.port}" + (" (TLS)" if config.tls is not None else "")
    wanted: list[tuple[str, int]] = [(topic, config.qos) for topic in topics]
    try:
        client = make_client(config, client_id=f"{config.client_id}-probe", clean_session=True)
    except (OSError, ValueError) as exc:  # unreadable CA/key file, unset password variable
        return [ProbeResult(name, target, False, _describe(exc))]
    outcome: dict[str, Any] = {}
    connected = threading.Event()
    subscribed = threading.Event()

    def on_connect(
        c: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None
    ) -> None:
        outcome["connect"] = reason
        connected.set()
        if not reason.is_failure:
            c.subscribe(wanted)

    def on_subscribe(
        c: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any = None
    ) -> None:
        outcome["subscribe"] = list(reasons)
        subscribed.set()

    def on_disconnect(
        c: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None
    ) -> None:
        if "connect" not in outcome:  # closed before CONNACK (e.g. plain text to TLS)
            outcome.setdefault("closed", str(reason))
            connected.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_disconnect = on_disconnect
    try:
        # The TLS handshake (and its certificate check) happens here.
        client.connect(config.host, config.port, keepalive=config.keepalive_s)
    except OSError as exc:
        return [ProbeResult(name, target, False, _describe(exc))]
    client.loop_start()
    try:
        if not connected.wait(PROBE_TIMEOUT_S):
            detail = f"no answer to CONNECT in {PROBE_TIMEOUT_S:.0f} s"
            return [ProbeResult(name, target, False, detail)]
        if "connect" not in outcome:
            detail = (
                f"the broker closed the connection before answering ({outcome['closed']}); "
                "does it expect TLS (tls:) or another port?"
            )
            return [ProbeResult(name, target, False, detail)]
        if outcome["connect"].is_failure:
            detail = f"connection refused: {outcome['connect']}"
            return [ProbeResult(name, target, False, detail)]
        if not subscribed.wait(PROBE_TIMEOUT_S):
            detail = f"connected; no answer to SUBSCRIBE in {PROBE_TIMEOUT_S:.0f} s"
            return [ProbeResult(name, target, False, detail)]
        refused = [
            topic
            for topic, code in zip(topics, outcome["subscribe"], strict=False)
            if getattr(code, "is_failure", False)
        ]
        if refused:
            detail = f"connected; subscription refused: {', '.join(refused)}"
            return [ProbeResult(name, target, False, detail)]
        detail = f"connected; {len(topics)} subscription(s) granted"
        return [ProbeResult(name, target, True, detail)]
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()
        client.loop_stop()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
