"""The cloud's threshold verdict has a vectorised path for the readings that trip nothing
(``CloudScorer._threshold_verdicts``); the per-reading rule (``_threshold_verdict``) stays the
definition. Random readings and limits (edge values, nulls, missing and custom sensors,
inverted, infinite and equal bounds) must get the same verdict, field for field and in the
same order, from both. Pure Python: the limits are put in the scorer's cache, no database."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.scoring import CloudScorer
from shared.catalog import CORE_SENSOR_NAMES
from shared.message import Reading

NOW = datetime(2026, 11, 29, tzinfo=UTC)
SENSORS = list(CORE_SENSOR_NAMES[:6])
CUSTOM = ["hydraulic_pressure", "oil_level"]
MACHINES = ["A", "B", "C"]

values = st.one_of(
    st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.0, 10.0, 100.0, 1e12, -1e12, 5e-324]),
)
bounds = st.one_of(
    st.sampled_from([-math.inf, math.inf, 0.0, -0.0, 1.0, 10.0, 100.0]),
    st.floats(min_value=-1e3, max_value=1e3, allow_nan=False),
)
limits = st.dictionaries(
    st.sampled_from(SENSORS + CUSTOM), st.tuples(bounds, bounds, bounds, bounds), max_size=8
)
readings = st.builds(
    lambda machine, seq, core, custom: Reading(machine, "e1", seq, NOW, core, custom),
    st.sampled_from(MACHINES),
    st.integers(min_value=0, max_value=10**6),
    st.dictionaries(st.sampled_from(SENSORS), st.none() | values, min_size=1),
    st.one_of(
        st.just({}),
        st.dictionaries(st.sampled_from(CUSTOM), values, max_size=2),
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    per_machine=st.fixed_dictionaries({m: limits for m in MACHINES}),
    batch=st.lists(readings, max_size=30),
)
def test_vectorised_verdicts_equal_the_per_reading_rule(
    per_machine: dict[str, dict[str, tuple[float, float, float, float]]], batch: list[Reading]
) -> None:
    scorer = CloudScorer(public_key=b"")
    scorer._limits.update(per_machine)  # cached limits: _limits_for never asks the database
    conn = None
    fast = scorer._threshold_verdicts(conn, batch)  # type: ignore[arg-type]
    slow = [scorer._threshold_verdict(conn, r) for r in batch]  # type: ignore[arg-type]
    # Serialised: key order, list order and -0.0 against 0.0 all count.
    assert [orjson.dumps(v) for v in fast] == [orjson.dumps(v) for v in slow]


def test_an_all_clear_reading_takes_the_constant_verdict_and_a_tripped_one_the_rule() -> None:
    scorer = CloudScorer(public_key=b"")
    name = SENSORS[0]
    scorer._limits["A"] = {name: (0.0, 100.0, 10.0, 90.0)}
    ok = Reading("A", "e1", 1, NOW, {name: 50.0})
    warn = Reading("A", "e1", 2, NOW, {name: 95.0})
    crit = Reading("A", "e1", 3, NOW, {name: 150.0})
    verdicts = scorer._threshold_verdicts(None, [ok, warn, crit])  # type: ignore[arg-type]
    assert [v["is_anomaly"] for v in verdicts] == [False, False, True]
    assert verdicts[1]["warnings"] == [name] and verdicts[2]["sensors"] == [name]
