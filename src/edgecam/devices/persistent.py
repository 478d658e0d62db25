"""The host half of the persistent device session: one agent process (`agent.pyz serve JOB.json`) per
(device, artifact), which loads the runtime and the model once and answers framed requests until closed.

`PersistentSession` holds the protocol (`edgecam.devices.protocol`), the typed ops and the counters; a
transport subclass supplies five primitives: start the process, send bytes, receive bytes (both before a
deadline), tell whether it is alive, end it. `LocalSession` (devices/local.py: a subprocess and its pipes),
`SSHSession` (devices/ssh.py: one exec channel, surviving a dropped connection) and `AdbSession` (devices/adb.py:
`adb shell -T`) stream; `PerRequestSession` here runs one agent process per request through the device's push /
run / pull (the fallback for a transport without a streaming channel).

Every request has an id; its answer carries the same id, and frames with another id (a process that was
replaced) are dropped, so a resent request is answered once. A request past `timeout` kills the agent (its
whole process group) and raises `DeviceTimeout`; a dead agent raises `JobFailed` with its exit status and
stderr; either way the next request starts a fresh agent. The session's job folder on the device (job.json)
is removed on close; the artifact stays, cached by its sha256.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from edgecam.devices.answers import SLACK_BYTES, answer_bound, expect_arrays, output_row_bytes
from edgecam.devices.errors import DeviceError, DeviceTimeout, JobFailed
from edgecam.devices.protocol import DEFAULT_MAX_FRAME_BYTES, WATCHDOG_GRACE_S, FrameError, encode_frame, read_frame

if TYPE_CHECKING:
    from edgecam.devices.transport import Transport

CLOSE_TIMEOUT_S = 10.0
STDERR_TAIL = 4000


def _f32(a: Any) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


class PersistentSession:
    """One agent process serving requests for one artifact on one device; a context manager. Requests from
    several threads are served one at a time (a lock around each round trip).

    Counters: `calls` (requests answered), `requests` (request frames sent, resends included), `starts`
    (agent processes started), `resends` (requests sent again after a lost connection), `bytes_sent` /
    `bytes_received` (whole frames, hello and close included)."""

    streaming = True  # one process for many requests (False: PerRequestSession)

    def __init__(self, device: "Transport", artifact_dir: str | Path, job: dict[str, Any], timeout: float | None = 600) -> None:
        self.device = device
        self.artifact_dir = Path(artifact_dir)
        self.timeout = timeout
        self.max_frame_bytes = int(job.get("max_frame_bytes") or DEFAULT_MAX_FRAME_BYTES)
        self._row_bytes = output_row_bytes(artifact_dir)  # per input and output: bounds each answer (`_answer_cap`)
        self._answer_cap = self.max_frame_bytes  # the largest frame the next read accepts
        self.calls = self.requests = self.starts = self.resends = 0
        self.bytes_sent = self.bytes_received = 0
        self.hello: dict[str, Any] | None = None
        self.last_reply: dict[str, Any] | None = None  # header of the latest answer (its pid, compute_s, ...)
        self.in_flight: int | None = None  # id of the request sent and not yet answered
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._closed = False
        self.remote_artifact, manifest = device.ensure_artifact(self.artifact_dir)
        self.remote_dir = f"{device.workdir()}/jobs/session-{uuid.uuid4().hex[:16]}"
        self.job_path = f"{self.remote_dir}/job.json"
        watchdog = {"watchdog_s": float(timeout) + WATCHDOG_GRACE_S} if timeout else {}  # every request ends by itself if the host is gone
        self.job = {**job, **watchdog, "artifact": f"{self.remote_artifact}/{manifest['file']}"}
        with tempfile.TemporaryDirectory(prefix="edgecam-session-") as tmp:
            (Path(tmp) / "job.json").write_text(json.dumps(self.job))
            device.push(Path(tmp), self.remote_dir)

    # -- transport primitives (subclasses) ----------------------------------------------------------------
    def _spawn(self) -> None:
        """Start `agent serve JOB.json` on the device (the hello frame is read by the caller)."""
        raise NotImplementedError

    def _send(self, chunks: Sequence[Any], deadline: float | None) -> None:
        """Write every chunk; DeviceTimeout past `deadline`, EOFError if the agent stopped reading."""
        raise NotImplementedError

    def _readinto(self, view: memoryview, deadline: float | None) -> None:
        """Fill `view` from the agent's output; EOFError when it ends, DeviceTimeout past `deadline`."""
        raise NotImplementedError

    def _alive(self) -> bool:
        raise NotImplementedError

    def _terminate(self, grace: float = 0.0) -> str:
        """End the agent (its process group) if it runs, after up to `grace` seconds for it to exit on its
        own; returns how it ended and its stderr tail, as text to append to an error message."""
        raise NotImplementedError

    # -- protocol ------------------------------------------------------------------------------------------
    def _deadline(self) -> float | None:
        return None if self.timeout is None else time.monotonic() + self.timeout

    def _read(self, deadline: float | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        header, arrays, size = read_frame(lambda view: self._readinto(view, deadline), min(self._answer_cap, self.max_frame_bytes))
        self.bytes_received += size
        return header, arrays

    def _start(self, deadline: float | None) -> None:
        """Start the agent and read its hello: JobFailed (with the device's cause) when the runtime cannot load."""
        self.hello = None
        self._spawn()
        self.starts += 1
        header, _ = self._read(deadline)
        if header.get("op") != "hello":
            raise FrameError(f"expected the agent's hello frame, got op {header.get('op')!r}")
        if not header.get("ok"):
            detail = self._abort(grace=2.0)
            if str(header.get("error", "")).startswith("ArtifactCorrupt"):
                self.device.cleanup(self.remote_artifact)  # the next session pushes a fresh copy
            raise JobFailed(f"{self.device.name}: the session agent could not start: {header.get('error')}\n{str(header.get('traceback', ''))[-STDERR_TAIL:]}{detail}")
        self.hello = header

    def _exchange(self, rid: int, op: str, chunks: Sequence[Any], size: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Send one request to the agent (started first if needed) and return the frame answering `rid`."""
        deadline = self._deadline()
        try:
            if self.hello is None or not self._alive():
                self._start(deadline)
            self._send(chunks, deadline)
            self.in_flight = rid
            self.requests += 1
            self.bytes_sent += size
            while True:
                header, arrays = self._read(deadline)
                if header.get("id") == rid or (header.get("id") is None and header.get("op") == "result"):  # None: a frame it could not parse
                    self.in_flight = None
                    return header, arrays
                # an answer to another id (from a replaced process): dropped, never counted
        except DeviceTimeout:
            detail = self._abort()
            raise DeviceTimeout(f"{self.device.name}: session {op} request {rid} timed out after {self.timeout} s; the agent was killed{detail}") from None
        except EOFError:
            raise JobFailed(f"{self.device.name}: the session agent died during {op} request {rid}{self._abort(grace=2.0)}") from None
        except FrameError as exc:
            raise JobFailed(f"{self.device.name}: bad frame from the session agent ({exc}){self._abort()}") from None

    def _abort(self, grace: float = 0.0) -> str:
        """Forget the running agent and end it (see `_terminate`)."""
        self.hello = None
        self.in_flight = None
        try:
            return self._terminate(grace)
        except Exception as exc:  # noqa: BLE001 - best effort on a failing transport
            return f" (could not stop the agent: {type(exc).__name__}: {exc})"

    def request(self, op: str, arrays: dict[str, Any] | None = None, **params: Any) -> dict[str, np.ndarray]:
        """One op on the device: `arrays` and JSON `params` in, the answer's arrays out; JobFailed with the
        device's error and traceback tail when the op failed there (the session stays usable)."""
        return self._request(op, arrays, (), self.max_frame_bytes, **params)

    def _answer(self, op: str, arrays: dict[str, Any], name: str, rows: int, row_bytes: int | None = None, **params: Any) -> np.ndarray:
        """`request`, then the one array `name` the op answers: present and numeric (`expect_arrays`), in a frame
        no larger than `rows` answers can need (the artifact's declared output sizes, or `row_bytes` per row)."""
        sizes = self._row_bytes if row_bytes is None else {name: row_bytes}
        return self._request(op, arrays, (name,), answer_bound(sizes, rows, [name], self.max_frame_bytes), **params)[name]

    def _request(self, op: str, arrays: dict[str, Any] | None, expect: Sequence[str], cap: int, **params: Any) -> dict[str, np.ndarray]:
        with self._lock:
            if self._closed:
                raise DeviceError(f"{self.device.name}: the session for {self.artifact_dir.name} is closed")
            rid = next(self._ids)
            chunks, size = encode_frame({"op": op, "id": rid, "params": params}, arrays)
            if size > self.max_frame_bytes:
                raise JobFailed(f"{self.device.name}: a {op} request of {size} bytes exceeds the session's frame cap of {self.max_frame_bytes} bytes (max_frame_bytes); send fewer inputs per request")
            self._answer_cap = max(cap, SLACK_BYTES)
            try:
                header, out = self._exchange(rid, op, chunks, size)
            finally:
                self._answer_cap = self.max_frame_bytes
            self.calls += 1
            self.last_reply = header
        if not header.get("ok"):
            raise JobFailed(f"{self.device.name}: {op} request {rid} failed: {header.get('error')}\n{str(header.get('traceback', ''))[-STDERR_TAIL:]}")
        return expect_arrays(out, expect, f"{self.device.name}: {op} request {rid}")

    # -- ops -----------------------------------------------------------------------------------------------
    def forward(self, x: np.ndarray, outputs: Sequence[str] | None = ("logits",)) -> dict[str, np.ndarray]:
        """The model's outputs for inputs `x` (N, ...): those named in `outputs` (all of them for None)."""
        names = None if outputs is None else list(outputs)
        expect = names if names is not None else sorted({"logits", *self._row_bytes})  # all outputs: at least those the artifact declares
        return self._request("forward", {"inputs": _f32(x)}, expect, answer_bound(self._row_bytes, len(x), names, self.max_frame_bytes), outputs=names)

    def masked(self, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """(N * K, classes) logits of images[i] * masks[i, k], image-major, composed on the device."""
        return self._answer("masked", {"images": _f32(images), "masks": _f32(masks)}, "logits", int(np.prod(np.shape(masks)[:2])))

    def scorecam(self, images: np.ndarray, maps: np.ndarray, max_inputs: int = 256) -> np.ndarray:
        """Score-CAM's masked logits (N * K, classes), image-major: the device upsamples the (N, K, h, w)
        CAM-layer maps to the input size and min-max normalises them (`perturb.scorecam_masks`), holding at
        most `max_inputs` masks at a time; only the low-resolution maps travel."""
        return self._answer("scorecam", {"images": _f32(images), "maps": _f32(maps)}, "logits", int(np.prod(np.shape(maps)[:2])), max_inputs=int(max_inputs))

    def rise(self, images: np.ndarray, targets: Sequence[int], n_masks: int, cells: int, p: float = 0.5, seed: int = 0, max_inputs: int = 256) -> np.ndarray:
        """RISE saliency (N, H, W) float32 for each image's target class, the masks generated on the device
        (`perturb.rise_grid` with `seed`: the host's `perturb.rise_masks(n_masks, cells, (W, H), p, seed)`)."""
        t = np.asarray(targets, dtype=np.int64).reshape(-1)
        return self._answer("rise", {"images": _f32(images), "targets": t}, "saliency", len(images), 8 * int(np.prod(np.shape(images)[2:])), n_masks=int(n_masks), cells=int(cells),
                            p=float(p), seed=int(seed), max_inputs=int(max_inputs))

    def perturb(self, images: np.ndarray, cams: np.ndarray, steps: int, kind: str = "both", baseline: Any = "zero", blur_sigma: float | None = None) -> np.ndarray:
        """Deletion / Insertion logits, composed on the device (`perturb.PerturbationSeries`): (N * (steps + 1),
        classes) for "deletion" or "insertion", (N * 2 * (steps + 1), classes) for "both" (deletion first),
        image-major. `baseline`: "zero", "blur", a number, or an array broadcastable to (C, H, W)."""
        arrays: dict[str, Any] = {"images": _f32(images), "cams": np.asarray(cams)}
        params: dict[str, Any] = {"steps": int(steps), "kind": kind, "blur_sigma": None if blur_sigma is None else float(blur_sigma)}
        if isinstance(baseline, str) or np.ndim(baseline) == 0:
            params["baseline"] = baseline if isinstance(baseline, str) else float(baseline)
        else:
            arrays["baseline"] = _f32(baseline)
        if arrays["cams"].dtype.name not in ("float32", "float64"):
            arrays["cams"] = arrays["cams"].astype(np.float64)
        rows = len(images) * (int(steps) + 1) * (2 if kind == "both" else 1)
        return self._answer("perturb", arrays, "logits", rows, **params)

    def ping(self) -> None:
        """A round trip that does nothing (starts the agent if it is not running)."""
        self.request("ping")

    # -- lifetime ------------------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        """Ask a running agent to exit ("close"), then end it whatever it answered."""
        try:
            if self.hello is not None and self._alive():
                chunks, size = encode_frame({"op": "close", "id": -1, "params": {}})
                deadline = time.monotonic() + CLOSE_TIMEOUT_S
                self._send(chunks, deadline)
                self.requests += 1
                self.bytes_sent += size
                self._read(deadline)
        except Exception:  # noqa: BLE001 - closing: the agent is ended below either way
            pass
        self._abort(grace=CLOSE_TIMEOUT_S)

    def close(self) -> None:
        """End the agent and remove the session's folder on the device (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._shutdown()
            finally:
                self.device.cleanup(self.remote_dir)

    def __enter__(self) -> "PersistentSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _release(self) -> None:
        """Let go of the agent without a word on the wire (garbage collection): it sees its input end and exits."""

    def __del__(self) -> None:  # a session that was never closed must not leave its agent running
        if not getattr(self, "_closed", True):
            try:
                self._release()
            except Exception:  # noqa: BLE001 - interpreter shutdown, dead transport
                pass


class PerRequestSession(PersistentSession):
    """The session API over one agent process per request: the request frame is pushed as a file, `agent
    serve JOB.json --frames-in REQ --frames-out RESP` answers it and exits, the answer is pulled back. For a
    device without a streaming channel (`Device.session`'s default); every request pays the runtime's load, as
    a run_job does, but the ops are the same."""

    streaming = False

    def _exchange(self, rid: int, op: str, chunks: Sequence[Any], size: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        dev = self.device
        remote_req, remote_resp = f"{self.remote_dir}/request-{rid}.bin", f"{self.remote_dir}/response-{rid}.bin"
        with tempfile.TemporaryDirectory(prefix="edgecam-request-") as tmp:
            local_req, local_resp = Path(tmp) / "request.bin", Path(tmp) / "response.bin"
            with open(local_req, "wb") as f:
                for c in chunks:
                    f.write(c)
            try:
                dev.push(local_req, remote_req)
                self.requests += 1
                self.bytes_sent += size
                self.starts += 1
                try:
                    res = dev.run([*dev.python(), dev.agent(), "serve", self.job_path, "--frames-in", remote_req, "--frames-out", remote_resp], timeout=self.timeout)
                except DeviceTimeout:
                    dev.kill_agents(remote_req)  # adb and SSH close the channel without signalling the command
                    raise
                if not dev.exists(remote_resp):
                    raise JobFailed(f"{dev.name}: the agent wrote no answer to {op} request {rid} (exit {res.returncode}); stderr:\n{res.stderr[-STDERR_TAIL:]}")
                dev.pull(remote_resp, local_resp, self.max_frame_bytes * 2)  # the hello and the answer
            finally:
                dev.cleanup(remote_req)
                dev.cleanup(remote_resp)
            with open(local_resp, "rb") as f:

                def readinto(view: memoryview) -> None:
                    if f.readinto(view) != len(view):
                        raise EOFError("the answer file ended inside a frame")

                try:
                    hello, _, n = read_frame(readinto, self.max_frame_bytes)
                    self.bytes_received += n
                    if not hello.get("ok"):
                        raise JobFailed(f"{dev.name}: the agent could not start: {hello.get('error')}\n{str(hello.get('traceback', ''))[-STDERR_TAIL:]}")
                    self.hello = hello
                    while True:
                        header, arrays, n = read_frame(readinto, self.max_frame_bytes)
                        self.bytes_received += n
                        if header.get("id") == rid:
                            return header, arrays
                except (EOFError, FrameError) as exc:
                    raise JobFailed(f"{dev.name}: no answer to {op} request {rid} in the agent's output ({exc}); stderr:\n{res.stderr[-STDERR_TAIL:]}") from None

    def _shutdown(self) -> None:
        """Nothing runs between requests."""

    def _alive(self) -> bool:
        return False

    def _terminate(self, grace: float = 0.0) -> str:
        return ""
