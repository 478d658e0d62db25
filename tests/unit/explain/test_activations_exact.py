"""`activation_stats`, `gini` and `hoyer` take |x| once and sort float32 features as float32: the same values,
bit for bit, as the first implementation (kept here) on float32 / float64 / integer / degenerate tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgecam.explain.activations import activation_stats, gini, histogram, hoyer


def _hoyer_reference(x: np.ndarray) -> float:
    a = np.abs(np.asarray(x, dtype=np.float64).ravel())
    if not np.isfinite(a).all():
        return float("nan")
    n = a.size
    l2 = math.sqrt(float(a @ a))
    if n <= 1 or l2 == 0.0:
        return 1.0
    return float(np.clip((math.sqrt(n) - a.sum() / l2) / (math.sqrt(n) - 1), 0.0, 1.0))


def _gini_reference(x: np.ndarray) -> float:
    a = np.sort(np.abs(np.asarray(x, dtype=np.float64).ravel()))
    if not np.isfinite(a).all():
        return float("nan")
    n = a.size
    total = a.sum()
    if n == 0:
        return float("nan")
    if total == 0.0:
        return 1.0 - 1.0 / n
    k = np.arange(1, n + 1)
    return float(np.clip(1.0 - 2.0 * np.sum((a / total) * (n - k + 0.5) / n), 0.0, 1.0))


def _stats_reference(x: np.ndarray, bins: int = 64, value_range: tuple[float, float] | None = None) -> dict[str, float]:
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size == 0 or not np.isfinite(a).all():
        return {k: float("nan") for k in ("mean", "std", "entropy", "hoyer", "gini", "zero_fraction")}
    counts, _ = histogram(a, bins, value_range)
    p = counts[counts > 0] / counts.sum()
    return {"mean": float(a.mean()), "std": float(a.std()), "entropy": float(max(0.0, -np.sum(p * np.log2(p)))),
            "hoyer": _hoyer_reference(a), "gini": _gini_reference(a), "zero_fraction": float(np.mean(a == 0.0))}


def _tensors() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    relu = np.maximum(rng.normal(size=(160, 7, 7)), 0)
    with_nan = rng.normal(size=(4, 3, 3)).astype(np.float32)
    with_nan[1, 1, 1] = np.nan
    return [relu.astype(np.float32), relu, rng.normal(size=(32, 5, 5)).astype(np.float32), -relu.astype(np.float32),
            np.zeros((8, 3, 3), np.float32), np.full((4, 2, 2), -3.0), rng.integers(-5, 5, (10, 4, 4)), rng.integers(0, 255, (6, 4, 4), dtype=np.uint8),
            (rng.normal(size=300) * 1e-3).astype(np.float16), with_nan, np.array([np.inf, 1.0], np.float32), np.array([0.0, -0.0, 2.0]), np.zeros(0)]


@pytest.mark.parametrize("i", range(len(_tensors())))
def test_equal_to_the_first_implementation(i: int) -> None:
    x = _tensors()[i]
    before = x.copy()
    for fn, ref in ((hoyer, _hoyer_reference), (gini, _gini_reference)):
        got, want = fn(x), ref(x)
        assert got == want or (math.isnan(got) and math.isnan(want)), (fn.__name__, got, want)
    for kwargs in ({}, {"bins": 8, "value_range": (-1.0, 2.0)}):
        got_s, want_s = activation_stats(x, **kwargs), _stats_reference(x, **kwargs)
        for k in want_s:
            assert got_s[k] == want_s[k] or (math.isnan(got_s[k]) and math.isnan(want_s[k])), (k, got_s[k], want_s[k])
    np.testing.assert_array_equal(x, before)
