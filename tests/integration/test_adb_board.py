"""The adb device against a real adbd (Debian's 34.0.5 in an x86-64 root, tests/adb_board.py), reached by the stock
adb client inside the board's own network namespace: probe, exit codes and files, the timing and explain passes of a
whole run with every CAM method (the same rows as the local device), the persistent session over `adb shell -T`, a
hung agent stopped on the device, adbd killed mid-request and mid-run (a clear failure, a reconnect, a resume with
nothing lost or doubled), and a port nobody outside the namespace can reach."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import adb_board  # noqa: E402
from adb_board import AdbBoard  # noqa: E402

from edgecam.devices.adb import AdbDevice, AdbSession  # noqa: E402
from edgecam.devices.base import DeviceError, DeviceTimeout, JobFailed  # noqa: E402
from edgecam.devices.inventory import open_device  # noqa: E402
from edgecam.devices.local import LocalDevice  # noqa: E402
from edgecam.runtimes.fault import HELPER_MARK  # noqa: E402

pytestmark = pytest.mark.adb

JOB = {"runtime": "onnxruntime", "runtime_options": {"threads": 1}, "warmup": 2, "iterations": 10, "batch_size": 1, "mode": "run"}
SESSION = {"runtime": "onnxruntime", "runtime_options": {"threads": 1}, "output_batch_size": 16}
KEY_COLUMNS = ["model", "format", "runtime", "precision", "cam_method", "image_id"]
METRICS = ["sim_fp32", "cc_fp32", "kld_fp32", "sim_gt", "cc_gt", "kld_gt", "pred", "deletion_auc", "insertion_auc"]


@pytest.fixture(scope="module")
def phone() -> Iterator[AdbBoard]:
    yield from adb_board.board_session("amd64")


@pytest.fixture()
def dev(phone: AdbBoard) -> AdbDevice:
    device = open_device(phone.spec())
    assert isinstance(device, AdbDevice)
    return device


def _agents(phone: AdbBoard, marker: str = "edgecam-agent") -> list[str]:
    """Command lines of the processes in the board's root that contain `marker` (adbd itself aside)."""
    out = []
    for pid in phone.processes():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd:
            out.append(f"{pid} {cmd}")
    return out


def _jobs(dev: AdbDevice) -> str:
    return dev.run(["sh", "-c", 'ls -A "$1" 2>/dev/null; true', "sh", f"{dev.workdir()}/jobs"]).stdout.strip()


def test_the_adbd_port_is_closed_from_the_hosts_own_network_namespace(phone: AdbBoard) -> None:
    """adbd answers anyone, unauthenticated: only the board's namespace may reach it."""
    assert not adb_board.port_open_here(phone.port)
    inside = subprocess.run(["nsenter", f"--net=/run/netns/{phone.netns}", sys.executable, "-c",
                             f"import socket; print(socket.create_connection(('127.0.0.1', {phone.port}), 2).getpeername()[1])"],
                            capture_output=True, text=True, timeout=30)
    assert inside.returncode == 0 and inside.stdout.strip() == str(phone.port), inside.stderr


def test_probe_reports_the_android_facts_and_the_agents_python(dev: AdbDevice) -> None:
    facts = dev.info()
    assert facts["kind"] == "adb" and facts["serial"] == "127.0.0.1:7555" and facts["abi"] == "x86_64" and facts["arch"] == "x86_64"
    assert facts["os"] == "Android 14 (API 34)" and facts["emulated"] is False and facts["model"].startswith("edgecam adbd board")
    assert facts["python"].startswith("3.13.") and facts["runtimes"]["onnxruntime"] and facts["runtimes"]["ai_edge_litert"]
    assert facts["cores"] >= 1 and facts["ram_bytes"] > 2**28 and facts["kernel"]
    assert dev.run(["id", "-u"]).stdout.strip() == "2000"  # commands run as Android's shell user, not root


def test_exit_codes_files_and_hostile_names_over_shell_v2(dev: AdbDevice, tmp_path: Path) -> None:
    res = dev.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (res.returncode, res.stdout, res.stderr) == (7, "out\n", "err\n")
    with pytest.raises(DeviceTimeout, match="timed out after 0.5 s"):
        dev.run(["sleep", "5"], timeout=0.5)
    src = tmp_path / "send"
    (src / "a b").mkdir(parents=True)
    (src / "it's; $(touch pwned).txt").write_text("hello 'device'\n")
    (src / "a b" / "data.bin").write_bytes(os.urandom(300_000))
    remote = f"{dev.workdir()}/round trip/it's \"here\""
    dev.push(src, remote)
    assert dev.run(["cat", f"{remote}/it's; $(touch pwned).txt"]).stdout == "hello 'device'\n"
    assert not dev.exists(f"{dev.workdir()}/round trip/pwned") and not dev.exists("/pwned")
    dev.pull(remote, tmp_path / "back")
    assert (tmp_path / "back" / "a b" / "data.bin").read_bytes() == (src / "a b" / "data.bin").read_bytes()
    dev.cleanup(f"{dev.workdir()}/round trip")
    assert not dev.exists(f"{dev.workdir()}/round trip")


def test_jobs_and_the_session_answer_as_the_local_device(dev: AdbDevice, phone: AdbBoard, trained_tinycnn, tmp_path: Path) -> None:
    art = trained_tinycnn.artifacts["int8"]
    x = trained_tinycnn.data.test_x[:12]
    local = LocalDevice(workdir=str(tmp_path / "local"))
    result, ref = dev.run_job(art, x, {**JOB, "mode": "forward"})
    _, loc = local.run_job(art, x, {**JOB, "mode": "forward"})
    assert result["python"].startswith("3.13.") and np.abs(ref["logits"] - loc["logits"]).max() < 1e-5
    cams = np.random.default_rng(1).random((2, *x.shape[2:]))
    with dev.session(art, SESSION) as remote, local.session(art, SESSION) as here:
        assert isinstance(remote, AdbSession) and remote.streaming
        out = remote.forward(x, outputs=None)
        np.testing.assert_allclose(out["features"], here.forward(x, outputs=None)["features"], atol=1e-6)
        feats, targets = out["features"][:3], out["logits"][:2].argmax(1)
        np.testing.assert_allclose(remote.scorecam(x[:3], feats, max_inputs=64), here.scorecam(x[:3], feats, max_inputs=64), atol=1e-6)
        np.testing.assert_allclose(remote.rise(x[:2], targets, 80, 8, 0.5, 7, max_inputs=32), here.rise(x[:2], targets, 80, 8, 0.5, 7, max_inputs=32), atol=1e-6)
        np.testing.assert_allclose(remote.perturb(x[:2], cams, 5, "both", "blur"), here.perturb(x[:2], cams, 5, "both", "blur"), atol=1e-6)
        assert remote.starts == 1 and remote.calls == 4 and remote.last_reply["pid"] == remote.hello["pid"]
        assert len(_agents(phone, remote.job_path)) == 1  # one agent served every request
    assert _agents(phone) == [] and _jobs(dev) == ""


@pytest.mark.parametrize("fault", ["hang", "hang-child"])
def test_a_hung_agent_is_stopped_on_the_device(dev: AdbDevice, phone: AdbBoard, trained_tinycnn, fault: str) -> None:
    """Killing the adb client leaves the command running on the device: the timeout must kill it there, with
    what it started, for a job and for a session alike."""
    art, x = trained_tinycnn.artifacts["fp32"], trained_tinycnn.data.test_x[:2]
    job = {**JOB, "mode": "forward", "runtime": "fault", "runtime_options": {"fault": fault}}
    with pytest.raises(JobFailed, match="timed out after 3 s"):
        dev.run_job(art, x, job, timeout=3)
    time.sleep(0.3)
    assert _agents(phone) == [] and _agents(phone, HELPER_MARK) == [] and _jobs(dev) == ""
    with dev.session(art, {**SESSION, "runtime": "fault", "runtime_options": {"fault": fault}}, timeout=3) as s:
        with pytest.raises(DeviceTimeout, match="forward request 1 timed out after 3 s; the agent was killed"):
            s.forward(x)
        time.sleep(0.3)
        assert _agents(phone, s.job_path) == [] and _agents(phone, HELPER_MARK) == []
    assert _agents(phone) == [] and _jobs(dev) == ""


def test_adbd_killed_mid_request_fails_that_request_and_the_next_reconnects(dev: AdbDevice, phone: AdbBoard, trained_tinycnn, tmp_path: Path) -> None:
    art, x = trained_tinycnn.artifacts["fp32"], trained_tinycnn.data.test_x[:3]
    with LocalDevice(workdir=str(tmp_path / "local")).session(art, SESSION) as local:
        targets = local.forward(x)["logits"].argmax(1)
        expected = local.rise(x, targets, 2000, 8, 0.5, 11)
    with dev.session(art, SESSION) as s:
        s.ping()

        def kill_when_computing() -> None:
            while s.in_flight is None:
                time.sleep(0.005)
            time.sleep(0.3)
            phone.kill_adbd()

        killer = threading.Thread(target=kill_when_computing)
        killer.start()
        try:
            with pytest.raises(JobFailed, match="the session agent died during rise request 2"):
                s.rise(x, targets, 2000, 8, 0.5, 11)
        finally:
            killer.join()
        with pytest.raises((JobFailed, DeviceError), match="session agent died|adb cannot use device '127.0.0.1:7555'"):  # gone: a clear failure, not a hang
            s.ping()
        phone.start_adbd(connect=False)  # back, but nobody told the adb server
        sal = s.rise(x, targets, 2000, 8, 0.5, 11)  # edgecam checked the device again and reconnected it
        np.testing.assert_allclose(sal, expected, atol=1e-6)
        assert (s.calls, s.requests, s.resends) == (2, 3, 0)  # ping, the cut request, the new one: nothing sent twice
        assert s.starts in (2, 3)  # the failed ping may or may not have got as far as starting an agent before adb refused
    time.sleep(0.3)
    assert _agents(phone) == [] and _jobs(dev) == ""


# -- whole runs -------------------------------------------------------------------------------------------
def _run_config(trained_tinycnn) -> Any:
    from edgecam.config import BenchSpec, RuntimeSpec

    cfg = trained_tinycnn.cfg
    return cfg.replace(
        data=dataclasses.replace(cfg.data, limit=8),
        export=dataclasses.replace(cfg.export, precisions=("fp32", "int8")),
        runtimes=(RuntimeSpec("onnxruntime", threads=1),),
        bench=BenchSpec(warmup=2, iterations=10, memory=True),
        explain=dataclasses.replace(cfg.explain, methods=("gradcampp", "eigencam", "scorecam", "rise"), faithfulness_images=4, faithfulness_steps=8, shard_size=4,
                                    method_options=(("rise_masks", 200),)),
    )


@pytest.fixture(scope="module")
def local_run(trained_tinycnn, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    from edgecam.bench.sweep import run

    return run(_run_config(trained_tinycnn), tmp_path_factory.mktemp("local-run"), log=lambda m: None)["results"]


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert len(a) == len(b) and not b.duplicated(KEY_COLUMNS).any()
    a, b = a.sort_values(KEY_COLUMNS).reset_index(drop=True), b.sort_values(KEY_COLUMNS).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[KEY_COLUMNS], b[KEY_COLUMNS])
    np.testing.assert_allclose(a[METRICS].to_numpy(float), b[METRICS].to_numpy(float), atol=1e-5)


def test_a_whole_run_over_adb_gives_the_local_rows_with_every_cam_method(phone: AdbBoard, trained_tinycnn, local_run: pd.DataFrame, tmp_path: Path) -> None:
    from edgecam.bench.sweep import run

    out = run(_run_config(trained_tinycnn), tmp_path / "run", log=lambda m: None, device_spec=phone.spec())
    assert not out["manifest"]["failed"]
    res = out["results"]
    assert set(res["device"]) == {"phone"} and set(res["cam_method"]) == {"gradcampp", "eigencam", "scorecam", "rise"}
    assert res["deletion_auc"].notna().sum() > 0  # Deletion / Insertion ran through the adb session
    _same_rows(local_run, res)
    device = out["manifest"]["device"]
    assert device["kind"] == "adb" and device["os"] == "Android 14 (API 34)" and device["inventory"]["adb"] == str(phone.adb)
    bench = pd.read_csv(tmp_path / "run" / "bench.csv")
    assert (bench["p50_ms"] > 0).all() and (bench["peak_rss_mb"] > 0).all()  # timing and memory passes on the device


def test_adbd_killed_mid_run_then_resume_gives_the_same_rows(phone: AdbBoard, trained_tinycnn, local_run: pd.DataFrame, tmp_path: Path) -> None:
    """adbd dies while the explain stage's agents compute and stays down a moment: the jobs in flight fail with
    the reason (the run finishes, its failures listed), and `resume` redoes only those once adbd is back."""
    from edgecam.bench.sweep import run

    stop, killed = threading.Event(), []  # type: ignore[var-annotated]

    def kill_in_explain() -> None:
        while not stop.is_set():
            if _agents(phone, "serve"):
                time.sleep(0.2)
                phone.kill_adbd()
                killed.append(time.monotonic())
                time.sleep(3)
                phone.start_adbd(connect=False)
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_in_explain)
    killer.start()
    try:
        first = run(_run_config(trained_tinycnn), tmp_path / "run", log=lambda m: None, device_spec=phone.spec())
    finally:
        stop.set()
        killer.join()
    assert killed, "adbd was never killed"
    failed = first["manifest"]["failed"]
    assert failed, "no job failed: adbd was killed after the work"
    out = run(_run_config(trained_tinycnn), tmp_path / "run", log=lambda m: None, device_spec=phone.spec(), resume=True)
    assert not out["manifest"]["failed"]
    _same_rows(local_run, out["results"])
