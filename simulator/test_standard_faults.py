"""The standard fault benchmark shared by the lifecycle's acceptance gate and the published
simulator evaluation."""

from __future__ import annotations

import numpy as np

from simulator.signals import MachineSignals
from simulator.standard_faults import STANDARD_FAULT_KINDS, inject, standard_scenarios


def _normal(n: int) -> np.ndarray:
    signals = MachineSignals("A", 1)
    return np.array([signals.step(float(i)) for i in range(n)])


def test_one_scenario_per_kind_in_the_second_half() -> None:
    specs = standard_scenarios(200, "A")
    assert tuple(s.kind for s in specs) == STANDARD_FAULT_KINDS
    assert all(s.machine == "A" and s.start_s == 100 for s in specs)
    assert all(s.start_s + s.duration_s <= 200 for s in specs)


def test_faults_carry_their_ground_truth() -> None:
    block = _normal(200)
    for spec in standard_scenarios(len(block), "A"):
        faulty, labels = inject(block, spec)
        assert labels.sum() > 0 and not labels[: len(block) // 2].any()
        changed = np.any(faulty != block, axis=1)
        # Faults change rows only while active (a stuck sensor may sit at its own value).
        assert not changed[~labels].any()
        assert changed[labels].mean() > 0.5
    # The block itself is left as it was.
    assert np.array_equal(block, _normal(200))


def test_injection_is_reproducible_per_seed() -> None:
    block = _normal(120)
    cavitation = next(s for s in standard_scenarios(len(block), "A") if s.kind == "cavitation")
    first, _ = inject(block, cavitation, seed=3)
    again, _ = inject(block, cavitation, seed=3)
    other, _ = inject(block, cavitation, seed=4)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
