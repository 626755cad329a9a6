"""The contract every input implements (``edge/inputs/<kind>/``), in the way of Telegraf's
``Input``/``ServiceInput``: the daemon, ``rig-edge check-config --probe`` and ``rig-edge scan``
talk to inputs only through it, never through an input's private members.

An input type is two classes, looked up by the name its YAML section has (see
``edge.inputs.registry``):

- a config model, subclass of ``InputConfig``: strict pydantic, one entry of
  ``inputs: <kind>: [...]``, with a ``name`` unique across the edge's inputs;
- the input, subclass of ``Input``: built from one config entry, it acquires readings in
  ``run`` and hands each to ``emit`` (``emit(reading, on_commit=None, *, sample=None)``;
  ``on_commit`` runs once the reading is durable, which is when a broker message may be
  acknowledged; ``sample`` is the device's sample counter, committed with the reading and
  handed back to the next run of the edge through ``resume``), says per
  device whether it answers (``health``), reads every device once on demand (``probe``) and
  may offer discovery of what a device serves (``scan``).

What a device says is checked the same way for every input: ``self.sanity``
(``edge.inputs.common.DeviceSanity``) replaces device clocks outside the acceptance window
and refuses values that are not plausible numbers, with counters the daemon reports.
"""

from __future__ import annotations

import argparse
import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import Field

from edge.inputs.common import DeviceSanity
from edge.metrics import EdgeMetrics
from shared.configtypes import StrictModel
from shared.message import TimeWindow

# ``emit(reading, on_commit=None, *, sample=None)``: returns False when the daemon could not
# take the reading (its queue is full); an acknowledgeable ``on_commit`` is then refused (see
# ``edge.inputs.common.DeliveryHandle``).
Emit = Callable[..., Any]


class InputConfig(StrictModel):
    """Base of every input's config model: strict (a misspelt key is an error that names
    it), with a ``name`` that labels the input's metrics, logs and health entry."""

    name: str = Field(min_length=1, max_length=64)

    def machine_ids(self) -> list[str]:
        """Machine ids this input names in its config. Each machine is read by one input
        only (checked at load), and the model sync asks the cloud for their models. An
        input that learns its machines from the data (MQTT topics) returns none."""
        return []


@dataclass(frozen=True)
class ProbeResult:
    """One line of ``check-config --probe``: did ``target`` of input ``input`` answer."""

    input: str
    target: str
    ok: bool
    detail: str


ConfigT = TypeVar("ConfigT", bound=InputConfig)


class Input(ABC, Generic[ConfigT]):
    """One configured input (one endpoint: a Modbus TCP host, an OPC-UA server, a broker)."""

    #: ``rig-edge scan <kind> --help`` text; None: this input offers no discovery.
    scan_help: ClassVar[str | None] = None

    def __init__(
        self,
        config: ConfigT,
        edge_id: str,
        emit: Emit,
        metrics: EdgeMetrics,
        *,
        window: TimeWindow | None = None,
    ) -> None:
        self.config = config
        self.edge_id = edge_id
        self.emit = emit
        self.metrics = metrics
        self.sanity = DeviceSanity(config.name, metrics, window)

    @property
    def name(self) -> str:
        return self.config.name

    @abstractmethod
    async def run(self, stop: asyncio.Event) -> None:
        """Acquire readings until ``stop`` is set. Never raises for a device's failure:
        reconnects with back-off and reports the state through ``health``."""

    @abstractmethod
    def health(self) -> dict[str, bool]:
        """Per device (a machine id, or the input's name for a broker): answering now?"""

    @abstractmethod
    async def probe(self) -> list[ProbeResult]:
        """Read every configured device once, without disturbing a daemon that runs with
        the same config (a broker session of its own, no state kept). Never raises for a
        device's failure: that is a result with ``ok`` False saying why."""

    def resume(self, samples: Mapping[str, int]) -> None:
        """Before ``run``: the sample counter this input (by name) committed last per machine
        id, as the edge's previous run left it. An input that numbers samples does not
        record the one still on show again. Default: nothing."""
        return None

    def adopt(self, previous: Input[Any]) -> None:
        """A reload replaces the inputs; this one may take over state of ``previous`` (same
        kind and name), such as the sample counters already recorded. Default: nothing."""
        return None

    @classmethod
    def scan_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the options of ``rig-edge scan <kind>`` (when ``scan_help`` is set)."""
        return None

    @classmethod
    async def scan(cls, args: argparse.Namespace) -> str:
        """Discover what a device serves, as text that helps write the config."""
        raise NotImplementedError(f"{cls.__name__} offers no scan")
