"""The detection step: every reading is scored before it is buffered and forwarded, and the
result travels in the message. This step uses the sensor thresholds (catalog defaults, with
per-machine overrides); the ML detectors plug in behind the same ``Detector`` interface."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from shared.catalog import SENSORS_BY_NAME, Thresholds
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
        # Per machine: sensor -> (low, high, warn_low, warn_high) as plain floats (inf for
        # "no limit"), so scoring is a few comparisons per value on the hot path.
        self._limits: dict[str, dict[str, tuple[float, float, float, float]]] = {}

    def thresholds_for(self, machine_id: str, sensor: str) -> Thresholds | None:
        machine = self._overrides.get(machine_id)
        if machine and sensor in machine:
            return machine[sensor]
        return self._defaults.get(sensor)

    def _limits_for(self, machine_id: str) -> dict[str, tuple[float, float, float, float]]:
        limits = self._limits.get(machine_id)
        if limits is None:
            inf = float("inf")
            limits = {}
            for name in self._defaults:
                t = self.thresholds_for(machine_id, name)
                if t is None:
                    continue
                wl, wh = t.effective_warn_low, t.effective_warn_high
                limits[name] = (
                    -inf if t.low is None else t.low,
                    inf if t.high is None else t.high,
                    -inf if wl is None else wl,
                    inf if wh is None else wh,
                )
            self._limits[machine_id] = limits
        return limits

    def score(self, reading: Reading) -> dict[str, Any]:
        limits = self._limits_for(reading.machine_id)
        critical: list[str] = []
        warning: list[str] = []
        worst = 0.0
        for name, value in reading.values.items():
            bounds = limits.get(name)
            if bounds is None or value is None:
                continue
            low, high, warn_low, warn_high = bounds
            if value < low or value > high:
                critical.append(name)
                band = (high - low) if high - low not in (0.0, float("inf")) else 1.0
                worst = max(worst, max(low - value, value - high) / abs(band))
            elif value < warn_low or value > warn_high:
                warning.append(name)
        return {
            "method": self.method,
            "is_anomaly": bool(critical),
            "score": round(worst, 6),
            "sensors": critical,
            "warnings": warning,
        }
