"""Simulated fleets of run-to-failure histories, in process and without real time.

Each run is one machine of the simulator (``MachineSignals`` and the ``bearing_wear`` fault of
``FaultInjector``, exactly what ``rig-sim`` serves) stepped through simulated seconds as fast as
the CPU goes, folded into one row per ``step_s`` (the mean of ``samples_per_step`` samples, as
the edge folds live readings), with the true remaining life at each row in hours. Runs differ by
seed, load, wear duration (the wear rate) and wear strength.

A run has a healthy part before the wear starts. A real machine runs healthy for days; rows of
a healthy machine are alike at any age (the signal model is stationary), so only the last
``healthy_rows`` rows before the onset are simulated, plus one more healthy stretch whose true
life is days longer: the model learns that a healthy machine has at least its cap left without
the fleet simulating weeks of identical rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.catalog import SENSOR_INDEX
from simulator.config import FaultSpec
from simulator.faults import FaultInjector
from simulator.signals import MachineSignals

# What bearing wear moves (vibration, temperatures, noise) and what tells the load apart
# (speed and current: vibration grows with speed squared).
RUL_SENSORS = ("vibration", "bearing_temp", "coupling_temp", "noise_level", "rpm", "motor_current")
STEP_S = 60.0
SAMPLES_PER_STEP = 6


@dataclass(frozen=True)
class RunSpec:
    seed: int
    load: float  # operating load, 0.55 .. 0.95 (nominal 0.75)
    wear_hours: float  # from the onset of wear to failure
    magnitude: float  # strength of the wear signature
    healthy_rows: int = 60
    extra_healthy_hours: float = 0.0  # true life beyond the run for the second healthy stretch


@dataclass
class Run:
    spec: RunSpec
    rows: np.ndarray  # (n, len(RUL_SENSORS))
    rul_hours: np.ndarray  # (n,) true remaining life at each row
    wearing: np.ndarray  # (n,) True from the onset of wear


def fleet_specs(
    n: int, seed: int, *, min_hours: float = 1.0, max_hours: float = 96.0
) -> list[RunSpec]:
    """``n`` runs: wear durations log-uniform in [min_hours, max_hours], loads uniform in
    0.6 .. 0.9, strengths 0.8 .. 1.2; healthy machines whose failure is 1 to 12 days away."""
    rng = np.random.default_rng(seed)
    return [
        RunSpec(
            seed=int(rng.integers(1, 2**31)),
            load=float(rng.uniform(0.6, 0.9)),
            wear_hours=float(np.exp(rng.uniform(np.log(min_hours), np.log(max_hours)))),
            magnitude=float(rng.uniform(0.8, 1.2)),
            extra_healthy_hours=float(rng.uniform(24.0, 288.0)),
        )
        for _ in range(n)
    ]


def simulate_run(
    spec: RunSpec, *, step_s: float = STEP_S, samples_per_step: int = SAMPLES_PER_STEP
) -> list[Run]:
    """The run to failure (healthy rows, then the wear) and a second healthy stretch of the
    same machine whose failure lies ``extra_healthy_hours`` further away."""
    machine = f"fleet-{spec.seed}"
    signals = MachineSignals(machine, spec.seed)
    healthy_s = spec.healthy_rows * step_s
    wear_s = spec.wear_hours * 3600.0
    fault = FaultSpec(
        kind="bearing_wear",
        machine=machine,
        start_s=healthy_s,
        duration_s=wear_s,
        magnitude=spec.magnitude,
    )
    injector = FaultInjector(machine, [fault], signals.rng)
    columns = [SENSOR_INDEX[s] for s in RUL_SENSORS]
    end_s = healthy_s + wear_s
    n_steps = int(end_s // step_s)
    dt = step_s / samples_per_step
    rows = np.empty((n_steps, len(columns)))
    rul = np.empty(n_steps)
    t = 0.0
    for k in range(n_steps):
        acc = np.zeros(len(columns))
        for _ in range(samples_per_step):
            t += dt
            signals.load = spec.load
            values = injector.apply(t, signals.step(t))
            acc += values[columns]
        rows[k] = acc / samples_per_step
        rul[k] = max(0.0, end_s - t) / 3600.0
    wearing = np.arange(1, n_steps + 1) * step_s > healthy_s
    out = [Run(spec, rows, rul, wearing)]
    # The second healthy stretch: the same machine, days from failure.
    n_healthy = spec.healthy_rows
    healthy = np.empty((n_healthy, len(columns)))
    for k in range(n_healthy):
        acc = np.zeros(len(columns))
        for _ in range(samples_per_step):
            t += dt
            signals.load = spec.load
            acc += signals.step(t)[columns]
        healthy[k] = acc / samples_per_step
    far = spec.wear_hours + spec.extra_healthy_hours
    far_rul = far + (n_healthy - 1 - np.arange(n_healthy)) * step_s / 3600.0
    out.append(Run(spec, healthy, far_rul, np.zeros(n_healthy, dtype=bool)))
    return out


def simulate_fleet(
    specs: list[RunSpec], *, step_s: float = STEP_S, samples_per_step: int = SAMPLES_PER_STEP
) -> list[Run]:
    runs: list[Run] = []
    for spec in specs:
        runs.extend(simulate_run(spec, step_s=step_s, samples_per_step=samples_per_step))
    return runs


def healthy_reference(runs: list[Run]) -> np.ndarray:
    """Per sensor, the mean of the rows before any wear: what 'healthy' looks like."""
    rows = [r.rows[~r.wearing] for r in runs if (~r.wearing).any()]
    return np.concatenate(rows).mean(axis=0)
