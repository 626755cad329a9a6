"""Stuck-sensor and drift checks: limits learned from normal data, the same verdict whatever
the batch sizes, and the manifest round trip the edge depends on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detector.checks import FaultChecks, check_contributors, check_contributors_rows, with_checks
from detector.drift import fit_drift
from detector.stuck import StuckParams, fit_stuck, run_lengths

SENSORS = ["noisy", "quantised", "slow"]


def normal_stream(n: int, seed: int = 3) -> np.ndarray:
    """A noisy analogue sensor, a quantised one that repeats for a few readings, and a slow
    mean-reverting one."""
    rng = np.random.default_rng(seed)
    noisy = 50.0 + rng.normal(0.0, 1.0, n)
    quantised = np.round(20.0 + np.cumsum(rng.normal(0.0, 0.15, n)) * 0.1, 0)
    slow = np.zeros(n)
    for i in range(1, n):
        slow[i] = 0.99 * slow[i - 1] + rng.normal(0.0, 0.1)
    return np.column_stack([noisy, quantised + 0.5 * np.sin(np.arange(n) / 7.0).round(), slow])


def checks_for(train: np.ndarray, drift: bool = True) -> FaultChecks:
    return FaultChecks(train.shape[1], fit_stuck(train), fit_drift(train) if drift else None)


def test_run_lengths_continue_across_batches_and_reset_on_missing() -> None:
    x = np.array([[1.0], [1.0], [1.0], [2.0], [np.nan], [np.nan], [2.0], [2.0]], np.float32)
    last, run = np.array([1.0], np.float32), np.array([4.0])
    assert run_lengths(x, last, run)[:, 0].tolist() == [5, 6, 7, 0, 0, 0, 0, 1]


def test_limits_follow_what_each_sensor_normally_does() -> None:
    train = normal_stream(3000)
    params = fit_stuck(train)
    # A noisy sensor never repeats: the minimum limit; a quantised one repeats normally.
    assert params.run_limit[0] == 10
    assert params.run_limit[1] > 10
    assert params.range_floor[0] > 0
    # A quantised sensor's flat windows are normal short runs: only the run limit judges it.
    assert params.range_floor[1] == 0


def test_no_alarm_on_unseen_normal_data() -> None:
    stream = normal_stream(6000)
    checks = checks_for(stream[:4000])
    scores = checks.scores(stream[4000:], checks.new_state())
    assert scores.max() < 1.0


def test_a_stuck_sensor_is_flagged_within_the_run_limit_and_named() -> None:
    stream = normal_stream(5000)
    checks = checks_for(stream[:4000], drift=False)
    faulty = stream[4000:].copy()
    faulty[300:, 0] = faulty[300, 0]
    scores = checks.scores(faulty, checks.new_state())
    flagged = np.flatnonzero(scores.max(axis=1) > 1.0)
    assert flagged.size and 300 < flagged[0] <= 300 + 11
    assert flagged[0] >= 300 and scores[flagged[0]].argmax() == 0
    named = check_contributors(scores[flagged[0]], SENSORS)
    assert named[0]["sensor"] == "noisy"


def test_a_slow_drift_is_flagged() -> None:
    stream = normal_stream(5000)
    checks = checks_for(stream[:4000])
    faulty = stream[4000:].copy()
    faulty[200:, 0] += np.linspace(0.0, 8.0, 800)  # 8 sigma over 800 readings
    scores = checks.scores(faulty, checks.new_state())
    flagged = np.flatnonzero(scores.max(axis=1) > 1.0)
    assert flagged.size and flagged[0] > 200
    assert scores[flagged[0]].argmax() == 0


def test_batch_sizes_never_change_a_score() -> None:
    stream = normal_stream(4600)
    checks = checks_for(stream[:4000])
    faulty = stream[4000:].copy()
    faulty[100:200, 1] = faulty[100, 1]
    faulty[150, 2] = np.nan
    whole = checks.scores(faulty, checks.new_state())
    state = checks.new_state()
    parts = [checks.scores(faulty[a:b], state) for a, b in [(0, 1), (1, 17), (17, 18), (18, 600)]]
    assert np.allclose(np.vstack(parts), whole)


def test_manifest_round_trip_is_json_and_checked() -> None:
    checks = checks_for(normal_stream(3000))
    doc = json.loads(json.dumps({"fault_checks": checks.to_manifest()}))
    again = FaultChecks.from_manifest(doc, 3)
    assert again.stuck is not None and again.drift is not None and checks.stuck is not None
    assert np.array_equal(again.stuck.run_limit, checks.stuck.run_limit)
    assert not FaultChecks.from_manifest({}, 3).active  # bundles from before the checks
    with pytest.raises(ValueError, match=r"stuck\.run_limit"):
        StuckParams.from_manifest(doc["fault_checks"]["stuck"], 4)


def test_short_training_learns_no_drift_band() -> None:
    assert fit_drift(normal_stream(400)) is None


def test_warm_up_stays_unscored_unless_a_check_flags() -> None:
    hybrid = np.array([np.nan, np.nan, 0.5, 0.5])
    checks = np.array([[0.2], [3.0], [0.2], [2.0]])
    out = with_checks(hybrid, checks)
    assert np.isnan(out[0]) and out[1:].tolist() == [3.0, 0.5, 2.0]


def test_batched_contributors_equal_the_per_row_ones_ties_included() -> None:
    """The scorer names a batch's check-flagged sensors with one numpy pass; the lists must
    be the per-row ones to the bit, capped (tied) stuck scores and missing values included."""
    rng = np.random.default_rng(11)
    names = [f"s{i}" for i in range(12)]
    for case in range(60):
        rows = rng.random((int(rng.integers(0, 20)), len(names))) * [0.5, 2.0, 8.0, 30.0][case % 4]
        if case % 3 == 0:
            rows = np.minimum(rows, 10.0)  # the stuck check's cap: ties
        if case % 5 == 0:
            rows[rng.random(rows.shape) < 0.2] = np.nan
        expected = [check_contributors(row, names) for row in rows]
        assert check_contributors_rows(rows, names) == expected
