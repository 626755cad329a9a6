"""Decision rules and sensor shares: one implementation for training, edge and validation."""

from __future__ import annotations

import numpy as np
import pytest

from detector import strategies as st


def test_hybrid_rules() -> None:
    normalized = {
        st.ISOLATION_FOREST: np.array([0.5, 2.0, np.nan]),
        st.LSTM: np.array([1.5, 0.5, 3.0]),
        st.PCA: np.array([1.0, 1.0, 1.0]),
    }
    weights = {st.ISOLATION_FOREST: 0.5, st.LSTM: 0.5, st.PCA: 0.0}
    assert st.combine("hybrid_or", normalized, weights).tolist() == [1.5, 2.0, 3.0]
    assert st.combine("hybrid_and", normalized, weights).tolist() == [0.5, 0.5, 3.0]
    assert st.combine("hybrid_smart", normalized, weights).tolist() == [1.0, 1.25, 3.0]
    with pytest.raises(ValueError, match="unknown strategy"):
        st.combine("nope", normalized, weights)


def test_shares_scale_rows_to_one_and_leave_empty_rows_at_zero() -> None:
    values = np.array(
        [
            [1.0, 3.0, 0.0],
            [0.0, 0.0, 0.0],  # nothing stands out: no sensor is named
            [np.nan, np.nan, np.nan],  # no opinion yet (an LSTM before its first window)
            [-2.0, 1.0, np.nan],  # negative parts pull towards normal: no share
        ]
    )
    out = st.shares(values)
    assert out.tolist() == [[0.25, 0.75, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    assert st.shares(np.array([2.0, 2.0])).tolist() == [0.5, 0.5]
    assert st.top_contributors_rows(out[1:3], ["a", "b", "c"]) == [[], []]


def test_combined_shares_follow_the_strategy() -> None:
    normalized = {st.ISOLATION_FOREST: np.array([2.0, 0.0]), st.LSTM: np.array([np.nan, 0.0])}
    shares = {
        st.ISOLATION_FOREST: np.array([[1.0, 0.0], [0.0, 0.0]]),
        st.LSTM: np.array([[np.nan, np.nan], [0.5, 0.5]]),
    }
    weights = {st.ISOLATION_FOREST: 0.5, st.LSTM: 0.5}
    out = st.combine_shares("hybrid_or", normalized, shares, weights)
    # Row 0: only the forest has an opinion; row 1: no component is above 0.
    assert out.tolist() == [[1.0, 0.0], [0.0, 0.0]]
