"""Fault injection: every way a runtime or an artifact fails on a board (segfault, OOM kill, MemoryError,
hang, exit, exception, NaN outputs, truncated / corrupt model files, a cached artifact that rotted) is caught,
recorded with its cause, and never stops the sweep or crashes the metrics."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgecam.devices.base import JobFailed
from edgecam.devices.local import LocalDevice
from edgecam.errors import ArtifactError
from edgecam.runtimes.fault import HELPER_MARK
from conftest import edgecam
from processes import all_gone, live_pids

RUN = {"runtime": "fault", "mode": "forward", "output_batch_size": 8}
EXPECTED = {
    "segfault": "killed by SIGSEGV",
    "kill": "killed by SIGKILL",
    "oom": "MemoryError",
    "hang": "timed out after 8 s and was killed",
    "exit": "agent exited 3",
    "raise": "RuntimeError: fault runtime: injected failure",
}


@pytest.fixture()
def device(tmp_path: Path) -> LocalDevice:
    return LocalDevice(workdir=str(tmp_path / "device"))


@pytest.mark.parametrize("fault", sorted(EXPECTED))
def test_each_runtime_fault_fails_the_job_with_its_cause(trained_tinycnn, device: LocalDevice, fault: str) -> None:
    x = trained_tinycnn.data.test_x[:4]
    with pytest.raises(JobFailed) as exc:
        device.run_job(trained_tinycnn.artifacts["fp32"], x, {**RUN, "runtime_options": {"fault": fault}}, timeout=8)
    assert EXPECTED[fault] in str(exc.value)
    # the device is still usable: the next job on the same artifact runs
    _, out = device.run_job(trained_tinycnn.artifacts["fp32"], x, {**RUN, "runtime": "onnxruntime"}, timeout=60)
    assert np.isfinite(out["logits"]).all() and out["logits"].shape == (4, 10)


def test_a_timed_out_job_is_stopped_with_everything_it_started(trained_tinycnn, device: LocalDevice) -> None:
    """The agent leads its own process group and the host kills the group on a timeout: a helper process the
    runtime started (silent, so no broken pipe would end it) does not outlive the job beside later timings."""
    x = trained_tinycnn.data.test_x[:2]
    assert live_pids(HELPER_MARK) == []
    with pytest.raises(JobFailed, match="timed out after 4 s"):
        device.run_job(trained_tinycnn.artifacts["fp32"], x, {**RUN, "runtime_options": {"fault": "hang-child"}}, timeout=4)
    assert all_gone(HELPER_MARK)
    assert not any((Path(device.workdir()) / "jobs").iterdir())  # its folder (with its inputs) is gone too


def test_fault_precisions_limit_the_fault_to_those_artifacts(trained_tinycnn, device: LocalDevice) -> None:
    x = trained_tinycnn.data.test_x[:4]
    job = {**RUN, "runtime_options": {"fault": "raise", "fault_precisions": ["int8"]}}
    _, out = device.run_job(trained_tinycnn.artifacts["fp32"], x, job, timeout=60)
    assert np.isfinite(out["logits"]).all()
    with pytest.raises(JobFailed, match="injected failure"):
        device.run_job(trained_tinycnn.artifacts["int8"], x, job, timeout=60)


def _copy_artifact(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _truncate(art: Path, update_manifest: bool) -> Path:
    """Cut the model file to half its size; optionally make the manifest agree (a corrupt export)."""
    from edgecam.cache import sha256_file

    manifest = json.loads((art / "manifest.json").read_text())
    model = art / manifest["file"]
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    if update_manifest:
        manifest["sha256"] = sha256_file(model)
        (art / "manifest.json").write_text(json.dumps(manifest))
    return model


def test_truncated_artifact_is_refused_on_host_and_device_by_its_sha256(trained_tinycnn, device: LocalDevice, tmp_path: Path) -> None:
    from edgecam.exporters.base import Artifact

    art = _copy_artifact(trained_tinycnn.artifacts["int8"], tmp_path / "int8")
    model = _truncate(art, update_manifest=False)
    with pytest.raises(ArtifactError, match=f"{model}: sha256 does not match manifest.json"):
        Artifact.load(art)
    with pytest.raises(JobFailed, match="does not match its manifest.json .*corrupt or truncated"):
        device.run_job(art, trained_tinycnn.data.test_x[:2], {**RUN, "runtime": "onnxruntime"}, timeout=60)
    assert not (Path(device.workdir()) / "artifacts" / "int8").exists()  # dropped, so the next job pushes a fresh copy


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_corrupt_model_file_fails_in_the_runtime_with_its_error(trained_tinycnn, tflite_tinycnn, device: LocalDevice, tmp_path: Path, fmt: str) -> None:
    src = trained_tinycnn.artifacts["int8"] if fmt == "onnx" else tflite_tinycnn["int8"]
    art = _copy_artifact(src, tmp_path / f"{fmt}-int8")
    _truncate(art, update_manifest=True)  # sha256 agrees: the runtime itself must reject the file
    runtime = "onnxruntime" if fmt == "onnx" else "litert"
    with pytest.raises(JobFailed) as exc:
        device.run_job(art, trained_tinycnn.data.test_x[:2], {**RUN, "runtime": runtime}, timeout=60)
    assert "failed" in str(exc.value) and ("Error" in str(exc.value) or "error" in str(exc.value))


def test_rotten_cached_artifact_is_rebuilt_not_used(trained_tinycnn, tmp_path: Path) -> None:
    from edgecam.bench.deploy import build_artifact
    from edgecam.exporters.base import Artifact
    from edgecam.exporters.onnx import OnnxExporter

    t = trained_tinycnn
    cached, built = build_artifact(t.model, t.cfg.models[0], t.layer, t.meta["sha256"], "onnx", "fp32", t.cfg, t.data, OnnxExporter())
    assert not built
    _truncate(cached, update_manifest=False)
    again, built = build_artifact(t.model, t.cfg.models[0], t.layer, t.meta["sha256"], "onnx", "fp32", t.cfg, t.data, OnnxExporter())
    assert built and again == cached
    Artifact.load(again)  # verifies the sha256 of the rebuilt file


SWEEP = """
name = "faults"
[export]
precisions = ["fp32", "int8"]
[[models]]
name = "tinycnn"
[[runtimes]]
name = "fault"
fault = "{fault}"
fault_precisions = ["int8"]
threads = 1
[bench]
warmup = 1
iterations = 5
memory = false
[explain]
methods = ["gradcampp", "eigencam", "scorecam"]
faithfulness_images = 4
emd_size = 8
shard_size = 4
rise_masks = 50
bootstrap = 100
"""


def test_a_crashing_variant_is_recorded_and_the_sweep_goes_on(trained_tinycnn, session_cache: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "segv.toml"
    cfg.write_text(SWEEP.format(fault="segfault"))
    out = tmp_path / "run"
    proc = edgecam(["run", str(cfg), "--out", str(out), "--limit", "8"], session_cache)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 failed job(s)" in proc.stdout and "SIGSEGV" in proc.stdout
    failed = pd.read_csv(out / "failed.csv")
    assert failed["job"].tolist() == ["run tinycnn-onnx-int8-fault"] and failed["error"].str.contains("killed by SIGSEGV").all()
    results = pd.read_parquet(out / "results.parquet")
    assert set(results["precision"]) == {"fp32"} and len(results) == 8 * 3  # the fp32 variant was explained in full
    bench = pd.read_csv(out / "bench.csv").set_index("precision")
    assert bench.loc["fp32", "ok"] and not bench.loc["int8", "ok"]
    # the rerun keeps every finished job and retries only the failed one (which fails again: the fault is deterministic)
    rerun = edgecam(["run", str(cfg), "--out", str(out), "--limit", "8"], session_cache)
    assert rerun.returncode == 1
    # 1 fp32 run + 2 explain shards + 2 logits-only prediction jobs for the other 351 test images
    assert json.loads((out / "manifest.json").read_text())["jobs"] == {"reused": 1 + 2 + 2, "committed": 0}


def test_nan_outputs_are_flagged_per_row_and_never_crash_the_metrics(trained_tinycnn, session_cache: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "nan.toml"
    cfg.write_text(SWEEP.format(fault="nan"))
    out = tmp_path / "run"
    proc = edgecam(["run", str(cfg), "--out", str(out), "--limit", "8"], session_cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = pd.read_parquet(out / "results.parquet")
    int8, fp32 = results[results["precision"] == "int8"], results[results["precision"] == "fp32"]
    assert len(int8) == len(fp32) == 8 * 3
    assert (~int8["output_finite"]).all() and fp32["output_finite"].all() and results["input_finite"].all()
    assert int8["cc_fp32"].isna().all() and int8["deletion_auc"].isna().all()  # NaN in, NaN out: never a made-up number
    assert fp32["cc_fp32"].notna().all() and (fp32["cc_fp32"] > 0.999).all()
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) and (out / "report.html").is_file()


def test_nan_and_inf_inputs_are_flagged_on_their_rows_only(trained_tinycnn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import dataclasses

    import numpy as np

    from edgecam.bench import sweep
    from edgecam.config import BenchSpec, ExplainSpec, RuntimeSpec

    real = sweep.load_data

    def poisoned(spec):  # type: ignore[no-untyped-def]
        d = real(spec)
        x = d.test_x.copy()
        x[0, :, 5, 5] = np.nan
        x[1, 0, 0, 0] = np.inf
        return d.with_test_x(x)

    monkeypatch.setattr(sweep, "load_data", poisoned)
    t = trained_tinycnn
    cfg = t.cfg.replace(data=dataclasses.replace(t.cfg.data, limit=6), export=dataclasses.replace(t.cfg.export, precisions=("fp32", "int8")),
                        runtimes=(RuntimeSpec("onnxruntime", threads=1),), bench=BenchSpec(warmup=1, iterations=3, memory=False),
                        explain=ExplainSpec(methods=("gradcampp", "eigencam"), faithfulness_images=3, emd_size=8, bootstrap=100))
    out = sweep.run(cfg, tmp_path / "run", log=lambda m: None)
    rows = out["results"]
    assert len(rows) == 6 * 2 * 2 and not out["failed"]
    bad = rows["image_id"].isin([t.data.test_ids[0], t.data.test_ids[1]])
    assert (~rows.loc[bad, "input_finite"]).all() and rows.loc[~bad, "input_finite"].all()
    assert rows.loc[~bad, "cc_fp32"].notna().all()
