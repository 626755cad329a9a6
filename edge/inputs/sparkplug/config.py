"""Typed configuration of the Sparkplug B input: one broker, one Sparkplug group, and which
node/device metrics are which machine's sensors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge.inputs.base import InputConfig
from edge.inputs.mqtt.config import MqttTls
from edge.inputs.mqtt.mapping import Scaling
from shared.configtypes import ENV_NAME_RE, MachineId, SecretRef, SensorName, StrictModel

# Sparkplug B 3.0 §4.1.1: ids are UTF-8 strings without the MQTT separators and wildcards.
_ID_RE = re.compile(r"^[^/+#]{1,64}$")


def _sparkplug_id(value: str, what: str) -> str:
    if not _ID_RE.fullmatch(value):
        raise ValueError(f"{what} {value!r}: 1-64 characters, none of '/', '+', '#'")
    return value


class SparkplugMetric(Scaling):
    """One metric: the sensor it is, and ``value * scale + offset`` in ``unit``."""

    sensor: SensorName


class SparkplugDevice(StrictModel):
    """The metrics of one Sparkplug device (or of the edge node itself when ``device`` is
    left out) that are one machine's sensors. Metric names are the BIRTH's names
    (``Sensors/Temperature``); DATA messages that send only aliases are resolved through
    the BIRTH. Metrics not listed are ignored."""

    node: str
    device: str | None = None
    machine: MachineId
    metrics: dict[str, SensorName | SparkplugMetric] = Field(min_length=1)

    @field_validator("node")
    @classmethod
    def _node(cls, value: str) -> str:
        return _sparkplug_id(value, "node")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str | None) -> str | None:
        return None if value is None else _sparkplug_id(value, "device")

    @model_validator(mode="after")
    def _units(self) -> SparkplugDevice:
        sensors: dict[str, str] = {}
        for metric, target in self.mapped().items():
            if target.sensor in sensors:
                raise ValueError(
                    f"metrics {sensors[target.sensor]!r} and {metric!r} both map to "
                    f"sensor {target.sensor!r}"
                )
            sensors[target.sensor] = metric
            try:
                target.for_sensor(target.sensor)
            except ValueError as exc:
                raise ValueError(f"metrics.{metric}: {exc}") from None
        return self

    def mapped(self) -> dict[str, SparkplugMetric]:
        """Metric name -> its mapping, the short form (``name: sensor``) expanded."""
        return {
            name: target if isinstance(target, SparkplugMetric) else SparkplugMetric(sensor=target)
            for name, target in self.metrics.items()
        }


class SparkplugInputConfig(InputConfig):
    """A Sparkplug B host application for one group on one broker."""

    name: str = Field(default="sparkplug", min_length=1, max_length=64)
    host: str = Field(min_length=1)
    port: int = Field(default=1883, ge=1, le=65535)
    # A fixed client id and a persistent session, as for the MQTT input: QoS 1 messages
    # published while the edge is down are delivered when it is back (Sparkplug sends DATA
    # with QoS 0, which a broker does not queue; BIRTH/DEATH handling does not depend on it).
    client_id: str = Field(min_length=1, max_length=128)
    clean_session: bool = False
    qos: Literal[0, 1] = 1
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    username: str | None = None
    password_env: str | None = Field(default=None, pattern=ENV_NAME_RE.pattern)
    password_file: Path | None = None
    tls: MqttTls | None = None
    group: str
    # When set, the edge is this Sparkplug Host Application: it publishes
    # spBv1.0/STATE/<host_id> (retained, online, with an offline will) as Sparkplug 3.0 asks.
    host_id: str | None = None
    # Ask a node for its BIRTH certificates (NCMD Node Control/Rebirth) when its DATA comes
    # without a BIRTH seen, with an unknown alias, or after a seq gap; at most once per node
    # per this many seconds (the node answers with NBIRTH, which resets the check).
    rebirth: bool = True
    rebirth_interval_s: float = Field(default=5.0, ge=0.1, le=3600)
    devices: list[SparkplugDevice] = Field(min_length=1)

    @field_validator("group")
    @classmethod
    def _group(cls, value: str) -> str:
        return _sparkplug_id(value, "group")

    @field_validator("host_id")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        return None if value is None else _sparkplug_id(value, "host_id")

    @model_validator(mode="after")
    def _unique(self) -> SparkplugInputConfig:
        seen: set[tuple[str, str | None]] = set()
        for index, entry in enumerate(self.devices):
            key = (entry.node, entry.device)
            if key in seen:
                where = entry.node + ("" if entry.device is None else f"/{entry.device}")
                raise ValueError(f"devices[{index}]: {where} is mapped twice")
            seen.add(key)
        return self

    def machine_ids(self) -> list[str]:
        return list(dict.fromkeys(entry.machine for entry in self.devices))

    def topics(self) -> list[str]:
        """Node and device topics of every configured node (not the whole group: other
        nodes' traffic never reaches the edge)."""
        nodes = dict.fromkeys(entry.node for entry in self.devices)
        out: list[str] = []
        for node in nodes:
            out += [f"spBv1.0/{self.group}/+/{node}", f"spBv1.0/{self.group}/+/{node}/+"]
        return out

    @property
    def password_ref(self) -> SecretRef | None:
        return SecretRef.of(self, "password")

    def password(self) -> str | None:
        ref = self.password_ref
        return None if ref is None else ref.read()
