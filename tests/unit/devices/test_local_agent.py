"""The agent on the local device: timing + outputs pass, memory pass, failures reported with the cause."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import ort_outputs

from edgecam.devices.base import JobFailed
from edgecam.devices.local import LocalDevice

JOB = {"runtime": "onnxruntime", "runtime_options": {"threads": 1}, "warmup": 2, "iterations": 7, "batch_size": 1}


def test_run_job_returns_samples_and_outputs(trained_tinycnn, tmp_path: Path) -> None:
    dev = LocalDevice(workdir=str(tmp_path / "dev"))
    x = trained_tinycnn.data.test_x[:37]
    result, outputs = dev.run_job(trained_tinycnn.artifacts["int8"], x, {**JOB, "mode": "run"})
    assert len(result["samples_s"]) == 7 and all(s > 0 for s in result["samples_s"])
    assert result["init_s"] > 0 and result["first_s"] > 0
    assert outputs["logits"].shape == (37, 10) and outputs["features"].shape == (37, 96, 8, 8)
    np.testing.assert_allclose(outputs["logits"], ort_outputs(trained_tinycnn.artifacts["int8"], x)["logits"], atol=1e-5)
    assert result["runtime"]["providers"] == ["CPUExecutionProvider"]
    assert not any((tmp_path / "dev" / "jobs").iterdir())  # job dirs cleaned up


def test_memory_pass_reports_peak_rss(trained_tinycnn, tmp_path: Path) -> None:
    dev = LocalDevice(workdir=str(tmp_path / "dev"))
    result, outputs = dev.run_job(trained_tinycnn.artifacts["fp32"], trained_tinycnn.data.test_x[:3], {**JOB, "mode": "memory"})
    assert outputs == {}
    assert result["peak_rss_bytes"] >= result["rss_after_run_bytes"] > 10 * 2**20


def test_null_runtime_measures_harness_overhead(trained_tinycnn, tmp_path: Path) -> None:
    dev = LocalDevice(workdir=str(tmp_path / "dev"))
    result, outputs = dev.run_job(trained_tinycnn.artifacts["fp32"], trained_tinycnn.data.test_x[:5], {**JOB, "runtime": "null", "mode": "run"})
    assert outputs["logits"].shape == (5, 10) and not outputs["logits"].any()
    assert outputs["features"].shape == (5, 96, 8, 8)
    assert np.median(result["samples_s"]) < 1e-3


def test_corrupt_artifact_fails_with_cause(trained_tinycnn, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(trained_tinycnn.artifacts["fp32"], bad)
    (bad / "model.onnx").write_bytes(b"this is not an onnx file")
    dev = LocalDevice(workdir=str(tmp_path / "dev"))
    with pytest.raises(JobFailed, match="model.onnx|INVALID_PROTOBUF|Protobuf"):
        dev.run_job(bad, trained_tinycnn.data.test_x[:2], {**JOB, "mode": "run"})


def test_info_describes_the_machine(tmp_path: Path) -> None:
    info = LocalDevice(workdir=str(tmp_path)).info()
    assert info["cores"] >= 1 and info["ram_bytes"] > 0 and info["python"].count(".") == 2
    json.dumps(info)


def test_litert_job_through_the_agent(trained_tinycnn, tflite_tinycnn, tmp_path: Path) -> None:
    """The agent runs .tflite artifacts with the LiteRT adapter: integer I/O is (de)quantised for the caller."""
    dev = LocalDevice(workdir=str(tmp_path / "dev"))
    x = trained_tinycnn.data.test_x[:12]
    result, outputs = dev.run_job(tflite_tinycnn["int8"], x, {**JOB, "runtime": "litert", "mode": "run"})
    assert outputs["logits"].dtype == np.float32 and outputs["logits"].shape == (12, 10)
    assert outputs["features"].shape == (12, 96, 8, 8)
    assert result["runtime"]["runtime"] == "litert" and result["runtime"]["xnnpack"] is True
    assert len(result["samples_s"]) == 7


def test_an_agent_the_host_gave_up_on_ends_itself(trained_tinycnn, tmp_path: Path) -> None:
    """The agent's watchdog (`watchdog_s` in job.json: the host's timeout plus a grace): a hung runtime ends at
    that deadline with SIGALRM even when no host is left to kill it (a killed CLI, a lost SSH or adb link)."""
    import subprocess
    import sys
    import time

    from edgecam.devices.archive import build_agent_archive
    from edgecam.exporters.base import Artifact

    job_dir = tmp_path / "job"
    job_dir.mkdir()
    np.save(job_dir / "inputs.npy", trained_tinycnn.data.test_x[:1], allow_pickle=False)
    art = Artifact.load(trained_tinycnn.artifacts["fp32"])
    (job_dir / "job.json").write_text(json.dumps({"runtime": "fault", "runtime_options": {"fault": "hang"}, "mode": "forward", "artifact": str(art.path), "watchdog_s": 1.5}))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(build_agent_archive(tmp_path)), "run", str(job_dir)], capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    assert proc.returncode == -14 and 1.5 <= took < 30, (proc.returncode, took, proc.stderr[-500:])  # -SIGALRM, at the deadline
    assert not (job_dir / "result.json").exists()
