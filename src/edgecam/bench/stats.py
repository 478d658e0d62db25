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


def bootstrap_diff_ci(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, paired: bool, stat: str = "mean",
                      n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """stat(b) - stat(a) and its percentile-bootstrap (1 - alpha) interval (Efron & Tibshirani 1993):
    pairs resampled together when `paired` (same images in both runs), each sample on its own otherwise.
    `stat` is "mean" or "median" (latency). NaNs dropped (pairwise when paired)."""
    fn = {"mean": np.mean, "median": np.median}[stat]
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if paired:
        if x.shape != y.shape:
            raise ValueError(f"paired samples must have the same length, got {x.size} and {y.size}")
        keep = ~(np.isnan(x) | np.isnan(y))
        x, y = x[keep], y[keep]
    else:
        x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    if x.size < 2 or y.size < 2:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    if paired:
        idx = rng.integers(0, x.size, (n_boot, x.size))
        diffs = fn(y[idx], axis=1) - fn(x[idx], axis=1)
    else:
        diffs = fn(y[rng.integers(0, y.size, (n_boot, y.size))], axis=1) - fn(x[rng.integers(0, x.size, (n_boot, x.size))], axis=1)
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    return float(fn(y) - fn(x)), float(lo), float(hi)
