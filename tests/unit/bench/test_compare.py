"""`edgecam compare`: deltas between two runs with bootstrap intervals, paired on the shared images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from edgecam.bench.compare import compare_runs, to_html
from edgecam.bench.stats import bootstrap_diff_ci


def _run(root: Path, shift: float, latency: float, n: int = 40) -> Path:
    rng = np.random.default_rng(0)  # same per-image values in both runs: the shift is the only difference
    root.mkdir()
    cc = np.clip(rng.normal(0.9, 0.05, n) + shift, -1, 1)
    pd.DataFrame({"model": "m", "format": "onnx", "runtime": "ort", "precision": "int8", "cam_method": "gradcampp", "cam_mode": "mirror",
                  "image_id": [f"i{k}" for k in range(n)], "cc_fp32": cc, "cc_gt": 0.5}).to_parquet(root / "results.parquet")
    pd.DataFrame({"model": "m", "format": "onnx", "runtime": "ort", "precision": "int8", "latency_ms": latency + rng.random(200) * 0.1}).to_parquet(root / "latency.parquet")
    (root / "manifest.json").write_text(json.dumps({"config": {"name": root.name}}))
    return root


def test_compare_pairs_images_and_brackets_the_shift(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", 0.0, 1.0)
    b = _run(tmp_path / "b", -0.05, 2.0)
    t = compare_runs(a, b, n_boot=500).set_index("metric")
    cc = t.loc["cc_fp32"]
    assert cc["paired"] and cc["images"] == 40
    assert abs(cc["delta"] + 0.05) < 0.01 and cc["ci_lo"] <= cc["delta"] <= cc["ci_hi"] and cc["ci_hi"] < 0  # clipping aside, -0.05
    same = t.loc["cc_gt"]
    assert same["delta"] == 0 and same["ci_lo"] == 0 == same["ci_hi"]
    lat = t.loc["p50_ms"]
    assert 0.9 < lat["delta"] < 1.1 and lat["ci_lo"] > 0.8
    page = to_html(t.reset_index(), a, b)
    assert "<b>-0.05" in page or "<b>-0.04" in page  # the significant CC delta is bold


def test_bootstrap_diff_ci_unpaired_and_degenerate() -> None:
    rng = np.random.default_rng(1)
    d, lo, hi = bootstrap_diff_ci(rng.normal(0, 1, 300), rng.normal(1, 1, 200), paired=False, n_boot=500)
    assert lo < d < hi and 0.7 < d < 1.3 and lo > 0.5
    assert all(np.isnan(v) for v in bootstrap_diff_ci([1.0], [2.0, 3.0], paired=False))
