"""The standard fault benchmark: the simulator's fault models injected into a block of recorded
or simulated readings, with the ground truth per row.

One definition for the two places that judge detectors on it, so they cannot drift apart:
the model lifecycle's acceptance gate (``cloud.lifecycle.validation``) and the published
simulator evaluation (``python -m models.evaluate sim``).
"""

from __future__ import annotations

import numpy as np

from simulator.config import FaultSpec
from simulator.faults import FaultInjector

STANDARD_FAULT_KINDS = ("bearing_wear", "cavitation", "spike", "drift", "stuck")


def standard_scenarios(n: int, machine: str) -> list[FaultSpec]:
    """One scenario per kind in ``STANDARD_FAULT_KINDS``, placed in the second half of a block
    of ``n`` readings at 1 Hz (a detector needs the first half as run-up for its windows and
    smoothing), each lasting a quarter of the block (at least 20 s; spikes at most 30 s).
    Strengths are chosen so that a useful detector finds them and a blind one does not:
    spikes of half a sensor's range, a 20 % drift, a stuck reading of speed and torque."""
    start = n // 2
    length = max(20, n // 4)
    return [
        FaultSpec(kind="bearing_wear", machine=machine, start_s=start, duration_s=length),
        FaultSpec(kind="cavitation", machine=machine, start_s=start, duration_s=length),
        FaultSpec(
            kind="spike",
            machine=machine,
            start_s=start,
            duration_s=min(30, length),
            sensors=["temperature", "pressure"],
            magnitude=0.5,
        ),
        FaultSpec(
            kind="drift",
            machine=machine,
            start_s=start,
            duration_s=length,
            sensors=["voltage", "current"],
            magnitude=1.0,
        ),
        FaultSpec(
            kind="stuck",
            machine=machine,
            start_s=start,
            duration_s=length,
            sensors=["rpm", "torque"],
        ),
    ]


def inject(block: np.ndarray, spec: FaultSpec, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """A copy of ``block`` (``(n, 50)`` in catalog order, one row per second from t = 0) with
    the fault applied, and the ground truth per row (True while the fault is active).
    ``seed`` drives the fault's own randomness (cavitation's jitter)."""
    injector = FaultInjector(spec.machine, [spec], np.random.default_rng(seed))
    out = block.copy()
    labels = np.zeros(len(block), dtype=bool)
    for i in range(len(block)):
        labels[i] = bool(injector.active_kinds(float(i)))
        out[i] = injector.apply(float(i), out[i])
    return out, labels
