import re
from importlib import resources

from shared.catalog import (
    CORE_SENSOR_NAMES,
    CORE_SENSORS,
    PRIORITY_SENSORS,
    Category,
    Thresholds,
    ThresholdState,
    sensors_in,
)


def test_fifty_core_sensors_ten_per_category() -> None:
    assert len(CORE_SENSORS) == 50
    assert len(set(CORE_SENSOR_NAMES)) == 50
    for category in Category:
        assert len(sensors_in(category)) == 10, category


def test_typical_values_are_nominal_and_plausible() -> None:
    for spec in CORE_SENSORS:
        assert spec.min_value <= spec.typical <= spec.max_value, spec.name
        assert spec.low < spec.high, spec.name
        assert spec.thresholds().classify(spec.typical) is ThresholdState.NOMINAL, spec.name


def test_manifest_colour_rule() -> None:
    limits = Thresholds(low=50.0, high=100.0)
    assert limits.classify(49.9) is ThresholdState.CRITICAL
    assert limits.classify(54.0) is ThresholdState.WARNING  # below low * 1.1
    assert limits.classify(75.0) is ThresholdState.NOMINAL
    assert limits.classify(91.0) is ThresholdState.WARNING  # above high * 0.9
    assert limits.classify(100.1) is ThresholdState.CRITICAL
    assert limits.classify(float("nan")) is None


def test_priority_tiles_are_core_sensors() -> None:
    assert set(PRIORITY_SENSORS) <= set(CORE_SENSOR_NAMES)
    assert len(PRIORITY_SENSORS) == 8


def test_readings_table_has_the_catalog_columns_in_order() -> None:
    sql = resources.files("cloud").joinpath("migrations/0001_readings.sql").read_text()
    columns = re.findall(r"^\s{4}([a-z_0-9]+) DOUBLE PRECISION", sql, re.MULTILINE)
    assert tuple(columns) == CORE_SENSOR_NAMES
