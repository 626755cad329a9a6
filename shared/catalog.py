"""The 50 core sensors of a rig (``docs/manifest.md`` §3.3): category, unit, typical value,
plausible range and default thresholds.

This module is the single source of truth for sensor names and their order. The order is
part of the wire contract: the simulator's Modbus register map, the PostgreSQL columns and
the ML feature vectors all follow ``CORE_SENSOR_NAMES``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Category(enum.StrEnum):
    ENVIRONMENTAL = "environmental"
    MECHANICAL = "mechanical"
    THERMAL = "thermal"
    ELECTRICAL = "electrical"
    FLUID = "fluid"


class ThresholdState(enum.StrEnum):
    NOMINAL = "nominal"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class SensorSpec:
    """One core sensor.

    ``low``/``high`` are the critical limits. The warning band is the rule of
    ``docs/manifest.md`` §4.2 (below ``low * 1.1`` or above ``high * 0.9``) unless
    ``warn_low``/``warn_high`` are set:
    the multiplicative rule misbehaves for narrow bands around a large value (mains
    frequency 58..62 Hz would always warn), so those sensors carry an explicit band.
    """

    name: str
    category: Category
    unit: str
    typical: float
    min_value: float
    max_value: float
    low: float
    high: float
    warn_low: float | None = None
    warn_high: float | None = None

    def thresholds(self) -> Thresholds:
        return Thresholds(self.low, self.high, self.warn_low, self.warn_high)


@dataclass(frozen=True, slots=True)
class Thresholds:
    low: float | None
    high: float | None
    warn_low: float | None = None
    warn_high: float | None = None

    @property
    def effective_warn_low(self) -> float | None:
        if self.warn_low is not None:
            return self.warn_low
        if self.low is None:
            return None
        # Manifest rule ``low * 1.1``, written so it also widens the band for negative limits.
        return self.low + 0.1 * abs(self.low)

    @property
    def effective_warn_high(self) -> float | None:
        if self.warn_high is not None:
            return self.warn_high
        if self.high is None:
            return None
        return self.high - 0.1 * abs(self.high)

    def classify(self, value: float | None) -> ThresholdState | None:
        """The colour rule of ``docs/manifest.md`` §4.2; ``None`` for a missing or non-finite
        value."""
        if value is None or not math.isfinite(value):
            return None
        if (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        ):
            return ThresholdState.CRITICAL
        wl, wh = self.effective_warn_low, self.effective_warn_high
        if (wl is not None and value < wl) or (wh is not None and value > wh):
            return ThresholdState.WARNING
        return ThresholdState.NOMINAL


_E, _M, _T, _EL, _F = (
    Category.ENVIRONMENTAL,
    Category.MECHANICAL,
    Category.THERMAL,
    Category.ELECTRICAL,
    Category.FLUID,
)

# name, category, unit, typical, plausible min, plausible max, low, high[, warn_low, warn_high]
CORE_SENSORS: tuple[SensorSpec, ...] = (
    # Environmental
    SensorSpec("temperature", _E, "°F", 72.5, -40.0, 200.0, 55.0, 90.0),
    SensorSpec("pressure", _E, "bar", 10.2, 0.0, 30.0, 6.0, 14.0),
    SensorSpec("humidity", _E, "%RH", 45.0, 0.0, 100.0, 20.0, 70.0),
    SensorSpec("ambient_temp", _E, "°F", 68.0, -40.0, 160.0, 40.0, 95.0),
    SensorSpec("dew_point", _E, "°F", 52.0, -40.0, 120.0, 30.0, 70.0),
    SensorSpec("air_quality_index", _E, "AQI", 85.0, 0.0, 500.0, 0.0, 150.0),
    SensorSpec("co2_level", _E, "ppm", 420.0, 250.0, 5000.0, 350.0, 1000.0),
    SensorSpec("particle_count", _E, "#/m³", 150.0, 0.0, 10000.0, 0.0, 500.0),
    SensorSpec("noise_level", _E, "dB", 72.0, 20.0, 140.0, 40.0, 90.0),
    SensorSpec("light_intensity", _E, "lux", 500.0, 0.0, 5000.0, 200.0, 1000.0),
    # Mechanical
    SensorSpec("vibration", _M, "mm/s", 2.1, 0.0, 50.0, 0.0, 7.0),
    SensorSpec("rpm", _M, "RPM", 3200.0, 0.0, 6000.0, 1000.0, 4200.0),
    SensorSpec("torque", _M, "N·m", 45.5, 0.0, 200.0, 10.0, 80.0),
    SensorSpec("shaft_alignment", _M, "mm", 0.02, 0.0, 1.0, 0.0, 0.08),
    SensorSpec("bearing_temp", _M, "°F", 145.0, -40.0, 350.0, 60.0, 180.0),
    SensorSpec("motor_current", _M, "A", 25.5, 0.0, 150.0, 5.0, 40.0),
    SensorSpec("belt_tension", _M, "lbf", 85.0, 0.0, 250.0, 60.0, 110.0),
    SensorSpec("gear_wear", _M, "%", 12.0, 0.0, 100.0, 0.0, 60.0),
    SensorSpec("coupling_temp", _M, "°F", 130.0, -40.0, 350.0, 60.0, 170.0),
    SensorSpec("lubrication_pressure", _M, "psi", 35.0, 0.0, 120.0, 20.0, 60.0),
    # Thermal
    SensorSpec("coolant_temp", _T, "°F", 190.0, -40.0, 300.0, 150.0, 220.0),
    SensorSpec("exhaust_temp", _T, "°F", 425.0, -40.0, 1400.0, 250.0, 600.0),
    SensorSpec("oil_temp", _T, "°F", 185.0, -40.0, 350.0, 140.0, 230.0),
    SensorSpec("radiator_temp", _T, "°F", 175.0, -40.0, 300.0, 130.0, 210.0),
    SensorSpec("thermal_efficiency", _T, "ratio", 0.85, 0.0, 1.0, 0.6, 0.98, None, 0.95),
    SensorSpec("heat_dissipation", _T, "W", 2500.0, 0.0, 12000.0, 1000.0, 4000.0),
    SensorSpec("inlet_temp", _T, "°F", 65.0, -40.0, 250.0, 40.0, 100.0),
    SensorSpec("outlet_temp", _T, "°F", 185.0, -40.0, 350.0, 140.0, 220.0),
    SensorSpec("core_temp", _T, "°F", 195.0, -40.0, 400.0, 150.0, 240.0),
    SensorSpec("surface_temp", _T, "°F", 145.0, -40.0, 350.0, 90.0, 190.0),
    # Electrical
    SensorSpec("voltage", _EL, "V", 120.0, 0.0, 500.0, 100.0, 140.0),
    SensorSpec("current", _EL, "A", 25.5, 0.0, 150.0, 5.0, 40.0),
    SensorSpec("power_factor", _EL, "ratio", 0.92, 0.0, 1.0, 0.7, 1.0, 0.8, 0.99),
    SensorSpec("frequency", _EL, "Hz", 60.0, 0.0, 70.0, 58.0, 62.0, 59.5, 60.5),
    SensorSpec("resistance", _EL, "Ω", 0.5, 0.0, 20.0, 0.1, 1.0),
    SensorSpec("capacitance", _EL, "µF", 100.0, 0.0, 1000.0, 50.0, 150.0),
    SensorSpec("inductance", _EL, "mH", 50.0, 0.0, 500.0, 20.0, 80.0),
    SensorSpec("phase_angle", _EL, "°", 15.0, -90.0, 90.0, 0.0, 35.0),
    SensorSpec("harmonic_distortion", _EL, "%THD", 3.2, 0.0, 60.0, 0.0, 8.0),
    SensorSpec("ground_fault", _EL, "A", 0.01, 0.0, 10.0, 0.0, 0.05),
    # Fluid dynamics
    SensorSpec("flow_rate", _F, "L/min", 250.0, 0.0, 800.0, 150.0, 350.0),
    SensorSpec("fluid_pressure", _F, "psi", 85.0, 0.0, 300.0, 50.0, 120.0),
    SensorSpec("viscosity", _F, "cSt", 32.0, 0.0, 300.0, 20.0, 50.0),
    SensorSpec("density", _F, "g/cm³", 0.85, 0.3, 2.0, 0.7, 1.0),
    SensorSpec("reynolds_number", _F, "Re", 4500.0, 0.0, 50000.0, 2300.0, 10000.0),
    SensorSpec("pipe_pressure_drop", _F, "psi", 5.2, 0.0, 60.0, 0.0, 12.0),
    SensorSpec("pump_efficiency", _F, "ratio", 0.88, 0.0, 1.0, 0.6, 1.0, 0.66, 0.97),
    SensorSpec("cavitation_index", _F, "σ", 0.15, 0.0, 2.0, 0.0, 0.5),
    SensorSpec("turbulence", _F, "%", 2.8, 0.0, 30.0, 0.0, 6.0),
    SensorSpec("valve_position", _F, "%", 75.0, 0.0, 100.0, 10.0, 95.0),
)

CORE_SENSOR_NAMES: tuple[str, ...] = tuple(s.name for s in CORE_SENSORS)
SENSORS_BY_NAME: dict[str, SensorSpec] = {s.name: s for s in CORE_SENSORS}
SENSOR_INDEX: dict[str, int] = {name: i for i, name in enumerate(CORE_SENSOR_NAMES)}

# The dashboard's eight priority tiles (``docs/manifest.md`` §4.2), in display order.
PRIORITY_SENSORS: tuple[str, ...] = (
    "temperature",
    "pressure",
    "voltage",
    "current",
    "rpm",
    "vibration",
    "coolant_temp",
    "flow_rate",
)

DEFAULT_MACHINES: tuple[str, ...] = ("A", "B", "C")


def sensors_in(category: Category) -> tuple[SensorSpec, ...]:
    return tuple(s for s in CORE_SENSORS if s.category is category)
