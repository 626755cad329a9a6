"""Plausible, coupled signals for the 50 core sensors of one machine.

Every sensor wanders around its catalog ``typical`` value (an Ornstein-Uhlenbeck drift plus
measurement noise), and the physically linked ones follow a shared operating point: load
drives rpm, torque and motor current; rpm drives vibration; load heats the thermal group
with a lag; rpm and valve position drive flow and pressure along a pump curve. Deterministic
for a given seed.
"""

from __future__ import annotations

import enum
import math

import numpy as np

from shared.catalog import CORE_SENSORS, SENSOR_INDEX


class MachineState(enum.IntEnum):
    STOPPED = 0
    IDLE = 1
    RUNNING = 2


_TYPICAL = np.array([s.typical for s in CORE_SENSORS], dtype=np.float64)
_MIN = np.array([s.min_value for s in CORE_SENSORS], dtype=np.float64)
_MAX = np.array([s.max_value for s in CORE_SENSORS], dtype=np.float64)
# Relative drift amplitude and noise per sensor; mains frequency is tightly regulated.
_DRIFT = np.full(len(CORE_SENSORS), 0.012)
_NOISE = np.full(len(CORE_SENSORS), 0.004)
for _name, _drift, _noise in (
    ("frequency", 0.0006, 0.0003),
    ("power_factor", 0.005, 0.002),
    ("thermal_efficiency", 0.006, 0.002),
    ("pump_efficiency", 0.006, 0.002),
):
    _DRIFT[SENSOR_INDEX[_name]] = _drift
    _NOISE[SENSOR_INDEX[_name]] = _noise

_THERMAL = [
    SENSOR_INDEX[n]
    for n in (
        "coolant_temp",
        "exhaust_temp",
        "oil_temp",
        "radiator_temp",
        "outlet_temp",
        "core_temp",
        "surface_temp",
        "bearing_temp",
        "coupling_temp",
    )
]
_I = SENSOR_INDEX
DRIFT_TAU_S = 60.0
THERMAL_TAU_S = 45.0
NOMINAL_LOAD = 0.75


class MachineSignals:
    def __init__(self, machine_id: str, seed: int) -> None:
        # Seed per machine so adding a machine does not change the others' signals.
        digest = sum((i + 1) * ord(c) for i, c in enumerate(machine_id))
        self.rng = np.random.default_rng([seed, digest])
        self.machine_id = machine_id
        self.state = MachineState.RUNNING
        self.load = NOMINAL_LOAD
        self._drift = self.rng.normal(0.0, 1.0, len(CORE_SENSORS)) * _DRIFT * 0.5
        self._thermal_factor = 1.0
        self._last_t: float | None = None

    def step(self, t: float) -> np.ndarray:
        """Values at time ``t`` (seconds, monotonic within a run), catalog order."""
        dt = 0.0 if self._last_t is None else max(0.0, t - self._last_t)
        self._last_t = t
        rng = self.rng
        if dt > 0:
            # OU drift: mean-reverting with time constant DRIFT_TAU_S, stationary sigma _DRIFT.
            decay = math.exp(-dt / DRIFT_TAU_S)
            self._drift = self._drift * decay + _DRIFT * math.sqrt(
                1 - decay * decay
            ) * rng.standard_normal(len(CORE_SENSORS))
            # The operating point wanders a little around nominal load.
            self.load += (NOMINAL_LOAD - self.load) * min(1.0, dt / 120.0) + 0.01 * math.sqrt(
                dt
            ) * rng.standard_normal()
            self.load = min(0.95, max(0.55, self.load))
        running = self.state is MachineState.RUNNING
        load_ratio = self.load / NOMINAL_LOAD if running else 0.0

        values = _TYPICAL * (1.0 + self._drift + _NOISE * rng.standard_normal(len(_TYPICAL)))
        rpm_ratio = (0.85 + 0.15 * load_ratio) if running else 0.0
        values[_I["rpm"]] *= rpm_ratio
        values[_I["vibration"]] *= rpm_ratio**2
        values[_I["torque"]] *= load_ratio
        current_ratio = 0.5 + 0.5 * load_ratio if running else 0.02
        values[_I["motor_current"]] *= current_ratio
        values[_I["current"]] *= current_ratio
        values[_I["heat_dissipation"]] *= 0.6 + 0.4 * load_ratio
        # Thermal lag: temperatures approach the load's equilibrium with time constant tau.
        target = 0.92 + 0.08 * load_ratio if running else 0.8
        if dt > 0:
            self._thermal_factor += (target - self._thermal_factor) * (
                1 - math.exp(-dt / THERMAL_TAU_S)
            )
        values[_THERMAL] *= self._thermal_factor
        # Pump curve: flow ~ speed x valve opening, head ~ speed^2 minus friction with flow.
        valve = values[_I["valve_position"]] / _TYPICAL[_I["valve_position"]]
        flow_ratio = rpm_ratio * valve
        values[_I["flow_rate"]] *= flow_ratio
        values[_I["fluid_pressure"]] *= max(0.0, 1.15 * rpm_ratio**2 - 0.15 * flow_ratio**2)
        values[_I["reynolds_number"]] *= flow_ratio
        values[_I["pipe_pressure_drop"]] *= flow_ratio**2
        return np.clip(values, _MIN, _MAX)
