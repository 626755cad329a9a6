"""The detection step: every reading is scored before it is buffered and forwarded, and the
result travels in the message. This step uses the sensor thresholds (catalog defaults, with
per-machine overrides); the ML detectors plug in behind the same ``Detector`` interface."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from shared.catalog import SENSORS_BY_NAME, Thresholds, ThresholdState
from shared.message import Reading


class Detector(Protocol):
    def score(self, reading: Reading) -> dict[str, Any]: ...


class ThresholdDetector:
    """Flags a reading whose core values are past their critical limits.

    ``score`` is the largest excursion beyond a limit as a fraction of the sensor's band
    (0 when everything is inside), so operators can rank readings by how far out they are.
    """

    method = "thresholds"

    def __init__(self, overrides: Mapping[str, Mapping[str, Thresholds]] | None = None) -> None:
        self._defaults = {name: spec.thresholds() for name, spec in SENSORS_BY_NAME.items()}
        self._overrides = {m: dict(t) for m, t in (overrides or {}).items()}

    def thresholds_for(self, machine_id: str, sensor: str) -> Thresholds | None:
        machine = self._overrides.get(machine_id)
        if machine and sensor in machine:
            return machine[sensor]
        return self._defaults.get(sensor)

    def score(self, reading: Reading) -> dict[str, Any]:
        critical: list[str] = []
        warning: list[str] = []
        worst = 0.0
        for name, value in reading.values.items():
            limits = self.thresholds_for(reading.machine_id, name)
            if limits is None or value is None:
                continue
            state = limits.classify(value)
            if state is ThresholdState.CRITICAL:
                critical.append(name)
                low = limits.low if limits.low is not None else value
                high = limits.high if limits.high is not None else value
                band = (high - low) or 1.0
                excursion = max(low - value, value - high, 0.0) / abs(band)
                worst = max(worst, excursion)
            elif state is ThresholdState.WARNING:
                warning.append(name)
        return {
            "method": self.method,
            "is_anomaly": bool(critical),
            "score": round(worst, 6),
            "sensors": critical,
            "warnings": warning,
        }
