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


def test_an_agent_left_by_a_host_that_died_is_stopped_before_the_job_reruns(trained_tinycnn, tmp_path: Path) -> None:
    """A host killed mid-job leaves the job folder with `agent.pid` and the agent still running; the rerun of
    that job stops it (its process group, checked against the job folder in its command line) before timing,
    and a process that merely reuses a recycled pid is left alone."""
    import subprocess
    import sys
    import time

    from edgecam.devices.base import remote_job_name

    dev = LocalDevice(workdir=str(tmp_path / "dev"))
    x = trained_tinycnn.data.test_x[:3]
    job = {**JOB, "mode": "run"}
    art = trained_tinycnn.artifacts["fp32"]
    manifest = json.loads((art / "manifest.json").read_text())
    remote_job = Path(dev.workdir()) / "jobs" / remote_job_name(str(manifest["sha256"]), np.ascontiguousarray(x, dtype=np.float32), job, {})
    remote_job.mkdir(parents=True)
    sleeper = [sys.executable, "-c", "import os, sys, time; os.setsid(); time.sleep(600)"]
    stale = subprocess.Popen([*sleeper, str(remote_job)])  # the dead host's agent: its job folder in its argv
    bystander = subprocess.Popen(sleeper)  # an unrelated process the pid file will name
    try:
        (remote_job / "agent.pid").write_text(str(bystander.pid))
        dev.stop_job(str(remote_job))
        time.sleep(0.3)
        assert bystander.poll() is None  # a pid whose command line does not name the job is never killed
        (remote_job / "agent.pid").write_text(str(stale.pid))
        result, outputs = dev.run_job(art, x, job)
        assert stale.wait(timeout=10) == -9  # stopped before the job ran again
        assert len(result["samples_s"]) == 7 and outputs["logits"].shape == (3, 10)
    finally:
        for p in (stale, bystander):
            p.kill()
            p.wait()


def test_a_session_request_the_host_gave_up_on_ends_itself(trained_tinycnn, tmp_path: Path) -> None:
    """The session agent arms the same watchdog for each request (and while loading), and disarms it while it
    waits for the next one: a request that hangs ends at `watchdog_s`, host or no host; idle waiting does not."""
    import subprocess
    import sys
    import time

    from edgecam.devices.archive import build_agent_archive
    from edgecam.devices.protocol import encode_frame
    from edgecam.exporters.base import Artifact

    art = Artifact.load(trained_tinycnn.artifacts["fp32"])
    agent = str(build_agent_archive(tmp_path))
    x = np.ascontiguousarray(trained_tinycnn.data.test_x[:1], dtype=np.float32)
    for fault, expect in (("hang", -14), ("raise", 0)):
        job = tmp_path / f"job-{fault}.json"
        job.write_text(json.dumps({"runtime": "fault", "runtime_options": {"fault": fault}, "artifact": str(art.path), "watchdog_s": 1.5}))
        chunks, _ = encode_frame({"op": "forward", "id": 1, "params": {}}, {"inputs": x})
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, agent, "serve", str(job)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin is not None
        time.sleep(2.5)  # idle past watchdog_s before the request: not a hang
        assert proc.poll() is None
        proc.stdin.write(b"".join(bytes(c) for c in chunks))
        proc.stdin.flush()
        if fault == "raise":  # answered (a failed request), then the input ends: a clean exit
            proc.stdin.close()
        code = proc.wait(timeout=60)
        took = time.monotonic() - t0
        assert code == expect and (fault == "raise" or 4.0 <= took < 30), (fault, code, took, proc.stderr.read()[-500:])


def test_the_watchdog_is_the_hosts_timeout_plus_the_grace(trained_tinycnn, tmp_path: Path) -> None:
    """job.json tells the agent when to end itself: the host's timeout plus WATCHDOG_GRACE_S (30 s), so the
    host always times out first; no timeout, no watchdog. Sessions carry the same deadline per request."""
    from edgecam.devices.protocol import WATCHDOG_GRACE_S

    assert WATCHDOG_GRACE_S == 30.0
    dev = LocalDevice(workdir=str(tmp_path / "dev"))
    sent: list[dict] = []
    real_push = dev.push

    def spy(local: Path, remote: str) -> None:
        if (Path(local) / "job.json").is_file():
            sent.append(json.loads((Path(local) / "job.json").read_text()))
        real_push(local, remote)

    dev.push = spy  # type: ignore[method-assign]
    x = trained_tinycnn.data.test_x[:2]
    dev.run_job(trained_tinycnn.artifacts["fp32"], x, {**JOB, "mode": "forward"}, timeout=45)
    dev.run_job(trained_tinycnn.artifacts["fp32"], x, {**JOB, "mode": "forward", "warmup": 1}, timeout=None)
    with dev.session(trained_tinycnn.artifacts["fp32"], JOB, timeout=12) as s:
        s.forward(x, outputs=None)
    assert [j.get("watchdog_s") for j in sent] == [45 + WATCHDOG_GRACE_S, None, 12 + WATCHDOG_GRACE_S]


@pytest.mark.parametrize("damage", ["result-truncated", "result-a-list", "outputs-truncated", "outputs-pickled"])
def test_a_board_that_sends_back_damaged_files_fails_that_job_only(trained_tinycnn, tmp_path: Path, damage: str) -> None:
    """What comes back from a board is data, checked: a truncated or non-object result.json, a truncated or
    pickle-carrying outputs.npz fail the job with the file named (the sweep records it and goes on), and the
    job folder goes; the next honest job on the same device works."""
    import pickle


    class Damaging(LocalDevice):
        def pull(self, remote: str, local: str | Path, max_bytes: int | None = None) -> None:
            super().pull(remote, local, max_bytes)
            local = Path(local)
            name = local.name
            if damage == "result-truncated" and name == "result.json":
                local.write_bytes(local.read_bytes()[: 7])
            elif damage == "result-a-list" and name == "result.json":
                local.write_text("[1, 2]")
            elif damage == "outputs-truncated" and name == "outputs.npz":
                local.write_bytes(local.read_bytes()[:100])
            elif damage == "outputs-pickled" and name == "outputs.npz":
                np.savez(local, logits=np.array([pickle.dumps(object)], dtype=object))

    dev = Damaging(workdir=str(tmp_path / "dev"))
    x = trained_tinycnn.data.test_x[:2]
    file = "result.json" if damage.startswith("result") else "outputs.npz"
    with pytest.raises(JobFailed, match=file):
        dev.run_job(trained_tinycnn.artifacts["int8"], x, {**JOB, "mode": "run"})
    assert not list((Path(dev.workdir()) / "jobs").glob("*"))
    damage = "none"
    result, outputs = dev.run_job(trained_tinycnn.artifacts["int8"], x, {**JOB, "mode": "run"})
    assert result["ok"] and outputs["logits"].shape == (2, 10)
