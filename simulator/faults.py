"""Injected faults, applied to a machine's values after the signal model, and their ground
truth (what was injected, where, when, and the true remaining life where it applies)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from shared.catalog import SENSOR_INDEX, SENSORS_BY_NAME
from simulator.config import FaultSpec

_I = SENSOR_INDEX

# Sensors each fault kind affects when the scenario does not name them.
DEFAULT_SENSORS: dict[str, list[str]] = {
    "bearing_wear": ["vibration", "bearing_temp", "coupling_temp", "noise_level"],
    "cavitation": [
        "cavitation_index",
        "flow_rate",
        "fluid_pressure",
        "vibration",
        "noise_level",
        "pump_efficiency",
    ],
}
# Bearing wear grows exponentially; at failure vibration is this many times its normal level.
WEAR_VIBRATION_AT_FAILURE = 4.0
WEAR_TEMP_RISE_AT_FAILURE_F = 55.0
WEAR_GROWTH = 4.0  # e-folds of the exponential over the fault's life


@dataclass
class ActiveFault:
    spec: FaultSpec
    sensors: list[str]
    stuck_values: dict[str, float] = field(default_factory=dict)

    @property
    def end_s(self) -> float:
        return self.spec.start_s + self.spec.duration_s

    def active(self, t: float) -> bool:
        return self.spec.start_s <= t < self.end_s

    def progress(self, t: float) -> float:
        return min(1.0, max(0.0, (t - self.spec.start_s) / self.spec.duration_s))


def wear_fraction(progress: float) -> float:
    """0 at onset, 1 at failure, exponential in between (slow start, fast end)."""
    return (math.exp(WEAR_GROWTH * progress) - 1.0) / (math.exp(WEAR_GROWTH) - 1.0)


class FaultInjector:
    def __init__(self, machine: str, specs: list[FaultSpec], rng: np.random.Generator) -> None:
        self.faults = [
            ActiveFault(s, list(s.sensors) or DEFAULT_SENSORS.get(s.kind, []))
            for s in specs
            if s.machine == machine
        ]
        self.rng = rng

    def failed(self, t: float) -> bool:
        """A bearing that wore out has failed: the machine stops."""
        return any(f.spec.kind == "bearing_wear" and t >= f.end_s for f in self.faults)

    def rul_s(self, t: float) -> float | None:
        remaining = [
            f.end_s - t
            for f in self.faults
            if f.spec.kind == "bearing_wear" and t >= f.spec.start_s
        ]
        return max(0.0, min(remaining)) if remaining else None

    def active_kinds(self, t: float) -> list[str]:
        return [f.spec.kind for f in self.faults if f.active(t)]

    def clock_offset_s(self, t: float) -> float:
        """How far the device clock is off at ``t`` (clock faults add up)."""
        return sum(f.spec.offset_s for f in self.faults if f.spec.kind == "clock" and f.active(t))

    def apply(self, t: float, values: np.ndarray) -> np.ndarray:
        """The values with every active fault applied (clock faults change timestamps only:
        see ``clock_offset_s``)."""
        for fault in self.faults:
            if not fault.active(t):
                if fault.spec.kind == "stuck":
                    fault.stuck_values.clear()
                continue
            kind, magnitude, p = fault.spec.kind, fault.spec.magnitude, fault.progress(t)
            if kind == "bearing_wear":
                w = wear_fraction(p) * magnitude
                values[_I["vibration"]] *= 1.0 + (WEAR_VIBRATION_AT_FAILURE - 1.0) * w
                values[_I["bearing_temp"]] += WEAR_TEMP_RISE_AT_FAILURE_F * w
                values[_I["coupling_temp"]] += 0.4 * WEAR_TEMP_RISE_AT_FAILURE_F * w
                values[_I["noise_level"]] += 12.0 * w
            elif kind == "spike":
                for name in fault.sensors:
                    spec = SENSORS_BY_NAME[name]
                    values[_I[name]] += magnitude * (spec.high - spec.low)
            elif kind == "stuck":
                for name in fault.sensors:
                    values[_I[name]] = fault.stuck_values.setdefault(name, values[_I[name]])
            elif kind == "drift":
                for name in fault.sensors:
                    values[_I[name]] *= 1.0 + 0.2 * magnitude * p
            elif kind == "dropout":
                for name in fault.sensors:
                    values[_I[name]] = math.nan
            elif kind == "cavitation":
                # Vapour bubbles: flow and head collapse erratically, the pump rattles.
                jitter = abs(self.rng.normal(0.0, 0.15))
                values[_I["cavitation_index"]] = 0.55 + 0.3 * magnitude + 0.1 * jitter
                values[_I["flow_rate"]] *= 1.0 - (0.25 + jitter) * magnitude
                values[_I["fluid_pressure"]] *= 1.0 - 0.3 * magnitude
                values[_I["vibration"]] *= 1.0 + 1.5 * magnitude
                values[_I["noise_level"]] += 10.0 * magnitude
                values[_I["pump_efficiency"]] *= 1.0 - 0.2 * magnitude
        return values


def ground_truth(specs: list[FaultSpec], started_at: datetime) -> list[dict[str, Any]]:
    """One JSON document per injected fault. Times are UTC; ``true_rul_s`` at any instant t
    in the window is ``failure_at - t``."""
    out = []
    for spec in specs:
        start = started_at + timedelta(seconds=spec.start_s)
        end = start + timedelta(seconds=spec.duration_s)
        doc: dict[str, Any] = {
            "machine": spec.machine,
            "kind": spec.kind,
            "sensors": list(spec.sensors) or DEFAULT_SENSORS.get(spec.kind, []),
            "start": start.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "end": end.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "start_s": spec.start_s,
            "end_s": spec.start_s + spec.duration_s,
            "magnitude": spec.magnitude,
        }
        if spec.kind == "clock":
            doc["offset_s"] = spec.offset_s
        if spec.kind == "bearing_wear":
            doc["failure_at"] = doc["end"]
            doc["true_rul_s_at_start"] = spec.duration_s
        out.append(doc)
    return out
