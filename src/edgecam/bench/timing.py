"""Latency statistics from raw samples (kept raw in latency.parquet; these are derived, never the source)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def latency_stats(samples_s: Sequence[float]) -> dict[str, float]:
    """p50 / p90 / p99 / mean / std / min in milliseconds (np.percentile, linear interpolation)."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    if ms.size == 0:
        return {k: float("nan") for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms")}
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
        "min_ms": float(ms.min()),
    }
