"""Statistics of a feature tensor, to compare a quantized model's activations with fp32's (Rogers et al.
2023, "Quantized XAI", compared activation entropy, spread and sparsity, and their histograms).

Pure numpy; inputs are never modified. A tensor holding NaN/Inf gives NaN statistics.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["activation_stats", "gini", "histogram", "hoyer"]


def histogram(x: np.ndarray, bins: int = 64, value_range: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(counts, edges) of the finite values; pass the fp32 tensor's range so quantized histograms share edges.
    Values outside `value_range` are clipped into the end bins."""
    a = np.asarray(x, dtype=np.float64).ravel()
    a = a[np.isfinite(a)]
    if value_range is None:
        value_range = (float(a.min()), float(a.max())) if a.size else (0.0, 1.0)
    lo, hi = value_range
    if not hi > lo or not np.all(np.diff(np.linspace(lo, hi, bins + 1)) > 0):  # constant, or a range too narrow for
        hi = lo + 1.0  # `bins` distinct float64 edges (e.g. [0, 2e-308]): one bin holds everything, as for a constant
    return np.histogram(np.clip(a, lo, hi), bins=bins, range=(lo, hi))


def _abs64(x: np.ndarray) -> np.ndarray:
    """|x| as a flat float64 array (abs taken before the widening: the same values, half the bytes)."""
    a = np.asarray(x)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    return np.abs(a.ravel())


def hoyer(x: np.ndarray) -> float:
    """Hoyer sparsity (Hoyer 2004, eq. 1): (sqrt(n) - L1/L2) / (sqrt(n) - 1), in [0, 1]; 1 = a single
    non-zero, 0 = all magnitudes equal. An all-zero tensor counts as 1 (maximally sparse); n = 1 gives 1."""
    return _hoyer(np.abs(np.asarray(x, dtype=np.float64).ravel()))


def _hoyer(a: np.ndarray) -> float:
    """`hoyer` of a flat float64 array of magnitudes."""
    if not np.isfinite(a).all():
        return float("nan")
    n = a.size
    l2 = math.sqrt(float(a @ a))
    if n <= 1 or l2 == 0.0:
        return 1.0
    return float(np.clip((math.sqrt(n) - a.sum() / l2) / (math.sqrt(n) - 1), 0.0, 1.0))


def gini(x: np.ndarray) -> float:
    """Gini index of |x| (Hurley & Rickard 2009, Sec. II, with sorted magnitudes c_(k)):
    1 - 2 sum_k (c_(k) / ||c||_1) (n - k + 1/2) / n, in [0, 1 - 1/n]; 0 when all magnitudes are equal,
    1 - 1/n for a single non-zero. An all-zero tensor counts as 1 - 1/n (the limit of one shrinking
    non-zero)."""
    return _gini_sorted(np.sort(_abs64(x)).astype(np.float64, copy=False))


def _gini_sorted(a: np.ndarray) -> float:
    """`gini` of flat float64 magnitudes sorted ascending (float32 sorts to the same order, faster)."""
    if not np.isfinite(a).all():
        return float("nan")
    n = a.size
    total = a.sum()
    if n == 0:
        return float("nan")
    if total == 0.0:
        return 1.0 - 1.0 / n
    k = np.arange(1, n + 1)
    return float(np.clip(1.0 - 2.0 * np.sum((a / total) * (n - k + 0.5) / n), 0.0, 1.0))  # rounding: -2e-16 for equal values


def activation_stats(x: np.ndarray, bins: int = 64, value_range: tuple[float, float] | None = None) -> dict[str, float]:
    """mean, std, entropy (Shannon, bits, of the `bins`-bin histogram), hoyer, gini, zero_fraction of `x`.
    A constant tensor has entropy 0 and std 0."""
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size == 0 or not np.isfinite(a).all():
        return {k: float("nan") for k in ("mean", "std", "entropy", "hoyer", "gini", "zero_fraction")}
    counts, _ = histogram(a, bins, value_range)
    p = counts[counts > 0] / counts.sum()
    mags = _abs64(x)  # float32 stays float32 for the sort
    return {
        "mean": float(a.mean()),
        "std": float(a.std()),
        "entropy": float(max(0.0, -np.sum(p * np.log2(p)))),
        "hoyer": _hoyer(mags.astype(np.float64, copy=False)),
        "gini": _gini_sorted(np.sort(mags).astype(np.float64, copy=False)),
        "zero_fraction": float(np.mean(a == 0.0)),
    }
