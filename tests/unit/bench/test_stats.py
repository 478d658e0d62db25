"""Bootstrap intervals and the paired Wilcoxon test of summary.csv."""

from __future__ import annotations

import math

import numpy as np

from edgecam.bench.stats import bootstrap_ci, paired_wilcoxon


def test_bootstrap_ci_brackets_the_mean_and_is_seeded() -> None:
    x = np.random.default_rng(0).normal(5.0, 1.0, 200)
    lo, hi = bootstrap_ci(x, n_boot=2000, seed=1)
    assert lo < x.mean() < hi
    # the normal-theory interval of the mean is +-1.96 sigma / sqrt(n) ~ +-0.139: the bootstrap is close
    assert abs((hi - lo) / 2 - 1.96 * x.std(ddof=1) / math.sqrt(200)) < 0.03
    assert bootstrap_ci(x, n_boot=2000, seed=1) == (lo, hi)
    assert bootstrap_ci(x, n_boot=2000, seed=2) != (lo, hi)
    assert all(math.isnan(v) for v in bootstrap_ci([1.0, np.nan]))
    assert bootstrap_ci([2.0, 2.0, np.nan]) == (2.0, 2.0)


def test_paired_wilcoxon() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(60)
    assert paired_wilcoxon(a + 0.1, a) < 1e-6  # every pair shifted: clear evidence
    assert paired_wilcoxon(a, a + rng.normal(0, 0.01, 60)) > 0.01
    assert math.isnan(paired_wilcoxon(a, a))  # no differences at all
    assert math.isnan(paired_wilcoxon([1.0, np.nan], [np.nan, 2.0]))
