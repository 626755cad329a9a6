import numpy as np

from shared.catalog import CORE_SENSORS, SENSOR_INDEX, ThresholdState
from simulator.signals import MachineSignals, MachineState


def _run(machine: str, seed: int, steps: int, dt: float = 1.0) -> np.ndarray:
    signals = MachineSignals(machine, seed)
    return np.array([signals.step(i * dt) for i in range(steps)])


def test_same_seed_same_signals_and_machines_differ() -> None:
    assert np.array_equal(_run("A", 3, 50), _run("A", 3, 50))
    assert not np.array_equal(_run("A", 3, 50), _run("B", 3, 50))
    assert not np.array_equal(_run("A", 3, 50), _run("A", 4, 50))


def test_values_plausible_and_mostly_nominal() -> None:
    series = _run("A", 1, 1000)
    nominal = total = 0
    for i, spec in enumerate(CORE_SENSORS):
        assert series[:, i].min() >= spec.min_value and series[:, i].max() <= spec.max_value
        limits = spec.thresholds()
        states = [limits.classify(v) for v in series[:, i]]
        nominal += sum(s is ThresholdState.NOMINAL for s in states)
        total += len(states)
        assert series[:, i].std() > 0, f"{spec.name} never changes"
    assert nominal / total > 0.95


def test_rpm_drives_vibration_and_stopping_stops_rotation() -> None:
    signals = MachineSignals("A", 5)
    rpm, vib = SENSOR_INDEX["rpm"], SENSOR_INDEX["vibration"]
    running = np.array([signals.step(i) for i in range(200)])
    assert np.corrcoef(running[:, rpm], running[:, vib])[0, 1] > 0.3
    signals.state = MachineState.STOPPED
    stopped = signals.step(201)
    assert stopped[rpm] == 0.0 and stopped[vib] == 0.0
