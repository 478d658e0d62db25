"""The persistent device session over SSH, against the real OpenSSH server on loopback (sshd_server.py) and
its torch-free board Python: the same answers as today's per-job path and as the local session, one agent
for many requests, a dropped connection mid-request recovered with the request resent once, a hung agent's
process group killed on the board, and a clean board afterwards."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sshd_server import SshServer, board, sshd  # noqa: F401 - board and sshd are fixtures

from edgecam.devices.base import DeviceTimeout, JobFailed
from edgecam.devices.local import LocalDevice
from edgecam.devices.protocol import frame_size
from edgecam.devices.ssh import SSHDevice, SSHSession

JOB = {"runtime": "onnxruntime", "runtime_options": {"threads": 1}, "output_batch_size": 16}


def _board_agents(sshd: SshServer, marker: str = "serve") -> list[str]:
    """Command lines of this sshd's agent processes that contain `marker` (descendants of this server only:
    another sshd of the same board user, e.g. a benchmark's, may be serving agents at the same time)."""
    import psutil

    lines = []
    for p in psutil.Process(sshd.proc.pid).children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if marker in cmd and "edgecam-agent" in cmd:
            lines.append(f"{p.pid} {cmd}")
    return lines


def _board_jobs(board: SSHDevice) -> str:
    return board.run(["sh", "-c", 'ls -A "$1" 2>/dev/null; true', "sh", f"{board.workdir()}/jobs"]).stdout.strip()


def test_ssh_session_answers_as_todays_jobs_and_the_local_session(board: SSHDevice, sshd: SshServer, trained_tinycnn, tmp_path: Path) -> None:
    art = trained_tinycnn.artifacts["int8"]
    x = trained_tinycnn.data.test_x[:12]
    masks = np.random.default_rng(0).random((3, 4, *x.shape[2:])).astype(np.float32)
    cams = np.random.default_rng(1).random((2, *x.shape[2:]))
    _, ref = board.run_job(art, x, {**JOB, "mode": "forward"})
    _, ref_masked = board.run_job(art, x[:3], {**JOB, "mode": "masked"}, extra={"masks": masks})
    with board.session(art, JOB) as remote, LocalDevice(workdir=str(tmp_path / "local")).session(art, JOB) as local:
        assert isinstance(remote, SSHSession)
        out = remote.forward(x, outputs=None)
        for k in ("logits", "features"):
            np.testing.assert_allclose(out[k], ref[k], atol=1e-6)
        np.testing.assert_allclose(remote.masked(x[:3], masks), ref_masked["logits"], atol=1e-6)
        assert len(_board_agents(sshd, remote.job_path)) == 1
        feats = out["features"][:3]
        targets = out["logits"][:2].argmax(1)
        for name, call in {
            "scorecam": lambda s: s.scorecam(x[:3], feats, max_inputs=64),
            "rise": lambda s: s.rise(x[:2], targets, 80, 8, 0.5, 7, max_inputs=32),
            "perturb": lambda s: s.perturb(x[:2], cams, 5, "both", "blur"),
        }.items():
            np.testing.assert_allclose(call(remote), call(local), atol=1e-6, err_msg=name)
        assert remote.starts == 1 and remote.calls == 5 and remote.last_reply["pid"] == remote.hello["pid"]
        assert remote.resends == 0
    assert _board_agents(sshd) == [] and _board_jobs(board) == ""


def _drop_when_in_flight(session: SSHSession, sshd: SshServer, stop: threading.Event, killed: list[int]) -> None:
    """Once the session's request is in flight and the board's agent has been computing for a moment, kill
    the sshd processes serving the connection: the link drops mid-request."""
    while not stop.is_set():
        if session.in_flight is not None and session.requests >= 2:
            time.sleep(0.4)
            killed.extend(sshd.drop_connections())
            return
        time.sleep(0.005)


def test_a_connection_dropped_mid_request_is_resent_once(board: SSHDevice, sshd: SshServer, trained_tinycnn, tmp_path: Path) -> None:
    art = trained_tinycnn.artifacts["fp32"]
    x = trained_tinycnn.data.test_x[:3]
    with LocalDevice(workdir=str(tmp_path / "local")).session(art, JOB) as local:
        targets = local.forward(x)["logits"].argmax(1)
        expected = local.rise(x, targets, 3000, 8, 0.5, 11)
    with board.session(art, JOB) as s:
        s.ping()  # request 1: the agent is up
        first_pid = s.hello["pid"]
        stop, killed = threading.Event(), []  # type: ignore[var-annotated]
        killer = threading.Thread(target=_drop_when_in_flight, args=(s, sshd, stop, killed))
        killer.start()
        try:
            sal = s.rise(x, targets, 3000, 8, 0.5, 11)  # request 2: ~seconds of device work, cut in the middle
        finally:
            stop.set()
            killer.join()
        assert killed, "the connection was never dropped"
        assert board.reconnects >= 1 and s.resends == 1 and s.starts == 2 and s.hello["pid"] != first_pid
        assert s.calls == 2 and s.requests == 3  # ping, the cut request, its one resend: one answer each call
        np.testing.assert_allclose(sal, expected, atol=1e-6)
        assert s.last_reply["id"] == 2 and s.last_reply["pid"] == s.hello["pid"]
        agents = _board_agents(sshd, s.job_path)
        assert len(agents) == 1  # the cut agent was stopped; only the new one runs
        s.ping()
        assert s.starts == 2
    assert _board_agents(sshd) == [] and _board_jobs(board) == ""


def test_a_hung_agent_is_killed_on_the_board(board: SSHDevice, sshd: SshServer, trained_tinycnn) -> None:
    art = trained_tinycnn.artifacts["fp32"]
    with board.session(art, {**JOB, "runtime": "fault", "runtime_options": {"fault": "hang"}}, timeout=4) as s:
        with pytest.raises(DeviceTimeout, match="forward request 1 timed out after 4 s; the agent was killed"):
            s.forward(trained_tinycnn.data.test_x[:2])
        time.sleep(0.3)
        assert _board_agents(sshd, s.job_path) == []  # its process group is gone from the board
        s.ping()  # a fresh agent answers
        assert s.starts == 2
    assert _board_agents(sshd) == [] and _board_jobs(board) == ""


def test_a_session_that_cannot_start_leaves_a_clean_board(board: SSHDevice, sshd: SshServer, trained_tinycnn, tmp_path: Path) -> None:
    bad = tmp_path / "bad-art"
    shutil.copytree(trained_tinycnn.artifacts["fp32"], bad)
    (bad / "model.onnx").write_bytes(b"not onnx")
    with board.session(bad, JOB) as s:
        with pytest.raises(JobFailed, match="could not start"):
            s.ping()
    assert _board_agents(sshd) == [] and _board_jobs(board) == ""


def test_bytes_on_the_wire_are_the_frames(board: SSHDevice, trained_tinycnn, tmp_path: Path) -> None:
    art = trained_tinycnn.artifacts["fp32"]
    x = trained_tinycnn.data.test_x[:4]
    maps = np.random.default_rng(2).random((4, 96, 8, 8)).astype(np.float32)
    with board.session(art, JOB) as s:
        s.forward(x)
        s.scorecam(x, maps)
        scorecam = frame_size({"op": "scorecam", "id": 2, "params": {"max_inputs": 256}}, {"images": x, "maps": maps})
        assert s.bytes_sent == frame_size({"op": "forward", "id": 1, "params": {"outputs": ["logits"]}}, {"inputs": x}) + scorecam
        assert s.bytes_received > (4 + 4 * 96) * 10 * 4  # the logits came back, framed
    full_masks = 4 * 96 * 64 * 64 * 4  # what the old masked path shipped for the same Score-CAM
    assert scorecam < x.nbytes + maps.nbytes + 2048 < full_masks / 10
