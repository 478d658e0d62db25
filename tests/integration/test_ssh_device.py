"""SSH devices against a real OpenSSH server on loopback (see sshd_server.py): the same logits and CAM
metrics as the local device, a dropped connection recovered without loss or duplicates, unknown host keys
refused, hostile file names harmless, and an agent that runs on a Python without torch."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sshd_server import SshServer, board, board_spec, board_workdir, sshd  # noqa: F401 - board and sshd are fixtures

from edgecam.devices.answers import BadAnswer
from edgecam.devices.base import DeviceError, JobFailed, RunResult
from edgecam.devices.inventory import open_device
from edgecam.devices.local import LocalDevice
from edgecam.devices.ssh import HostKeyError, SSHDevice
from edgecam.runtimes.fault import HELPER_MARK

JOB = {"runtime": "onnxruntime", "runtime_options": {"threads": 1}, "warmup": 2, "iterations": 20, "batch_size": 1, "mode": "run"}
KEY_COLUMNS = ["model", "format", "runtime", "precision", "cam_method", "image_id"]
METRICS = ["sim_fp32", "cc_fp32", "kld_fp32", "sim_gt", "cc_gt", "kld_gt", "pred"]


def test_probe_over_ssh_reports_the_boards_python_and_runtimes(board: SSHDevice, sshd: SshServer) -> None:
    info = board.info()
    board_python = subprocess.run([sshd.python, "-c", "import platform; print(platform.python_version())"], capture_output=True, text=True, check=True).stdout.strip()
    assert info["python"] == board_python and info["kind"] == "ssh"
    assert info["runtimes"]["onnxruntime"] and info["runtimes"]["tensorrt"] is None
    assert info["cores"] >= 1 and info["ram_bytes"] > 2**28 and info["arch"]


def test_agent_runs_on_a_python_without_torch(board: SSHDevice, sshd: SshServer, trained_tinycnn) -> None:
    no_torch = board.run([*board.python(), "-c", "import torch"])
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    no_edgecam = board.run([*board.python(), "-c", "import edgecam"])
    assert no_edgecam.returncode != 0  # everything the agent imports comes from the zipapp
    result, outputs = board.run_job(trained_tinycnn.artifacts["fp32"], trained_tinycnn.data.test_x[:4], JOB)
    assert outputs["logits"].shape == (4, 10) and result["python"] == board.info()["python"]


def test_ssh_logits_match_the_local_device(board: SSHDevice, trained_tinycnn, tmp_path: Path) -> None:
    x = trained_tinycnn.data.test_x[:64]
    local = LocalDevice(workdir=str(tmp_path / "local"))
    for precision in ("fp32", "int8"):
        _, remote_out = board.run_job(trained_tinycnn.artifacts[precision], x, JOB)
        _, local_out = local.run_job(trained_tinycnn.artifacts[precision], x, JOB)
        for key in ("logits", "features"):
            assert np.abs(remote_out[key] - local_out[key]).max() < 1e-5, (precision, key)
    assert board.run(["ls", "-A", f"{board.workdir()}/jobs"]).stdout.strip() == ""  # job dirs cleaned up


def _kill_connection_when_a_job_runs(sshd: SshServer, stop: threading.Event, killed: list[int]) -> None:
    """Wait until some agent has written its pid file on the board, then kill the sshd processes serving
    the connection: the session drops mid-job."""
    jobs = sshd.home / board_workdir(sshd) / "jobs"
    while not stop.is_set():
        if any(jobs.glob("*/agent.pid")):
            killed.extend(sshd.drop_connections())
            return
        time.sleep(0.005)


def test_connection_dropped_mid_job_is_retried_without_loss(board: SSHDevice, sshd: SshServer, trained_tinycnn, tmp_path: Path) -> None:
    x = trained_tinycnn.data.test_x[:32]
    job = {**JOB, "iterations": 3000}  # ~1 s of timed runs: long enough to be cut in the middle
    stop, killed = threading.Event(), []  # type: ignore[var-annotated]
    killer = threading.Thread(target=_kill_connection_when_a_job_runs, args=(sshd, stop, killed))
    killer.start()
    try:
        result, outputs = board.run_job(trained_tinycnn.artifacts["int8"], x, job)
    finally:
        stop.set()
        killer.join()
    assert killed, "the connection was never dropped"
    assert board.reconnects >= 1
    assert len(result["samples_s"]) == 3000  # a whole timed run, not the cut one and not two glued together
    _, local_out = LocalDevice(workdir=str(tmp_path / "local")).run_job(trained_tinycnn.artifacts["int8"], x, {**JOB, "iterations": 5})
    assert np.abs(outputs["logits"] - local_out["logits"]).max() < 1e-5
    assert "agent" not in subprocess.run(["pgrep", "-u", sshd.user, "-af", "edgecam-agent"], capture_output=True, text=True).stdout
    assert subprocess.run(["pgrep", "-u", sshd.user, "-f", HELPER_MARK], capture_output=True, text=True).stdout == ""  # the whole group went


def test_a_job_finished_while_disconnected_is_pulled_not_rerun(board: SSHDevice, trained_tinycnn) -> None:
    """Simulate a host that lost contact after the device finished: the result on the board is reused."""
    x = trained_tinycnn.data.test_x[:3]
    calls: list[str] = []
    original = board.run_agent

    def run_then_forget(remote_job: str, timeout: float | None) -> Any:
        calls.append(remote_job)
        res = original(remote_job, timeout)
        if len(calls) == 1:  # the agent finished; the host never heard back
            raise KeyboardInterrupt
        return res

    board.run_agent = run_then_forget  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        board.run_job(trained_tinycnn.artifacts["fp32"], x, JOB)
    first, _ = board.run_job(trained_tinycnn.artifacts["fp32"], x, JOB)
    assert len(calls) == 1 and first["resumed"] is True


def test_unknown_host_key_is_refused_with_how_to_trust_it(sshd: SshServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    device = open_device(board_spec(sshd, known_hosts=str(empty)))
    with pytest.raises(HostKeyError, match=rf"not in {empty}.*ssh-keyscan -p {sshd.port} 127.0.0.1"):
        device.info()
    insecure = open_device(board_spec(sshd, known_hosts=str(empty), host_key_check=False))
    with caplog.at_level(logging.WARNING, logger="edgecam.devices.ssh"):
        assert insecure.info()["kind"] == "ssh"
    assert "host key checking is OFF" in caplog.text
    insecure.close()  # type: ignore[attr-defined]


def test_changed_host_key_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(wrong.with_suffix('.pub').read_text().split()[:2])}\n")
    with pytest.raises(HostKeyError, match="CHANGED"):
        open_device(board_spec(sshd, known_hosts=str(known))).info()


def test_hostile_file_names_are_quoted_and_run_nothing_else(board: SSHDevice, sshd: SshServer, trained_tinycnn, tmp_path: Path) -> None:
    from edgecam.cache import sha256_file

    evil = "model 'x\" ; touch PWNED; $(touch PWNED2) `touch PWNED3`.onnx"
    art = tmp_path / "art; touch PWNED4 'q\""
    shutil.copytree(trained_tinycnn.artifacts["fp32"], art)
    (art / "model.onnx").rename(art / evil)
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["file"] = evil
    manifest["sha256"] = sha256_file(art / evil)
    (art / "manifest.json").write_text(json.dumps(manifest))
    result, outputs = board.run_job(art, trained_tinycnn.data.test_x[:2], JOB)
    assert outputs["logits"].shape == (2, 10)
    found = subprocess.run(["find", str(sshd.home), "/tmp", "-name", "PWNED*"], capture_output=True, text=True).stdout
    assert found == ""


def test_bad_job_on_the_board_fails_with_the_cause(board: SSHDevice, trained_tinycnn, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(trained_tinycnn.artifacts["fp32"], bad)
    (bad / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(JobFailed, match="INVALID_PROTOBUF|Protobuf|model.onnx"):
        board.run_job(bad, trained_tinycnn.data.test_x[:2], JOB)
    assert board.run(["ls", "-A", f"{board.workdir()}/jobs"]).stdout.strip() == ""


@pytest.mark.parametrize(("fault", "timeout", "message"), [("hang", 4, "timed out after 4 s"), ("hang-child", 4, "timed out after 4 s"),
                                                      ("segfault", 60, "no result|killed by SIGSEGV|exited"), ("exit", 60, "exited 3")])
def test_failed_jobs_leave_no_folder_or_process_on_the_board(board: SSHDevice, sshd: SshServer, trained_tinycnn, fault: str, timeout: float, message: str) -> None:
    """Clean boards: a crashed, exited or timed-out job's folder (which holds its inputs) is removed, and a
    timed-out agent, which outlives its closed channel, is stopped."""
    job = {**JOB, "mode": "forward", "runtime": "fault", "runtime_options": {"fault": fault}}
    with pytest.raises(JobFailed, match=message):
        board.run_job(trained_tinycnn.artifacts["fp32"], trained_tinycnn.data.test_x[:2], job, timeout=timeout)
    assert board.run(["ls", "-A", f"{board.workdir()}/jobs"]).stdout.strip() == ""
    time.sleep(0.3)
    assert "agent" not in subprocess.run(["pgrep", "-u", sshd.user, "-af", "edgecam-agent"], capture_output=True, text=True).stdout
    assert subprocess.run(["pgrep", "-u", sshd.user, "-f", HELPER_MARK], capture_output=True, text=True).stdout == ""  # the whole group went
    assert board.exists(f"{board.workdir()}/artifacts/{trained_tinycnn.artifacts['fp32'].name}/manifest.json")  # artifacts stay


# -- whole runs -------------------------------------------------------------------------------------------
def _run_config(trained_tinycnn) -> Any:
    from edgecam.config import BenchSpec, RuntimeSpec

    cfg = trained_tinycnn.cfg
    return cfg.replace(
        data=dataclasses.replace(cfg.data, limit=10),
        export=dataclasses.replace(cfg.export, precisions=("fp32", "int8")),
        runtimes=(RuntimeSpec("onnxruntime", threads=1),),
        bench=BenchSpec(warmup=2, iterations=10, memory=False),
    )


@pytest.fixture(scope="module")
def local_run(trained_tinycnn, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    from edgecam.bench.sweep import run

    out = run(_run_config(trained_tinycnn), tmp_path_factory.mktemp("local-run"), log=lambda m: None)
    return out["results"]


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert len(a) == len(b) and not b.duplicated(KEY_COLUMNS).any()
    a, b = a.sort_values(KEY_COLUMNS).reset_index(drop=True), b.sort_values(KEY_COLUMNS).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[KEY_COLUMNS], b[KEY_COLUMNS])
    np.testing.assert_allclose(a[METRICS].to_numpy(float), b[METRICS].to_numpy(float), atol=1e-5)


def test_run_over_ssh_gives_the_local_metrics(sshd: SshServer, trained_tinycnn, local_run: pd.DataFrame, tmp_path: Path) -> None:
    from edgecam.bench.sweep import run

    out = run(_run_config(trained_tinycnn), tmp_path / "run", log=lambda m: None, device_spec=board_spec(sshd))
    assert set(out["results"]["device"]) == {"board"}
    _same_rows(local_run, out["results"])
    manifest = out["manifest"]
    assert manifest["device"]["kind"] == "ssh" and manifest["device"]["inventory"]["url"] == sshd.url
    assert "key_file" not in manifest["device"]["inventory"]
    assert str(sshd.key_file) not in (tmp_path / "run" / "manifest.json").read_text()


def test_run_over_ssh_survives_a_dropped_connection(sshd: SshServer, trained_tinycnn, local_run: pd.DataFrame, tmp_path: Path) -> None:
    from edgecam.bench.sweep import run

    stop, killed = threading.Event(), []  # type: ignore[var-annotated]
    killer = threading.Thread(target=_kill_connection_when_a_job_runs, args=(sshd, stop, killed))
    killer.start()
    try:
        out = run(_run_config(trained_tinycnn), tmp_path / "run", log=lambda m: None, device_spec=board_spec(sshd))
    finally:
        stop.set()
        killer.join()
    assert killed and not out["manifest"]["failed"]
    _same_rows(local_run, out["results"])


def test_remote_command_timeout_and_exit_codes(board: SSHDevice) -> None:
    from edgecam.devices.base import DeviceError

    with pytest.raises(DeviceError, match=r"timed out after 0.5 s"):
        board.run(["sleep", "5"], timeout=0.5)
    res = board.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (res.returncode, res.stdout, res.stderr) == (3, "out\n", "err\n")


def test_no_secret_reaches_the_run_dir_or_the_log(sshd: SshServer, trained_tinycnn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A passphrase-protected key (passphrase from the environment variable the inventory names): the run
    works, and neither the passphrase, nor the private key, nor its path appear in any file of the run
    directory or in the log."""
    import secrets
    import subprocess

    from edgecam.bench.sweep import run

    passphrase = f"edgecam-pass-{secrets.token_hex(8)}"
    key = Path(tempfile.mkdtemp(prefix="edgecam-key-")) / "locked_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "locked", "-f", str(key)], check=True)
    auth = sshd.key_file.parent / "authorized_keys"
    auth.write_text(auth.read_text() + key.with_suffix(".pub").read_text())
    monkeypatch.setenv("EDGECAM_TEST_PASSPHRASE", passphrase)
    log: list[str] = []
    cfg = _run_config(trained_tinycnn)
    cfg = cfg.replace(data=dataclasses.replace(cfg.data, limit=4))
    out_dir = tmp_path / "run"
    out = run(cfg, out_dir, log=log.append, device_spec=board_spec(sshd, key_file=str(key), passphrase_env="EDGECAM_TEST_PASSPHRASE"))
    assert not out["failed"] and len(out["results"]) > 0
    private_body = [line for line in key.read_text().splitlines() if line and not line.startswith("-----")]
    needles = [passphrase.encode(), str(key).encode(), *(line.encode() for line in private_body)]
    files = [p for p in out_dir.rglob("*") if p.is_file()]
    assert len(files) > 10
    for p in files:
        blob = p.read_bytes()
        assert not any(n in blob for n in needles), f"a secret leaked into {p}"
    assert not any(passphrase in line or str(key) in line for line in log)


@pytest.mark.parametrize("kind", ["missing", "a-directory", "rsa-not-authorized"])
def test_key_errors_are_answers_not_retries_and_never_name_the_key(sshd: SshServer, tmp_path: Path, kind: str) -> None:
    """A missing key file or one that is no file, or a key the board refuses (an RSA key: paramiko reports it as a key-type
    parse error, not an authentication failure): refused at once (no reconnect, no backoff), the message
    says what to check, and neither the log nor the error holds the key's path."""
    from edgecam.devices.ssh import AuthError

    key = tmp_path / "secret-dir" / "id_test"
    key.parent.mkdir()
    if kind == "a-directory":
        key.mkdir()
    elif kind == "rsa-not-authorized":
        subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(key)], check=True)
    device = open_device(board_spec(sshd, key_file=str(key), retries=3))
    assert isinstance(device, SSHDevice)
    device.backoff_s = 5.0  # a retry would show in the time taken
    t0 = time.monotonic()
    with pytest.raises(AuthError) as info:
        device.info()
    assert time.monotonic() - t0 < 5.0 and device.reconnects == 0
    assert str(key) not in str(info.value) and "secret-dir" not in str(info.value)
    assert ("missing or not readable" if kind != "rsa-not-authorized" else "authentication failed") in str(info.value)


def test_a_board_without_sftp_gets_its_files_over_the_exec_channel(trained_tinycnn, local_run: pd.DataFrame, tmp_path: Path) -> None:
    """An sshd with no `Subsystem sftp` (as dropbear and many embedded boards): probe, jobs and a whole run work,
    files streamed as tar over exec channels, with the local metrics; nothing is left in the board's jobs."""
    from sshd_server import start_sshd

    from edgecam.bench.sweep import run

    root = Path(tempfile.mkdtemp(prefix="edgecam-sshd-nosftp-"))
    server = start_sshd(root, sftp=False)
    try:
        device = open_device(board_spec(server))
        assert isinstance(device, SSHDevice)
        facts = device.info()
        assert device.has_sftp is False and facts["runtimes"]["onnxruntime"]
        x = trained_tinycnn.data.test_x[:5]
        result, outputs = device.run_job(trained_tinycnn.artifacts["int8"], x, JOB)
        _, local_out = LocalDevice(workdir=str(tmp_path / "local")).run_job(trained_tinycnn.artifacts["int8"], x, JOB)
        assert len(result["samples_s"]) == JOB["iterations"] and np.abs(outputs["logits"] - local_out["logits"]).max() < 1e-5
        assert device.run(["ls", "-A", f"{device.workdir()}/jobs"]).stdout.strip() == ""
        big = f"{device.workdir()}/big.bin"  # a pull is capped by the size the board reported: a board cannot flood the host
        assert device.run(["sh", "-c", 'head -c 20000000 /dev/zero > "$1"', "sh", big]).returncode == 0
        device.pull(big, tmp_path / "big.bin")
        assert (tmp_path / "big.bin").stat().st_size == 20_000_000
        real_exec = device._exec
        lying = lambda command, timeout: RunResult(0, "1\tbig.bin\n", "", 0.0) if command.startswith("du ") else real_exec(command, timeout)  # noqa: E731
        device._exec = lying  # type: ignore[method-assign]
        with pytest.raises(BadAnswer, match="more than .* bytes of output; refused"):  # a JobFailed: its job fails, the run goes on
            device.pull(big, tmp_path / "big2.bin")
        device._exec = real_exec  # type: ignore[method-assign]
        assert not (tmp_path / "big2.bin").exists()
        with pytest.raises(BadAnswer, match="more than 2,097,152 bytes of output; refused"):  # the host's own bound: the board's du is not asked
            device.pull(big, tmp_path / "big3.bin", max_bytes=1 << 20)
        assert not (tmp_path / "big3.bin").exists()
        device.cleanup(big)
        device.close()
        out = run(_run_config(trained_tinycnn), tmp_path / "run", log=lambda m: None, device_spec=board_spec(server))
        assert not out["failed"]
        _same_rows(local_run, out["results"])
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(Path(server.home) / board_workdir(server), ignore_errors=True)


def test_an_upload_cut_off_leaves_no_partial_copy_on_the_board(board: SSHDevice, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each push goes to one temporary sibling, reused by its retries and removed when they are spent: a link
    that drops mid-upload leaves neither `.NAME.*.part` copies nor a half tree under the final name."""
    import paramiko

    src = tmp_path / "payload"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}.bin").write_bytes(bytes([i]) * 50_000)
    parent = f"{board.workdir()}/push-test"
    real_put = paramiko.SFTPClient.put
    cuts = {"left": 2}

    def flaky_put(self: Any, localpath: str, remotepath: str, *args: Any, **kwargs: Any) -> Any:
        if localpath.endswith("f2.bin") and cuts["left"] > 0:  # two files are up when the link drops
            cuts["left"] -= 1
            raise EOFError("link dropped")
        return real_put(self, localpath, remotepath, *args, **kwargs)

    monkeypatch.setattr(paramiko.SFTPClient, "put", flaky_put)
    monkeypatch.setattr(board, "backoff_s", 0.05)
    board.push(src, f"{parent}/ok")  # two cut-off attempts, then a whole copy
    listing = board.run(["ls", "-A", parent]).stdout.split()
    assert listing == ["ok"], listing
    assert sorted(board.run(["ls", "-A", f"{parent}/ok"]).stdout.split()) == [f"f{i}.bin" for i in range(4)]

    cuts["left"] = 99  # every attempt cut off: the push fails and takes its temporary copy with it
    with pytest.raises(Exception, match="link dropped"):
        board.push(src, f"{parent}/never")
    assert board.run(["ls", "-A", parent]).stdout.split() == ["ok"]
    board.cleanup(parent)


def test_only_the_results_come_back_from_a_job(board: SSHDevice, trained_tinycnn, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job's inputs crossed the link once: only result.json and outputs.npz are pulled back."""
    pulled: list[str] = []
    real_pull = board.pull

    def spy(remote: str, local: Path, max_bytes: int | None = None) -> None:
        pulled.append(remote.rsplit("/", 1)[-1])
        assert max_bytes is not None  # every answer is pulled within the host's bound
        real_pull(remote, local, max_bytes)

    monkeypatch.setattr(board, "pull", spy)
    board.run_job(trained_tinycnn.artifacts["fp32"], trained_tinycnn.data.test_x[:3], {**JOB, "mode": "run"})
    assert sorted(pulled) == ["outputs.npz", "result.json"]


def test_an_unreadable_default_key_is_an_answer_without_its_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no key_file, paramiko reads ~/.ssh's default keys itself; one it cannot read (as a non-root user
    with a key of another owner: not reproducible as root, so paramiko's error is injected here) is an
    AuthError without the path, not a lost connection retried three times."""
    import paramiko

    from edgecam.devices.ssh import AuthError

    def connect(self: Any, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied", "/home/someone/.ssh/id_ed25519")

    monkeypatch.setattr(paramiko.SSHClient, "connect", connect)
    device = SSHDevice("ssh://u@127.0.0.1:1", name="orin", retries=3)
    device.backoff_s = 5.0
    t0 = time.monotonic()
    with pytest.raises(AuthError) as info:
        device.run(["true"])
    assert time.monotonic() - t0 < 5.0 and device.reconnects == 0
    assert "id_ed25519" not in str(info.value) and "Permission denied" in str(info.value)
