"""Statistics for summary.csv: bootstrap confidence intervals and paired Wilcoxon tests. NaNs are dropped (and counted elsewhere), never raised on."""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np


def bootstrap_ci(values: Sequence[float] | np.ndarray, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap (1 - alpha) interval of the mean (Efron & Tibshirani 1993, ch. 13), seeded and
    vectorised. NaNs dropped; (nan, nan) with fewer than 2 values."""
    a = np.asarray(values, dtype=np.float64).ravel()
    a = a[~np.isnan(a)]
    if a.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // a.size)  # bound the (resamples x n) index matrix
    for i in range(0, n_boot, chunk):
        k = min(chunk, n_boot - i)
        means[i : i + k] = a[rng.integers(0, a.size, (k, a.size))].mean(1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def paired_wilcoxon(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test (Wilcoxon 1945) on the pairs (a_i, b_i); pairs
    with a NaN are dropped. nan when fewer than 2 pairs remain or every difference is zero (no evidence
    either way; scipy would divide by zero)."""
    from scipy.stats import wilcoxon

    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired_wilcoxon: a and b must pair up, got {x.shape} and {y.shape}")
    keep = ~(np.isnan(x) | np.isnan(y))
    d = x[keep] - y[keep]
    if d.size < 2 or not np.any(d != 0):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(wilcoxon(d, zero_method="wilcox").pvalue)
