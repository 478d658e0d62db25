"""The arXiv 2411.05858 study end to end, reduced (`configs/saliency-qat-2411.05858.toml` at a fraction of its
size): `edgecam run` trains plain and saliency-guided fp32 models on both real data sets, PACT-fine-tunes
each to 4-bit and 2-bit, and writes accuracy and clarity side by side with bootstrap intervals; bit widths
no runtime executes are labelled host simulation; the 4-bit models also run as ONNX INT4 on the device;
a rerun reuses every study job."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import edgecam
from paper_datasets import ensure_fashion_mnist, ensure_mnist_5k

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _reduced(tmp_path: Path) -> Path:
    """The shipped config with its [saliency_qat] study cut to seconds (the sweep's own part too)."""
    text = (CONFIGS / "saliency-qat-2411.05858.toml").read_text()
    head, study = text.split("[saliency_qat]")
    head = head.replace("limit = 200", "limit = 16").replace("epochs = 4", "epochs = 1")
    cfg = tmp_path / "reduced.toml"
    cfg.write_text(head + "[bench]\nwarmup = 1\niterations = 3\nmemory = false\n\n[saliency_qat]\n"
                   'datasets = ["mnist", "fashion-mnist"]\ntrain_limit = 400\ntest_limit = 120\nclarity_images = 24\nepochs = 2\n'
                   'schemes = ["int4", "int2"]\nguided = [false, true]\nqat_epochs = 1\nqat_samples = 256\nsteps = 8\nbootstrap = 200\n')
    assert 'datasets = ["mnist", "fashion-mnist"]' in study  # the shipped study section exists; it is replaced
    return cfg


@pytest.mark.slow  # 49 s; `make test-slow` runs it (the study's checks: tests/unit/bench/test_saliency_qat_checks.py, by default)
@pytest.mark.timeout(1200)
def test_the_reduced_study_runs_end_to_end(session_cache: Path, tmp_path: Path) -> None:
    ensure_mnist_5k()
    ensure_fashion_mnist()
    cfg, out = _reduced(tmp_path), tmp_path / "run"
    proc = edgecam(["run", str(cfg), "--out", str(out)], session_cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Saliency-assisted QAT (arXiv 2411.05858)" in proc.stdout and "Saliency-assisted QAT (arXiv 2411.05858)" in (out / "report.html").read_text()
    df = pd.read_csv(out / "saliency_qat.csv")
    combos = df[["dataset", "training", "precision"]].drop_duplicates()
    assert len(combos) == 2 * 2 * 3  # {mnist, fashion-mnist} x {plain, guided} x {fp32, int4, int2}
    assert set(df["training"]) == {"plain", "saliency-guided"} and set(df["dataset"]) == {"mnist", "fashion-mnist"}
    assert set(df[df["precision"] == "fp32"]["execution"]) == {"host (PyTorch fp32)"}
    assert set(df[df["precision"] != "fp32"]["execution"]) == {"host simulation (PyTorch fake-quant)"}  # labelled: no runtime runs 2-bit
    acc = df[df["metric"] == "accuracy"]
    assert (acc["n"] == 120).all() and ((acc["ci_low"] <= acc["mean"]) & (acc["mean"] <= acc["ci_high"])).all()
    for m in ("input_gradient", "gradcampp"):
        for metric in ("gini", "entropy_bits", "deletion_auc", "insertion_auc", "cc_vs_fp32", "sim_vs_fp32"):
            rows = df[(df["map"] == m) & (df["metric"] == metric)]
            assert len(rows) == 12 and (rows["n"] == 24).all() and rows["mean"].notna().all(), (m, metric)
    fp32 = df[(df["precision"] == "fp32") & (df["metric"] == "accuracy")].set_index(["dataset", "training"])
    for dataset in ("mnist", "fashion-mnist"):  # the guided fp32 model was trained with the guided loss, the plain one without
        assert "sg_kl_first" not in json.loads(fp32.loc[(dataset, "plain"), "train_stats"])
        sg = json.loads(fp32.loc[(dataset, "saliency-guided"), "train_stats"])
        assert sg["sg_steps"] == sg["steps"] and sg["sg_masked_fraction"] == pytest.approx(0.5, abs=0.02) and sg["sg_kl_last"] > 0
    ig = df[(df["precision"] == "fp32") & (df["map"] == "input_gradient") & (df["metric"] == "gini")].set_index(["dataset", "training"])["mean"]
    assert ig[("mnist", "plain")] != ig[("mnist", "saliency-guided")]  # two different models, two different maps
    int4 = df[(df["precision"] == "int4") & (df["metric"] == "accuracy")]
    assert int4["ort_status"].str.startswith("ran on local (ONNX INT4 / UINT4 QDQ)").all() and int4["ort_accuracy"].between(0, 1).all()
    assert df[(df["precision"] == "int2") & (df["metric"] == "accuracy")]["ort_status"].isna().all()
    guided = df[(df["training"] == "saliency-guided") & (df["metric"] == "accuracy") & (df["precision"] != "fp32")]
    stats = [json.loads(s) for s in guided["qat_stats"]]
    assert all(s["sg_masked_fraction"] == pytest.approx(0.5, abs=0.02) and s["sg_kl_first"] > 0 for s in stats)  # the guided loss ran in QAT too
    plain = df[(df["training"] == "plain") & (df["metric"] == "accuracy") & (df["precision"] != "fp32")]
    assert all("sg_steps" not in json.loads(s) for s in plain["qat_stats"])

    again = edgecam(["run", str(cfg), "--resume", str(out)], session_cache)
    assert again.returncode == 0, again.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["jobs"]["committed"] == 0  # every study job (and the sweep's) reused
    pd.testing.assert_frame_equal(df, pd.read_csv(out / "saliency_qat.csv"))
