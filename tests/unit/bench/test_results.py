"""Latency statistics and the Table-1 summary layout."""

from __future__ import annotations

import numpy as np
import pandas as pd

from edgecam.bench.results import summarise
from edgecam.bench.timing import latency_stats


def test_latency_stats_in_ms() -> None:
    s = latency_stats([0.001, 0.002, 0.003, 0.004, 0.010])
    assert s["p50_ms"] == 3.0
    assert s["min_ms"] == 1.0
    assert abs(s["mean_ms"] - 4.0) < 1e-12
    assert abs(s["std_ms"] - np.std([1, 2, 3, 4, 10], ddof=1)) < 1e-12
    assert s["p90_ms"] == np.percentile([1, 2, 3, 4, 10], 90)
    assert np.isnan(latency_stats([])["p50_ms"])


def test_summary_is_table1_layout() -> None:
    rows = []
    for model in ("a", "b"):
        for precision in ("fp32", "int8"):
            for i in range(3):
                rows.append({"model": model, "format": "onnx", "runtime": "ort", "cam_method": "m", "cam_mode": "mirror", "precision": precision,
                             "image_id": str(i), "cam_constant": i == 0,
                             "sim_gt": 0.1 * i + (0.5 if precision == "int8" else 0.0), "cc_gt": np.nan if i == 0 else 0.5, "kld_gt": 1.0,
                             "sim_fp32": 1.0, "cc_fp32": 1.0, "kld_fp32": 0.0})
    s = summarise(pd.DataFrame(rows), ["a", "b"], n_boot=500)
    assert list(s["comparison"].unique()) == ["fp32 v. GT", "int8 v. GT", "int8 v. fp32"]
    assert len(s) == 9  # 3 comparisons x the 3 metrics present (nss, rmse, emd, per-image columns absent)
    row = s[(s["comparison"] == "fp32 v. GT") & (s["metric"] == "sim")].iloc[0]
    assert abs(row["a_mean"] - 0.1) < 1e-12 and abs(row["a_std"] - 0.1) < 1e-12
    assert row["a_ci_lo"] <= row["a_mean"] <= row["a_ci_hi"] and row["a_constant"] == 1
    assert np.isnan(row["a_p_vs_fp32"])  # fp32 is not tested against itself
    int8 = s[(s["comparison"] == "int8 v. GT") & (s["metric"] == "sim")].iloc[0]
    assert abs(int8["a_mean"] - 0.6) < 1e-12 and 0 < int8["a_p_vs_fp32"] <= 1  # paired by image: every pair +0.5
    cc_row = s[(s["comparison"] == "fp32 v. GT") & (s["metric"] == "cc")].iloc[0]
    assert cc_row["a_nan"] == 1 and cc_row["a_mean"] == 0.5  # NaN (constant map) excluded and counted
    assert np.isnan(s[s["comparison"] == "int8 v. fp32"]["a_p_vs_fp32"]).all()
    # keys beside the labels, and the best model decided here (the CLI and the report only render it)
    assert set(s["reference"]) == {"gt", "fp32"} and set(s["precision"]) == {"fp32", "int8"}
    assert row["metric_label"] == "SIM (higher is better)" and row["best"] == "a,b"  # a tie: both are highlighted


def test_best_model_follows_the_metrics_direction() -> None:
    from edgecam.bench.results import best_model

    row = {"a_mean": 0.2, "b_mean": 0.7, "c_mean": float("nan")}
    assert best_model(row, "cc", ["a", "b", "c"]) == "b"  # higher is better
    assert best_model(row, "kld", ["a", "b", "c"]) == "a"  # lower is better
    assert best_model(row, "act_std", ["a", "b"]) == ""  # a descriptive statistic has no best
    assert best_model(row, "cc", ["a"]) == ""  # one model: nothing to highlight
    assert best_model({"a_mean": 0.5, "b_mean": 0.5}, "sim", ["a", "b"]) == "a,b"


def test_no_ground_truth_means_no_gt_rows() -> None:
    """An image folder without boxes: every row has has_gt False and NaN "v. GT" numbers; the summary then has
    no "v. GT", WSOL IoU or pointing-game rows at all (never a score against an empty mask)."""
    rows = [{"model": "a", "format": "onnx", "runtime": "ort", "cam_method": "m", "cam_mode": "mirror", "precision": p, "image_id": str(i),
             "cam_constant": False, "has_gt": False, "sim_gt": np.nan, "cc_gt": np.nan, "kld_gt": np.nan, "nss_gt": np.nan,
             "wsol_iou": np.nan, "pointing_energy": np.nan, "sim_fp32": 0.9, "cc_fp32": 0.95, "kld_fp32": 0.1, "sim_sal": 0.5, "cc_sal": 0.3, "kld_sal": 1.0,
             "act_std": 1.0 + i}
            for p in ("fp32", "int8") for i in range(4)]
    s = summarise(pd.DataFrame(rows), ["a"], n_boot=200)
    assert not s["comparison"].str.contains("GT").any() and "gt" not in set(s["reference"])
    assert not s["metric"].isin(["wsol_iou", "pointing_energy", "nss"]).any()
    assert {"fp32 v. saliency", "int8 v. fp32", "int8"} <= set(s["comparison"])


def test_runtime_gap_summary_layout() -> None:
    from edgecam.bench.results import summarise_gap

    gap = pd.DataFrame([
        {"model": "a", "precision": p, "cam_method": "m", "pair": "tflite/litert v. onnx/onnxruntime", "image_id": str(i), "agrees": True,
         "sim": 0.9 + 0.01 * i, "cc": 1.0, "kld": 0.0}
        for p in ("fp32", "int8") for i in range(3)
    ])
    s = summarise_gap(gap, ["a"])
    assert list(s["comparison"].unique()) == ["fp32: tflite/litert v. onnx/onnxruntime", "int8: tflite/litert v. onnx/onnxruntime"]
    assert len(s) == 6
    sim = s[s["metric"] == "sim"].iloc[0]
    assert abs(sim["a_mean"] - 0.91) < 1e-12 and abs(sim["a_std"] - 0.01) < 1e-12 and sim["a_nan"] == 0
    assert summarise_gap(pd.DataFrame(), ["a"]).empty
