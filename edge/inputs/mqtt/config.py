"""Typed configuration of the MQTT input: subscriptions and how topics and JSON payloads map
to machines and sensors."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edge.inputs.base import InputConfig
from shared.configtypes import ENV_NAME_RE, MachineId, SecretRef, SensorName, StrictModel


class MqttTls(StrictModel):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


class MqttSubscription(StrictModel):
    """One topic filter and its mapping. Paths are dot-separated keys into the JSON payload.

    The machine comes from ``machine`` (fixed), ``machine_from_topic`` (0-based topic level)
    or ``machine_path``. Values come from ``values_path`` (an object of sensor -> number),
    ``fields`` (sensor -> path), or ``sensor_from_topic`` + ``value_path`` (one sensor per
    message, plant-device style).
    """

    topic: str = Field(min_length=1)
    machine: MachineId | None = None
    machine_from_topic: int | None = Field(default=None, ge=0)
    machine_path: str | None = None
    values_path: str | None = None
    fields: dict[SensorName, str] = Field(default_factory=dict)
    sensor_from_topic: int | None = Field(default=None, ge=0)
    value_path: str | None = None
    timestamp_path: str | None = None
    timestamp_format: Literal["iso8601", "unix_s", "unix_ms"] = "iso8601"

    @model_validator(mode="after")
    def _complete(self) -> MqttSubscription:
        if (
            sum(x is not None for x in (self.machine, self.machine_from_topic, self.machine_path))
            != 1
        ):
            raise ValueError("set exactly one of machine, machine_from_topic, machine_path")
        modes = [bool(self.values_path), bool(self.fields), self.sensor_from_topic is not None]
        if sum(modes) != 1:
            raise ValueError("set exactly one of values_path, fields, sensor_from_topic")
        if self.sensor_from_topic is not None and not self.value_path:
            raise ValueError("sensor_from_topic needs value_path")
        levels = self.topic.split("/")
        for name in ("machine_from_topic", "sensor_from_topic"):
            index = getattr(self, name)
            if index is not None and (index >= len(levels) or levels[index] != "+"):
                raise ValueError(
                    f"{name}={index}: topic level {index} of {self.topic!r} must be a '+' wildcard"
                )
        return self


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
