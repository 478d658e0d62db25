"""The persistent device session on the local device: one agent process serves many requests, its ops give
what today's per-job path and the host-side maths give, malformed frames are refused without ending the
loop, hung or crashed agents are killed and replaced, and nothing is left on the board."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from edgecam import perturb as P
from edgecam.devices.archive import build_agent_archive
from edgecam.devices.base import Device, DeviceTimeout, JobFailed
from edgecam.devices.local import LocalDevice
from edgecam.devices.persistent import PerRequestSession
from edgecam.devices.protocol import FIXED, MAGIC, encode_frame, frame_size, read_frame, stream_readinto
from edgecam.devices.session import DeviceSession

JOB = {"runtime": "onnxruntime", "runtime_options": {"threads": 1}, "output_batch_size": 16}


def _jobs(dev: LocalDevice) -> list[Path]:
    d = Path(dev.workdir()) / "jobs"
    return sorted(d.iterdir()) if d.is_dir() else []


def _serve_processes() -> list[psutil.Process]:
    return [c for c in psutil.Process().children(recursive=True) if "serve" in c.cmdline()]


@pytest.fixture()
def dev(tmp_path: Path) -> LocalDevice:
    return LocalDevice(workdir=str(tmp_path / "dev"))


def test_forward_and_masked_match_todays_jobs_and_one_process_serves_them_all(trained_tinycnn, dev: LocalDevice) -> None:
    x = trained_tinycnn.data.test_x[:20]
    masks = np.random.default_rng(0).random((3, 5, *x.shape[2:])).astype(np.float32)
    for precision in ("fp32", "int8"):
        art = trained_tinycnn.artifacts[precision]
        _, ref = dev.run_job(art, x, {**JOB, "mode": "forward"})
        _, ref_masked = dev.run_job(art, x[:3], {**JOB, "mode": "masked"}, extra={"masks": masks})
        with dev.session(art, JOB) as s:
            pids = set()
            out = s.forward(x, outputs=None)
            pids.add(s.last_reply["pid"])
            assert _serve_processes()[0].pid == s.hello["pid"]
            for i in range(0, 20, 4):  # many requests, one process
                part = s.forward(x[i : i + 4])
                assert set(part) == {"logits"}
                np.testing.assert_allclose(part["logits"], ref["logits"][i : i + 4], atol=1e-6)
                pids.add(s.last_reply["pid"])
            logits = s.masked(x[:3], masks)
            pids.add(s.last_reply["pid"])
            assert len(_serve_processes()) == 1
            assert s.starts == 1 and pids == {s.hello["pid"]} and s.calls == 7
        for k in ("logits", "features"):
            np.testing.assert_allclose(out[k], ref[k], atol=1e-6)
        np.testing.assert_allclose(logits, ref_masked["logits"], atol=1e-6)
        assert _serve_processes() == [] and _jobs(dev) == []  # the agent ended, its folder removed


def test_scorecam_op_equals_the_host_composed_masks(trained_tinycnn, dev: LocalDevice) -> None:
    import torch

    art = trained_tinycnn.artifacts["fp32"]
    x = trained_tinycnn.data.test_x[:3]
    with dev.session(art, JOB) as s:
        feats = s.forward(x, outputs=["features"])["features"]
        h, w = x.shape[2:]
        a = torch.nn.UpsamplingBilinear2d(size=(h, w))(torch.from_numpy(feats)).numpy()  # the package's ScoreCAM upsampling
        lo, hi = a.min(axis=(2, 3), keepdims=True), a.max(axis=(2, 3), keepdims=True)
        masks = ((a - lo) / (hi - lo + np.float32(1e-8))).astype(np.float32)
        _, ref = dev.run_job(art, x, {**JOB, "mode": "masked"}, extra={"masks": masks})
        for max_inputs in (256, 40):  # chunks of 48 (40 rounded up to whole batches) and of all 96 maps
            logits = s.scorecam(x, feats, max_inputs=max_inputs)
            assert logits.shape == (3 * feats.shape[1], 10)
            np.testing.assert_allclose(logits, ref["logits"], atol=1e-5)  # torch's upsampling vs the device's matrices: float32 round-off
        sent = s.bytes_sent
        s.scorecam(x, feats)
        assert s.bytes_sent - sent == frame_size({"op": "scorecam", "id": s.calls, "params": {"max_inputs": 256}}, {"images": x, "maps": feats})
        assert s.bytes_sent - sent < x.nbytes + feats.nbytes + 1024  # the images and the low-resolution maps, no masks


def _host_rise(forward: Any, x: np.ndarray, targets: np.ndarray, masks: np.ndarray, p: float) -> np.ndarray:
    """explain/cams.py Rise.__call__ before its final resize: sum_m softmax(f(I * M_m))[t] M_m / (n p)."""
    out = []
    for i, img in enumerate(x):
        logits = np.asarray(forward(img[None] * masks[:, None]), dtype=np.float64)
        prob = np.exp(logits - logits.max(1, keepdims=True))
        prob /= prob.sum(1, keepdims=True)
        out.append(np.tensordot(prob[:, int(targets[i])], masks, axes=1) / (len(masks) * p))
    return np.stack(out)


def test_rise_op_equals_host_rise_with_the_same_seed(trained_tinycnn, dev: LocalDevice) -> None:
    from edgecam.explain.cams import rise_masks

    art = trained_tinycnn.artifacts["fp32"]
    x = trained_tinycnn.data.test_x[:2]
    n, cells, p, seed = 120, 8, 0.5, 3
    with dev.session(art, JOB) as s:
        targets = s.forward(x)["logits"].argmax(1)
        sal = s.rise(x, targets, n, cells, p, seed, max_inputs=50)
        assert sal.shape == (2, 64, 64) and sal.dtype == np.float32
        same_masks = _host_rise(lambda b: s.forward(b)["logits"], x, targets, P.rise_masks(n, cells, (64, 64), p, seed), p)
        np.testing.assert_allclose(sal, same_masks, rtol=1e-6, atol=1e-7)
        assert np.array_equal(s.rise(x, targets, n, cells, p, seed, max_inputs=50), sal)  # seeded: the same again
        assert not np.allclose(s.rise(x, targets, n, cells, p, seed + 1), sal)
    # today's host path (cv2 masks, a forward job per image): the same saliency
    host = _host_rise(lambda b: dev.run_job(art, b, {**JOB, "mode": "forward"})[1]["logits"], x, targets, rise_masks(n, cells, (64, 64), p, seed), p)
    np.testing.assert_allclose(sal, host, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("baseline", ["zero", "blur", 0.25])
def test_perturb_op_equals_the_faithfulness_inputs(trained_tinycnn, dev: LocalDevice, baseline: Any) -> None:
    from edgecam.explain.faithfulness import perturbation_series

    art = trained_tinycnn.artifacts["fp32"]
    x = trained_tinycnn.data.test_x[:2]
    cams = np.random.default_rng(5).random((2, 64, 64))
    cams[1, :8] = 0.5  # ties
    steps = 6
    series = [np.concatenate(perturbation_series(x[i], cams[i], steps, baseline)) for i in range(2)]
    _, ref = dev.run_job(art, np.concatenate(series), {**JOB, "mode": "forward"})
    ref_logits = ref["logits"].reshape(2, 2 * (steps + 1), -1)
    with dev.session(art, JOB) as s:
        both = s.perturb(x, cams, steps, "both", baseline).reshape(2, 2 * (steps + 1), -1)
        np.testing.assert_allclose(both, ref_logits, atol=1e-5)
        deletion = s.perturb(x, cams, steps, "deletion", baseline).reshape(2, steps + 1, -1)
        insertion = s.perturb(x, cams.astype(np.float32), steps, "insertion", baseline).reshape(2, steps + 1, -1)
        np.testing.assert_allclose(np.concatenate([deletion, insertion], 1), both, atol=1e-6)
        arr = s.perturb(x, cams, steps, "deletion", np.full((x.shape[1], 1, 1), 0.25, np.float32))
        if baseline == 0.25:
            np.testing.assert_allclose(arr.reshape(deletion.shape), deletion, atol=1e-6)


def test_the_agent_refuses_bad_frames_and_keeps_serving(trained_tinycnn, tmp_path: Path) -> None:
    """Raw frames into `agent.pyz serve`: a length lie, a dtype outside the list, an oversize frame and an
    unknown op are each answered with a clear error; a good request after them is answered; a bad magic
    ends the process (the stream is out of step) with an error frame first."""
    art = trained_tinycnn.artifacts["fp32"]
    manifest = json.loads((art / "manifest.json").read_text())
    job = tmp_path / "job.json"
    job.write_text(json.dumps({**JOB, "artifact": str(art / manifest["file"]), "max_frame_bytes": 300_000}))
    proc = subprocess.Popen([sys.executable, str(build_agent_archive(tmp_path)), "serve", str(job)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    read = stream_readinto(proc.stdout)

    def raw(header: dict[str, Any], payload: bytes, declared: int | None = None, magic: bytes = MAGIC) -> None:
        text = json.dumps(header).encode()
        proc.stdin.write(FIXED.pack(magic, len(text), len(payload) if declared is None else declared) + text + payload)  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]

    try:
        hello, _, _ = read_frame(read)
        assert hello["ok"] and hello["op"] == "hello" and hello["max_frame_bytes"] == 300_000
        x = np.ascontiguousarray(trained_tinycnn.data.test_x[:2])
        raw({"op": "forward", "id": 1, "arrays": [{"name": "inputs", "dtype": "float32", "shape": list(x.shape)}]}, x.tobytes()[:-8])
        raw({"op": "forward", "id": 2, "arrays": [{"name": "inputs", "dtype": "object", "shape": [2]}]}, b"\0" * 16)
        big = np.zeros((10, *x.shape[1:]), np.float32)
        raw({"op": "forward", "id": 3, "arrays": [{"name": "inputs", "dtype": "float32", "shape": list(big.shape)}]}, big.tobytes())
        raw({"op": "explode", "id": 4}, b"")
        chunks, _ = encode_frame({"op": "forward", "id": 5, "params": {"outputs": None}}, {"inputs": x})
        proc.stdin.write(b"".join(bytes(c) for c in chunks))
        proc.stdin.flush()
        answers = [read_frame(read) for _ in range(5)]
        (lie, _, _), (dtype, _, _), (oversize, _, _), (unknown, _, _), (good, outputs, _) = answers
        assert (lie["id"], lie["ok"]) == (1, False) and "length mismatch" in lie["error"] and "payload bytes" in lie["error"]
        assert (dtype["id"], dtype["ok"]) == (2, False) and "dtype 'object' is not allowed" in dtype["error"]
        assert oversize["id"] is None and "oversize frame refused" in oversize["error"] and "max_frame_bytes" in oversize["error"]  # drained unread
        assert (unknown["id"], unknown["ok"]) == (4, False) and "unknown op 'explode'" in unknown["error"]
        assert good["id"] == 5 and good["ok"] and good["pid"] == hello["pid"] and outputs["logits"].shape == (2, 10)
        raw({"op": "ping", "id": 6}, b"", magic=b"\x80\x04\x95\x00")  # a pickle's first bytes: not a frame
        last, _, _ = read_frame(read)
        assert not last["ok"] and "bad frame magic" in last["error"]
        assert proc.wait(timeout=30) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()  # type: ignore[union-attr]


def test_failed_requests_leave_the_session_usable(trained_tinycnn, dev: LocalDevice) -> None:
    art = trained_tinycnn.artifacts["fp32"]
    x = trained_tinycnn.data.test_x[:2]
    with dev.session(art, {**JOB, "max_frame_bytes": 200_000}) as s:
        with pytest.raises(JobFailed, match="exceeds the session's frame cap of 200000 bytes"):
            s.forward(np.zeros((8, *x.shape[1:]), np.float32))  # refused on the host, never sent
        with pytest.raises(JobFailed, match=r"masks \(2, 3, 5, 5\) must be \(N, K, H, W\)[\s\S]*Traceback"):
            s.masked(x, np.zeros((2, 3, 5, 5), np.float32))
        with pytest.raises(JobFailed, match="kind must be one of"):
            s.perturb(x, np.zeros((2, 64, 64)), 4, "sideways")
        assert s.forward(x)["logits"].shape == (2, 10)
        assert s.starts == 1 and s.calls == 3  # the refused frame was never a call


def test_a_hung_agent_is_killed_and_a_crashed_one_replaced(trained_tinycnn, dev: LocalDevice) -> None:
    art = trained_tinycnn.artifacts["fp32"]
    x = trained_tinycnn.data.test_x[:2]
    with dev.session(art, {**JOB, "runtime": "fault", "runtime_options": {"fault": "hang"}}, timeout=3) as s:
        with pytest.raises(DeviceTimeout, match="forward request 1 timed out after 3 s; the agent was killed"):
            s.forward(x)
        assert not psutil.pid_exists(s.hello["pid"] if s.hello else -1) and _serve_processes() == []
        s.ping()  # a fresh agent; ping never reaches the runtime's run
        assert s.starts == 2
    with dev.session(art, {**JOB, "runtime": "fault", "runtime_options": {"fault": "segfault"}}) as s:
        with pytest.raises(JobFailed, match="died during forward request 1 .*killed by SIGSEGV"):
            s.forward(x)
        s.ping()
        assert s.starts == 2
    assert _serve_processes() == [] and _jobs(dev) == []


def test_an_agent_that_cannot_load_fails_with_the_cause_and_cleans_up(trained_tinycnn, dev: LocalDevice, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(trained_tinycnn.artifacts["fp32"], bad)
    (bad / "model.onnx").write_bytes(b"not an onnx file")
    s = dev.session(bad, JOB)
    assert len(_jobs(dev)) == 1  # job.json pushed
    with pytest.raises(JobFailed, match="could not start: .*(ArtifactCorrupt|INVALID_PROTOBUF|Protobuf)"):
        s.forward(trained_tinycnn.data.test_x[:1])
    s.close()
    assert _jobs(dev) == [] and _serve_processes() == []
    assert not (Path(dev.workdir()) / "artifacts" / "bad").exists()  # a corrupt copy is dropped, the next push is fresh


def test_failed_and_timed_out_jobs_are_removed_from_the_board(trained_tinycnn, dev: LocalDevice) -> None:
    art = trained_tinycnn.artifacts["fp32"]
    x = trained_tinycnn.data.test_x[:2]
    for fault, timeout in (("segfault", 60), ("hang", 3), ("exit", 60), ("raise", 60)):
        with pytest.raises(JobFailed):
            dev.run_job(art, x, {**JOB, "mode": "forward", "runtime": "fault", "runtime_options": {"fault": fault}}, timeout=timeout)
        assert _jobs(dev) == [], fault
    assert (Path(dev.workdir()) / "artifacts" / art.name / "manifest.json").is_file()  # the artifact stays


def test_byte_counters_are_the_frame_sizes(trained_tinycnn, dev: LocalDevice) -> None:
    art = trained_tinycnn.artifacts["fp32"]
    x = trained_tinycnn.data.test_x[:5]
    with dev.session(art, JOB) as s:
        out = s.forward(x)
        agent = psutil.Process(s.hello["pid"])
        written, received = agent.io_counters().write_chars, s.bytes_received
        s.forward(x[:2], outputs=None)
        s.ping()
        expected_sent = (
            frame_size({"op": "forward", "id": 1, "params": {"outputs": ["logits"]}}, {"inputs": x})
            + frame_size({"op": "forward", "id": 2, "params": {"outputs": None}}, {"inputs": x[:2]})
            + frame_size({"op": "ping", "id": 3, "params": {}})
        )
        assert s.bytes_sent == expected_sent and s.requests == 3
        # once loaded, every byte the agent writes is a frame: what it wrote is what the host counted
        assert s.bytes_received - received == agent.io_counters().write_chars - written > 2 * (10 + 96 * 64) * 4
        assert received > out["logits"].nbytes


def test_per_request_fallback_gives_the_same_answers(trained_tinycnn, dev: LocalDevice) -> None:
    """`Device.session`'s default (what adb uses): one agent process per request through push / run / pull."""
    art = trained_tinycnn.artifacts["int8"]
    x = trained_tinycnn.data.test_x[:6]
    with dev.session(art, JOB) as s:
        ref = s.forward(x, outputs=None)
        ref_cam = s.scorecam(x, ref["features"][:, :7])
    with Device.session(dev, art, JOB) as fb:
        assert isinstance(fb, PerRequestSession)
        out = fb.forward(x, outputs=None)
        cam = fb.scorecam(x, ref["features"][:, :7])
        with pytest.raises(JobFailed, match="unknown op"):
            fb.request("explode")
        assert fb.starts == 3 and fb.calls == 3
    for k in ref:
        np.testing.assert_allclose(out[k], ref[k], atol=1e-6)
    np.testing.assert_allclose(cam, ref_cam, atol=1e-6)
    assert _jobs(dev) == []


def test_device_session_runs_on_one_persistent_agent_and_charges_the_device_stage(trained_tinycnn, dev: LocalDevice) -> None:
    from edgecam.stages import clock

    art = trained_tinycnn.artifacts["fp32"]
    x = trained_tinycnn.data.test_x[:12]
    before = clock().snapshot().get("device", 0.0)
    with DeviceSession(dev, art, {"runtime": "onnxruntime", "runtime_options": {"threads": 1}}, max_inputs=5) as ds:
        logits = ds(x)["logits"]
        feats = DeviceSession(dev, art, JOB, outputs=None)
        f = feats(x[:3])["features"]
        feats.close()
        cam = ds.scorecam(x[:3], f)
        sal = ds.rise(x[:2], logits[:2].argmax(1), 40, 8)
        faith = ds.perturb(x[:2], np.random.default_rng(0).random((2, 64, 64)), 4)
        assert ds.session.starts == 1 and ds.calls == 3 + 3 and ds.inputs == 12 + 3 * 96 + 2 * 40 + 2 * 10
        assert ds.bytes_sent == ds.session.bytes_sent > x.nbytes and ds.bytes_received > 0
    assert logits.shape == (12, 10) and cam.shape == (3 * 96, 10) and sal.shape == (2, 64, 64) and faith.shape == (20, 10)
    assert clock().snapshot()["device"] > before
    assert _serve_processes() == [] and _jobs(dev) == []
