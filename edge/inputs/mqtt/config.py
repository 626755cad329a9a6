"""Typed configuration of the MQTT input: subscriptions and how topics and JSON payloads map
to machines and sensors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, model_validator

from edge.inputs.base import InputConfig
from edge.inputs.mqtt.mapping import FieldMap, PathError, Scaling, check_path
from shared.configtypes import ENV_NAME_RE, MachineId, SecretRef, SensorName, StrictModel


class MqttTls(StrictModel):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


class MqttSubscription(StrictModel):
    """One topic filter and its mapping. Paths are selectors into the JSON payload (a
    JSONPath subset, ``edge.inputs.mqtt.mapping``: ``a.b``, ``$.a[0]``,
    ``a[?(@.n=='x')].v``; ``$`` or ``.`` is the whole payload).

    The machine comes from ``machine`` (fixed), ``machine_from_topic`` (0-based topic level)
    or ``machine_path``. Values come from exactly one of:

    - ``values_path``: an object of name -> number (``$`` for a flat payload), each key a
      sensor (``rename`` maps other key names, ``ignore`` skips keys; the keys of
      ``timestamp_path`` and ``machine_path`` are skipped by themselves); or an array of
      objects with ``name_key`` and ``value_key`` (``[{"n": "temperature", "v": 71.2}]``);
    - ``fields``: sensor -> path, or sensor -> ``{path, scale, offset, unit}``; a field
      missing from a message is absent from its reading (devices report by exception);
    - ``sensor_from_topic`` + ``value_path``: one sensor per message, named by a topic
      level; ``value_path: $`` takes a bare payload (``72.5``).

    ``numeric_strings``: ``"71.2"`` (and a bare text payload ``71.2``) count as numbers.
    ``scaling``: per sensor ``{scale, offset, unit}`` for ``values_path`` and
    ``sensor_from_topic`` (in ``fields`` each field carries its own).
    """

    topic: str = Field(min_length=1)
    machine: MachineId | None = None
    machine_from_topic: int | None = Field(default=None, ge=0)
    machine_path: str | None = None
    values_path: str | None = None
    name_key: str | None = Field(default=None, min_length=1)
    value_key: str | None = Field(default=None, min_length=1)
    rename: dict[str, SensorName] = Field(default_factory=dict)
    ignore: list[str] = Field(default_factory=list)
    fields: dict[SensorName, str | FieldMap] = Field(default_factory=dict)
    sensor_from_topic: int | None = Field(default=None, ge=0)
    value_path: str | None = None
    numeric_strings: bool = False
    scaling: dict[SensorName, Scaling] = Field(default_factory=dict)
    timestamp_path: str | None = None
    timestamp_format: Literal["iso8601", "unix_s", "unix_ms"] = "iso8601"
    _transforms: dict[str, Callable[[float], float]] | None = PrivateAttr(default=None)

    def transforms(self) -> dict[str, Callable[[float], float]]:
        """Per sensor, ``value * scale + offset`` (and its unit conversion), when set."""
        if self._transforms is None:
            out: dict[str, Callable[[float], float]] = {}
            for sensor, scaling in self.scaling.items():
                if not scaling.is_identity():
                    out[sensor] = scaling.for_sensor(sensor)
            for sensor, target in self.fields.items():
                if isinstance(target, FieldMap) and not target.is_identity():
                    out[sensor] = target.for_sensor(sensor)
            self._transforms = out
        return self._transforms

    @model_validator(mode="after")
    def _complete(self) -> MqttSubscription:
        if (
            sum(x is not None for x in (self.machine, self.machine_from_topic, self.machine_path))
            != 1
        ):
            raise ValueError("set exactly one of machine, machine_from_topic, machine_path")
        modes = [
            self.values_path is not None,
            bool(self.fields),
            self.sensor_from_topic is not None,
        ]
        if sum(modes) != 1:
            raise ValueError("set exactly one of values_path, fields, sensor_from_topic")
        if self.sensor_from_topic is not None and self.value_path is None:
            raise ValueError("sensor_from_topic needs value_path ('$': the whole payload)")
        if self.value_path is not None and self.sensor_from_topic is None:
            raise ValueError("value_path is used with sensor_from_topic only")
        levels = self.topic.split("/")
        for index, level in enumerate(levels):
            # What a broker refuses at SUBSCRIBE (MQTT 3.1.1 §4.7.1), refused here instead.
            if ("#" in level and (level != "#" or index != len(levels) - 1)) or (
                "+" in level and level != "+"
            ):
                raise ValueError(
                    f"topic {self.topic!r}: '+' must be a whole level and '#' the whole last level"
                )
        for name in ("machine_from_topic", "sensor_from_topic"):
            index = getattr(self, name)
            if index is not None and (index >= len(levels) or levels[index] != "+"):
                raise ValueError(
                    f"{name}={index}: topic level {index} of {self.topic!r} must be a '+' wildcard"
                )
        # Every selector compiles here exactly as the runtime compiles it.
        for name in ("machine_path", "values_path", "value_path", "timestamp_path"):
            try:
                check_path(getattr(self, name))
            except PathError as exc:
                raise ValueError(f"{name}: {exc}") from None
        if (self.name_key is None) != (self.value_key is None):
            raise ValueError("name_key and value_key go together")
        if self.values_path is None:
            for name in ("name_key", "rename", "ignore"):
                if getattr(self, name):
                    raise ValueError(f"{name} is used with values_path only")
        self._check_scaling()
        return self

    def _check_scaling(self) -> None:
        for sensor, target in self.fields.items():
            if isinstance(target, str):
                try:
                    check_path(target)
                except PathError as exc:
                    raise ValueError(f"fields.{sensor}: {exc}") from None
            if isinstance(target, FieldMap):
                if sensor in self.scaling:
                    raise ValueError(
                        f"fields.{sensor} has its own scale/offset/unit: not in scaling too"
                    )
                try:
                    target.for_sensor(sensor)
                except ValueError as exc:
                    raise ValueError(f"fields.{sensor}: {exc}") from None
        if self.fields:
            stray = sorted(set(self.scaling) - set(self.fields))
            if stray:
                raise ValueError(f"scaling of {', '.join(stray)}: not a sensor of fields")
        for sensor, scaling in self.scaling.items():
            try:
                scaling.for_sensor(sensor)
            except ValueError as exc:
                raise ValueError(f"scaling.{sensor}: {exc}") from None


class MqttInputConfig(InputConfig):
    """One broker connection with its subscriptions. Machines come from the messages."""

    name: str = Field(default="mqtt", min_length=1, max_length=64)
    host: str = Field(min_length=1)
    port: int = Field(default=1883, ge=1, le=65535)
    # A fixed client id and clean_session false make the broker keep the subscription and
    # queue QoS 1 messages while the edge is down: nothing published meanwhile is lost.
    client_id: str = Field(min_length=1, max_length=128)
    clean_session: bool = False
    qos: Literal[0, 1] = 1
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    username: str | None = None
    password_env: str | None = Field(default=None, pattern=ENV_NAME_RE.pattern)
    password_file: Path | None = None
    tls: MqttTls | None = None
    subscriptions: list[MqttSubscription] = Field(min_length=1)

    @property
    def password_ref(self) -> SecretRef | None:
        return SecretRef.of(self, "password")

    def password(self) -> str | None:
        ref = self.password_ref
        return None if ref is None else ref.read()
