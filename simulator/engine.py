"""The simulation itself, independent of protocols: each tick produces one sample per
machine (signals, operating states, faults, replays), which the protocol servers publish."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from shared.catalog import CORE_SENSOR_NAMES, SENSOR_INDEX
from simulator.config import SimConfig
from simulator.faults import FaultInjector
from simulator.register_map import float32
from simulator.replay import Replayer
from simulator.signals import MachineSignals, MachineState

# The latest instant every protocol can carry (OPC-UA DateTime and ISO 8601 end at year 9999).
MAX_DEVICE_TS_MS = 253_402_300_799_999

_STATES = {
    "running": MachineState.RUNNING,
    "idle": MachineState.IDLE,
    "stopped": MachineState.STOPPED,
}


@dataclass(slots=True)
class Sample:
    machine_id: str
    unit_id: int
    counter: int
    ts_ms: int
    state: int
    values: list[float]  # catalog order, float32-exact; NaN marks a dropped-out sensor
    faults: list[str]
    rul_s: float | None
    # How far the device's clock is off (clock faults, ``--clock-offset-s``). ``ts_ms`` stays
    # the true time of the sample; protocols serve ``device_ts_ms``.
    clock_offset_ms: int = 0

    @property
    def device_ts_ms(self) -> int:
        """The timestamp the device serves: its (possibly wrong) clock, kept inside what a
        uint64 register, an OPC-UA DateTime and an ISO 8601 string can all hold."""
        if not self.clock_offset_ms:
            return self.ts_ms
        return min(MAX_DEVICE_TS_MS, max(0, self.ts_ms + self.clock_offset_ms))


class SampleSink(Protocol):
    def publish(self, samples: list[Sample]) -> None: ...


class Machine:
    def __init__(self, machine_id: str, unit_id: int, config: SimConfig) -> None:
        self.machine_id = machine_id
        self.unit_id = unit_id
        self.signals = MachineSignals(machine_id, config.seed)
        self.faults = FaultInjector(machine_id, config.faults, self.signals.rng)
        self.states = sorted(
            (s for s in config.states if s.machine == machine_id), key=lambda s: s.at_s
        )
        replays = [r for r in config.replay if r.machine == machine_id]
        self.replayer = Replayer(replays[0]) if replays else None
        self.counter = 0
        self.last: Sample | None = None
        self.clock_offset_s = config.clock_offset_s

    def _state_at(self, t: float) -> MachineState:
        if self.faults.failed(t):
            return MachineState.STOPPED
        state = MachineState.RUNNING
        for change in self.states:
            if change.at_s <= t:
                state = _STATES[change.state]
        return state

    def step(self, t: float, now_ms: int) -> Sample | None:
        """The next sample, or None when a finished replay has nothing new to serve."""
        row = None
        if self.replayer is not None:
            row = self.replayer.next_row()
            if row is None:
                return None
        self.signals.state = self._state_at(t)
        values = self.signals.step(t)
        values = self.faults.apply(t, values)
        if row is not None:
            for sensor, value in row.items():
                values[SENSOR_INDEX[sensor]] = value
        self.counter += 1
        sample = Sample(
            machine_id=self.machine_id,
            unit_id=self.unit_id,
            counter=self.counter,
            ts_ms=now_ms,
            state=int(self.signals.state),
            values=float32(values),
            faults=self.faults.active_kinds(t),
            rul_s=self.faults.rul_s(t),
            clock_offset_ms=round((self.clock_offset_s + self.faults.clock_offset_s(t)) * 1000),
        )
        self.last = sample
        return sample


class Engine:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.machines = [Machine(m, i + 1, config) for i, m in enumerate(config.machines)]
        self.started_at = datetime.now(UTC)
        self.ticks = 0

    def tick(self, t: float, now_ms: int) -> list[Sample]:
        samples = []
        for machine in self.machines:
            sample = machine.step(t, now_ms)
            if sample is not None:
                samples.append(sample)
        self.ticks += 1
        return samples

    @property
    def replays_finished(self) -> bool:
        replayers = [m.replayer for m in self.machines if m.replayer is not None]
        return bool(replayers) and all(r.finished for r in replayers)


def as_mapping(sample: Sample) -> dict[str, float | None]:
    """Sensor -> value with dropped-out sensors as None (JSON has no NaN)."""
    return {
        name: (None if math.isnan(v) else v)
        for name, v in zip(CORE_SENSOR_NAMES, sample.values, strict=True)
    }
