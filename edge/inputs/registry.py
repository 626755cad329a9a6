"""Input types by name: what ``inputs: <kind>:`` in the YAML means (Telegraf's ``inputs.Add``,
ThingsBoard's ``DEFAULT_CONNECTORS``).

Each entry names the config model and the input class as ``"module:Class"``, imported only
when used: the config models (pydantic only) when a config file is loaded, an input class
when the daemon, ``--probe`` or ``scan`` needs it, so an edge reading Modbus alone never
imports the OPC-UA stack. The daemon, the config loader, ``check-config --probe`` and
``rig-edge scan`` loop over this table and name no input type themselves.

Adding an input type: a folder ``edge/inputs/<kind>/`` (config model, input, tests,
``sample.yaml``, ``README.md``) and one ``register`` line below. Code outside the tree (a
site's own input) calls ``register`` before the config is loaded.
"""

from __future__ import annotations

import importlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.inputs.base import Input, InputConfig

_KIND_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True)
class InputType:
    """One registered input type: the YAML key and where its two classes live."""

    kind: str
    config_ref: str | type[InputConfig]
    input_ref: str | type[Input[Any]]

    def config_model(self) -> type[InputConfig]:
        model = _resolve(self.config_ref)
        if not (isinstance(model, type) and issubclass(model, InputConfig)):
            raise TypeError(f"input {self.kind!r}: {self.config_ref!r} is not an InputConfig")
        return model

    def input_class(self) -> type[Input[Any]]:
        cls = _resolve(self.input_ref)
        if not (isinstance(cls, type) and issubclass(cls, Input)):
            raise TypeError(f"input {self.kind!r}: {self.input_ref!r} is not an Input")
        return cls

    def folder(self) -> Path:
        """The input's folder (its ``sample.yaml`` and ``README.md``)."""
        module = importlib.import_module(self.config_model().__module__)
        return Path(str(module.__file__)).parent


def _resolve(ref: str | type[Any]) -> Any:
    if not isinstance(ref, str):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


class _Table:
    def __init__(self) -> None:
        self.types: dict[str, InputType] = {}
        self.lock = threading.Lock()
        self.version = 0


_table = _Table()
# Names the ``inputs:`` section model has itself; a kind cannot be one of them.
_RESERVED = frozenset({"all", "machines", "by_kind", "of_kind"})


def register(
    kind: str,
    config: str | type[InputConfig],
    input: str | type[Input[Any]],
    *,
    replace: bool = False,
) -> None:
    """Make ``inputs: <kind>:`` mean ``config`` (the model of one entry) read by ``input``.
    Either may be a class or a lazy ``"module:Class"`` reference."""
    if not _KIND_RE.fullmatch(kind) or kind in _RESERVED or kind.startswith("model_"):
        raise ValueError(f"input kind {kind!r}: 1-32 of a-z, 0-9, '_' starting with a letter")
    with _table.lock:
        if kind in _table.types and not replace:
            raise ValueError(f"input kind {kind!r} is already registered")
        _table.types[kind] = InputType(kind, config, input)
        _table.version += 1


def unregister(kind: str) -> None:
    with _table.lock:
        if _table.types.pop(kind, None) is not None:
            _table.version += 1


def input_types() -> dict[str, InputType]:
    """The registered types in registration order (the order inputs are built and probed)."""
    with _table.lock:
        return dict(_table.types)


def input_type(kind: str) -> InputType:
    with _table.lock:
        found = _table.types.get(kind)
    if found is None:
        raise KeyError(f"no input type {kind!r}; registered: {', '.join(input_types())}")
    return found


def version() -> int:
    """Changes whenever the table does (the config schema built from it is cached by it)."""
    return _table.version


register(
    "modbus", "edge.inputs.modbus.config:ModbusInputConfig", "edge.inputs.modbus.input:ModbusInput"
)
register("opcua", "edge.inputs.opcua.config:OpcUaInputConfig", "edge.inputs.opcua.input:OpcUaInput")
register("mqtt", "edge.inputs.mqtt.config:MqttInputConfig", "edge.inputs.mqtt.input:MqttInput")
register(
    "sparkplug",
    "edge.inputs.sparkplug.config:SparkplugInputConfig",
    "edge.inputs.sparkplug.input:SparkplugInput",
)
