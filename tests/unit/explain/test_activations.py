"""Activation statistics (Rogers et al. 2023): hand values, bounds, degenerate tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from edgecam.explain.activations import activation_stats, gini, histogram, hoyer


def test_hoyer_hand_values() -> None:
    assert hoyer(np.array([0.0, 0.0, 3.0, 0.0])) == pytest.approx(1.0)  # one non-zero
    assert hoyer(np.array([2.0, -2.0, 2.0, 2.0])) == pytest.approx(0.0)  # equal magnitudes
    # [1, 1, 0, 0]: L1 = 2, L2 = sqrt 2 -> (2 - sqrt 2) / (2 - 1)
    assert hoyer(np.array([1.0, 1.0, 0.0, 0.0])) == pytest.approx(2 - math.sqrt(2))
    assert hoyer(np.zeros(5)) == 1.0


def test_gini_hand_values() -> None:
    assert gini(np.ones(4)) == pytest.approx(0.0)
    assert gini(np.array([0.0, 0.0, 0.0, 5.0])) == pytest.approx(0.75)  # 1 - 1/n
    # [1, 3] sorted: 1 - 2 * (1/4 * (2 - 1 + .5) / 2 + 3/4 * (2 - 2 + .5) / 2) = 1 - 2 * (3/16 + 3/16) = .25
    assert gini(np.array([3.0, 1.0])) == pytest.approx(0.25)


def test_entropy_and_histogram() -> None:
    x = np.array([0.0, 0.0, 1.0, 1.0])  # two equally filled bins -> 1 bit
    st_ = activation_stats(x, bins=2)
    assert st_["entropy"] == pytest.approx(1.0) and st_["zero_fraction"] == 0.5 and st_["std"] == pytest.approx(0.5)
    assert activation_stats(np.full(10, 3.0))["entropy"] == 0.0
    counts, edges = histogram(np.array([-5.0, 0.5, 9.0]), bins=2, value_range=(0.0, 1.0))  # clipped into end bins
    assert counts.tolist() == [1, 2] and edges.tolist() == [0.0, 0.5, 1.0]
    assert all(math.isnan(v) for v in activation_stats(np.array([1.0, np.nan])).values())


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, array_shapes(min_dims=1, max_dims=3, max_side=6), elements=st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False)))
def test_bounds_and_no_mutation(x: np.ndarray) -> None:
    x0 = x.copy()
    s = activation_stats(x)
    assert 0.0 <= s["hoyer"] <= 1.0 and 0.0 <= s["gini"] < 1.0
    assert 0.0 <= s["entropy"] <= math.log2(64) + 1e-9 and s["std"] >= 0
    np.testing.assert_array_equal(x, x0)


def test_a_range_too_narrow_for_the_bins_counts_as_constant() -> None:
    """Found by hypothesis on a fresh clone: with denormals flushed to zero (torch.set_flush_denormal, which
    the pipeline sets), [0, 2.2e-308] cannot hold 64 distinct float64 bin edges and np.histogram raised."""
    torch = pytest.importorskip("torch")
    tiny = np.float64(np.finfo(np.float64).tiny)
    was_flushing = bool(tiny / 4 == 0.0)  # torch has no getter: probe the CPU's flush-to-zero mode
    torch.set_flush_denormal(True)
    try:
        assert tiny / 4 == 0.0  # the mode the failure needs is on
        x = np.array([0.0, 1e-310, tiny])
        counts, edges = histogram(x)
        assert counts.sum() == 3 and np.all(np.diff(edges) > 0)
        s = activation_stats(x)
        assert s["entropy"] == 0.0 and s["std"] >= 0.0
    finally:
        torch.set_flush_denormal(was_flushing)
