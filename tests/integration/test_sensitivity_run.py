"""`edgecam sensitivity` end to end (tinycnn): the ranking, the greedy plan, the `mixed` variant on the device
beside fp32 / int16 / int8, host simulation vs device, the report section, resume, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pandas as pd
from conftest import edgecam

CONFIG = """
name = "sensitivity"
[[models]]
name = "tinycnn"
[[runtimes]]
name = "onnxruntime"
threads = 1
[bench]
warmup = 2
iterations = 5
[explain]
methods = ["gradcampp"]
faithfulness = false
emd_size = 0
[sensitivity]
images = 40
"""


def test_sensitivity_ranks_plans_and_runs_the_mixed_variant(trained_tinycnn, session_cache: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "sens.toml"
    cfg.write_text(CONFIG)
    out = tmp_path / "run"
    args = ["sensitivity", str(cfg), "--out", str(out), "--limit", "20", "--cc-target", "1.0", "--budget", "2"]
    proc = edgecam(args, session_cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranking = pd.read_csv(out / "sensitivity.csv")
    assert len(ranking) == 12 and list(ranking["rank"]) == list(range(1, 13))  # tinycnn int8: 7 activation + 5 weight groups
    assert {"delta_cc", "delta_cc_ci_lo", "delta_cc_ci_hi", "delta_sim", "delta_kld", "delta_top1_agreement", "only_delta_cc", "sqnr_db"} <= set(ranking.columns)
    steps = pd.read_csv(out / "sensitivity_plan.csv")
    tried = list(steps["group"].dropna())
    assert tried == list(ranking[ranking["delta_cc"] > 0]["group"][: len(tried)])  # tried in ranking order
    chosen = list(steps[steps["kept"]]["group"].dropna())
    assert len(chosen) == 2 and set(chosen) <= set(tried)
    bench = pd.read_csv(out / "bench.csv")
    assert set(bench["precision"]) == {"fp32", "int16", "int8", "mixed"} and bench["ok"].all()
    results = pd.read_parquet(out / "results.parquet")
    mixed = results[results["precision"] == "mixed"]
    assert len(mixed) == 20 and mixed["cc_fp32"].notna().all()
    entry = json.loads((out / "manifest.json").read_text())["sensitivity"]
    assert entry["float_groups"] == chosen and entry["images"] == 40
    assert entry["host_vs_device"]["device_vs_host_cc"] > 0.95 and entry["host_vs_device"]["images"] == 40
    art = json.loads((out / "artifacts" / "tinycnn-onnx-mixed" / "manifest.json").read_text())
    assert art["precision_requested"] == art["precision_effective"] == "mixed"
    assert [g["name"] for g in art["quantization"]["float_groups"]] == chosen and art["quantization"]["base_precision"] == "int8"
    q = lambda name: sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in onnx.load(str(out / "artifacts" / name / "model.onnx")).graph.node)  # noqa: E731
    mixed_model = onnx.load(str(out / "artifacts" / "tinycnn-onnx-mixed" / "model.onnx"))
    int16 = {i.name for i in mixed_model.graph.initializer if i.data_type == onnx.TensorProto.INT16}
    for g in art["quantization"]["float_groups"]:  # each group is where the manifest says: weights in int16 or float, activations float
        assert g["fallback"] in ("float", "int16") and (g["fallback"] == "float" or g["kind"] == "weight")
        assert (g["fallback"] == "int16") == any(n.startswith(g["name"]) for n in int16)
    floats = sum(g["fallback"] == "float" for g in art["quantization"]["float_groups"])
    assert (q("tinycnn-onnx-mixed") < q("tinycnn-onnx-int8")) == (floats > 0)
    assert any(i.data_type == onnx.TensorProto.INT8 for i in onnx.load(str(out / "artifacts" / "tinycnn-onnx-mixed" / "model.onnx")).graph.initializer)
    assert "Explanation sensitivity" in proc.stdout and "Mixed-precision plan" in proc.stdout
    assert 'id="sensitivity"' in (out / "report.html").read_text()
    again = edgecam(args, session_cache)  # the same command again: every job, the analysis included, is reused
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    jobs = json.loads((out / "manifest.json").read_text())["jobs"]
    assert jobs["committed"] == 0 and jobs["reused"] > 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "sensitivity.csv"), ranking)


def test_sensitivity_needs_onnx_artifacts(session_cache: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "tfl.toml"
    cfg.write_text(CONFIG.replace('[[runtimes]]\nname = "onnxruntime"', '[export]\nformats = ["tflite"]\n[[runtimes]]\nname = "litert"'))
    proc = edgecam(["sensitivity", str(cfg), "--out", str(tmp_path / "r")], session_cache)
    assert proc.returncode != 0 and "sensitivity: needs the onnx format" in proc.stdout + proc.stderr
    assert not (tmp_path / "r").exists()
    proc = edgecam(["sensitivity", str(tmp_path / "sens.toml"), "--model", "resnet18"], session_cache)
    assert proc.returncode != 0
    cfg.write_text(CONFIG)
    proc = edgecam(["sensitivity", str(cfg), "--model", "resnet18", "--out", str(tmp_path / "r")], session_cache)
    assert proc.returncode != 0 and "sensitivity.model: 'resnet18' is not one of the run's models" in proc.stdout + proc.stderr
