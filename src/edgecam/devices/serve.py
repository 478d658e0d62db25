"""The agent's persistent mode: `agent.pyz serve JOB.json` loads the runtime and the model once, then answers
framed requests (`edgecam.devices.protocol`) from stdin on stdout until stdin ends or a "close" request.

Device side: stdlib + numpy + the runtime, Python >= 3.8. The process first writes a hello frame (op
"hello": ok, pid, process group, Python, runtime description, load time, the frame cap) or, when the
runtime cannot load, a failed hello, and exits. Every request is answered by one frame with the request's
id, `ok`, the output arrays, or `error` + `traceback` (its tail); a request that fails (a bad frame, an
unknown op, a runtime error) never ends the loop. Only a bad magic (the stream is out of step) does.

Ops (arrays in -> arrays out; the masks are composed here, never shipped at full resolution):
- "forward":  inputs (N, C, H, W) -> the requested outputs (params.outputs; all when null), batches of
              output_batch_size.
- "masked":   images (N, C, H, W), masks (N, K, H, W) -> logits (N * K, classes), image-major.
- "scorecam": images (N, C, H, W), maps (N, K, h, w) at the CAM layer's resolution -> logits (N * K,
              classes) of images[i] * m[i, k], m = `perturb.scorecam_masks`, at most params.max_inputs masks
              (default 256) held at a time.
- "rise":     images (N, C, H, W), targets (N,) int64, params n_masks, cells, p, seed -> saliency (N, H, W)
              float32 = sum_m softmax(logits(I * M_m))[target] * M_m / (n_masks * p), the masks built here
              from one `perturb.rise_grid` in chunks of max_inputs.
- "perturb":  images (N, C, H, W), cams (N, H, W) (+ optional baseline array), params steps, kind
              ("deletion" | "insertion" | "both"), baseline ("zero" | "blur" | a number), blur_sigma ->
              logits (N * len(items), classes), image-major in `perturb.series_items` order.
- "ping": nothing -> nothing (a liveness check); "close": answered, then the process exits.

With `--frames-in REQ --frames-out RESP` the same loop reads requests from a file and writes the answers to
a file (one process per request, for a transport without a streaming channel: `Device.session`'s default).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Tuple

import numpy as np

from edgecam import perturb
from edgecam.devices.agent import alarm, apply_cpu_budget, forward_outputs, lead_process_group, load_runtime, masked_logits
from edgecam.devices.protocol import DEFAULT_MAX_FRAME_BYTES, SERVE_PROTOCOL, FrameError, encode_frame, read_frame, stream_readinto

Op = Callable[[Any, Dict[str, np.ndarray], Dict[str, Any], Dict[str, Any]], Dict[str, np.ndarray]]
TRACEBACK_TAIL = 4000


def _need(arrays: Dict[str, np.ndarray], name: str, ndim: int) -> np.ndarray:
    if name not in arrays:
        raise ValueError("request lacks the array %r (it has %s)" % (name, sorted(arrays) or "none"))
    a = arrays[name]
    if a.ndim != ndim:
        raise ValueError("array %r must have %d dimensions, got shape %s" % (name, ndim, a.shape))
    return a


def _run_logits(rt: Any, batch: np.ndarray, job: Dict[str, Any]) -> np.ndarray:
    return np.asarray(rt.run({job.get("input_name", "input"): np.ascontiguousarray(batch, dtype=np.float32)})["logits"])


def _chunk(params: Dict[str, Any], job: Dict[str, Any]) -> int:
    """Masks held at a time: max_inputs rounded down to whole batches (so batches match the masked path)."""
    bs = int(job.get("output_batch_size", 32))
    limit = int(params.get("max_inputs") or 256)
    if limit < 1:
        raise ValueError("max_inputs must be >= 1, got %d" % limit)
    return max(bs, (limit // bs) * bs)


def op_forward(rt: Any, arrays: Dict[str, np.ndarray], params: Dict[str, Any], job: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """inputs (N, ...) -> the outputs named in params.outputs (all for null)."""
    if "inputs" not in arrays or arrays["inputs"].ndim < 1:
        raise ValueError("forward needs an array 'inputs' of shape (N, ...)")
    x = arrays["inputs"]
    keep = params.get("outputs")
    return forward_outputs(rt, x, job, None if keep is None else list(keep))


def op_masked(rt: Any, arrays: Dict[str, np.ndarray], params: Dict[str, Any], job: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """images (N, C, H, W) x masks (N, K, H, W) -> logits (N * K, classes)."""
    images, masks = _need(arrays, "images", 4), _need(arrays, "masks", 4)
    if masks.shape[0] != images.shape[0] or masks.shape[2:] != images.shape[2:]:
        raise ValueError("masks %s must be (N, K, H, W) for images %s" % (masks.shape, images.shape))
    return {"logits": masked_logits(rt, images.astype(np.float32, copy=False), masks.astype(np.float32, copy=False), job)}


def op_scorecam(rt: Any, arrays: Dict[str, np.ndarray], params: Dict[str, Any], job: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """images (N, C, H, W), maps (N, K, h, w) -> logits (N * K, classes) of images[i] * scorecam_masks(maps)[i, k]."""
    images, maps = _need(arrays, "images", 4).astype(np.float32, copy=False), _need(arrays, "maps", 4).astype(np.float32, copy=False)
    if maps.shape[0] != images.shape[0]:
        raise ValueError("maps %s must have one row per image %s" % (maps.shape, images.shape))
    h, w = images.shape[2:]
    bs, chunk = int(job.get("output_batch_size", 32)), _chunk(params, job)
    out: List[np.ndarray] = []
    for i in range(len(images)):
        for k0, k1 in perturb.batched(maps.shape[1], chunk):
            masks = perturb.scorecam_masks(maps[i, k0:k1], h, w)  # (k, H, W): at most `chunk` masks at a time
            for j0, j1 in perturb.batched(len(masks), bs):
                out.append(_run_logits(rt, images[i][None] * masks[j0:j1, None], job))
    return {"logits": np.concatenate(out) if out else np.zeros((0, 0), np.float32)}


def op_rise(rt: Any, arrays: Dict[str, np.ndarray], params: Dict[str, Any], job: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """RISE saliency (Petsiuk et al. 2018, Eq. 6) of each image for its target class, masks built here."""
    images = _need(arrays, "images", 4).astype(np.float32, copy=False)
    targets = _need(arrays, "targets", 1).astype(np.int64)
    if len(targets) != len(images):
        raise ValueError("targets %s must hold one class per image %s" % (targets.shape, images.shape))
    n, cells, p, seed = int(params["n_masks"]), int(params["cells"]), float(params.get("p", 0.5)), int(params.get("seed", 0))
    if n < 1 or cells < 1 or not 0 < p <= 1:
        raise ValueError("rise needs n_masks >= 1, cells >= 1 and 0 < p <= 1; got %d, %d, %g" % (n, cells, p))
    h, w = images.shape[2:]
    grid, dy, dx = perturb.rise_grid(n, cells, (w, h), p, seed)
    bs, chunk = int(job.get("output_batch_size", 32)), _chunk(params, job)
    sal = np.zeros((len(images), h, w), dtype=np.float64)
    for m0, m1 in perturb.batched(n, chunk):
        masks = perturb.rise_masks_from_grid(grid, dy, dx, (w, h), m0, m1)
        for i, img in enumerate(images):
            logits = np.concatenate([_run_logits(rt, img[None] * masks[j0:j1, None], job) for j0, j1 in perturb.batched(len(masks), bs)])
            prob = perturb.softmax_rows(logits)
            sal[i] += np.tensordot(prob[:, int(targets[i])], masks, axes=1)
    return {"saliency": (sal / (n * p)).astype(np.float32)}


def op_perturb(rt: Any, arrays: Dict[str, np.ndarray], params: Dict[str, Any], job: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """Deletion / Insertion inputs of each image under its CAM, composed here -> their logits."""
    images, cams = _need(arrays, "images", 4).astype(np.float32, copy=False), _need(arrays, "cams", 3)
    if cams.shape[0] != images.shape[0] or cams.shape[1:] != images.shape[2:]:
        raise ValueError("cams %s must be (N, H, W) for images %s" % (cams.shape, images.shape))
    steps = int(params["steps"])
    if steps < 1:
        raise ValueError("steps must be >= 1, got %d" % steps)
    kind = str(params.get("kind", "both"))
    items = perturb.series_items(kind, steps)
    baseline: Any = arrays["baseline"] if "baseline" in arrays else params.get("baseline", "zero")
    bs = int(job.get("output_batch_size", 32))
    out: List[np.ndarray] = []
    for img, cam in zip(images, cams):
        series = perturb.PerturbationSeries(img, cam, steps, baseline, params.get("blur_sigma"), blur=kind != "deletion")
        for j0, j1 in perturb.batched(len(items), bs):
            batch = np.empty((j1 - j0, *img.shape), dtype=np.float32)
            for q, item in enumerate(items[j0:j1]):
                series.item(item, batch[q])
            out.append(_run_logits(rt, batch, job))
    return {"logits": np.concatenate(out) if out else np.zeros((0, 0), np.float32)}


def op_ping(rt: Any, arrays: Dict[str, np.ndarray], params: Dict[str, Any], job: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """Nothing in, nothing out: the process is alive and in step."""
    return {}


OPS: Dict[str, Op] = {"forward": op_forward, "masked": op_masked, "scorecam": op_scorecam, "rise": op_rise, "perturb": op_perturb, "ping": op_ping}


class _Writer:
    """Frames out, flushed one by one."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def send(self, header: Dict[str, Any], arrays: Optional[Dict[str, np.ndarray]] = None) -> None:
        chunks, _ = encode_frame(header, arrays)
        for c in chunks:
            self.stream.write(c)
        self.stream.flush()


def _failure(exc: BaseException) -> Dict[str, Any]:
    return {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc), "traceback": traceback.format_exc()[-TRACEBACK_TAIL:]}


def _protocol_streams(frames_in: Optional[str], frames_out: Optional[str]) -> Tuple[BinaryIO, BinaryIO]:
    """The request / response streams. On stdio the protocol keeps a private copy of fd 1 and fd 1 is
    pointed at stderr, so that a runtime printing to stdout (C code included) cannot corrupt a frame."""
    inp: BinaryIO = open(frames_in, "rb") if frames_in else sys.stdin.buffer
    if frames_out:
        return inp, open(frames_out, "wb")
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return inp, out


def _load_session(job_path: str, hello: Dict[str, Any]) -> Tuple[Dict[str, Any], int, float, Any]:
    """Read the job, arm the watchdog, apply the CPU budget and load the runtime once: (job, frame cap,
    watchdog seconds, runtime). `hello` is filled in as it goes, so a failed hello still tells what was done."""
    with open(job_path) as f:
        job = json.load(f)
    cap = int(job.get("max_frame_bytes") or DEFAULT_MAX_FRAME_BYTES)
    watchdog = float(job.get("watchdog_s") or 0)  # the host's per-request timeout plus a grace
    alarm(watchdog)  # a runtime that hangs while loading ends by itself, host or no host
    hello["cpu_budget"] = {"cores": job.get("cores"), "affinity": apply_cpu_budget(job.get("cores"))}
    t0 = time.perf_counter()
    rt = load_runtime(job)
    hello.update({"ok": True, "load_s": time.perf_counter() - t0, "runtime": rt.describe(), "max_frame_bytes": cap})
    return job, cap, watchdog, rt


def _answer(rt: Any, op: Any, header: Dict[str, Any], arrays: Dict[str, np.ndarray], job: Dict[str, Any], reply: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """Run one request's op: its output arrays, and `reply` updated with ok + compute_s, or with the failure
    and an empty result (a failed request is answered; it never ends the loop)."""
    t0 = time.perf_counter()
    try:
        fn = OPS.get(str(op))
        if fn is None:
            raise ValueError("unknown op %r; expected one of %s or close" % (op, ", ".join(sorted(OPS))))
        params = header.get("params") or {}
        if not isinstance(params, dict):
            raise ValueError("params must be a JSON object, got %r" % (params,))
        result = fn(rt, arrays, params, job)
        reply.update({"ok": True, "compute_s": time.perf_counter() - t0})
    except Exception as exc:  # one failed request; the loop goes on
        result = {}
        reply.update(_failure(exc))
    return result


def _serve_requests(readinto: Callable[[memoryview], None], writer: _Writer, rt: Any, job: Dict[str, Any], cap: int, watchdog: float, pid: int) -> int:
    """Answer framed requests, one frame each, until the input ends or a "close" request (0) or a frame
    error that leaves the stream out of step (3). A broken pipe is the caller's to handle."""
    served = 0
    while True:
        alarm(0)  # waiting for the next request is not a hang
        try:
            header, arrays, _ = read_frame(readinto, cap)
        except EOFError:
            return 0
        except FrameError as exc:
            writer.send({"op": "result", "id": exc.request_id, "pid": pid, "ok": False, "error": "FrameError: %s" % exc, "traceback": ""})
            if exc.fatal:
                return 3
            continue
        alarm(watchdog)  # each request ends by itself at the host's timeout plus a grace
        op, rid = header.get("op"), header.get("id")
        reply: Dict[str, Any] = {"op": "result", "id": rid, "pid": pid, "served": served}
        if op == "close":
            writer.send({**reply, "ok": True})
            return 0
        result = _answer(rt, op, header, arrays, job, reply)
        del arrays
        served += 1
        writer.send(reply, result)
        del result


def serve(job_path: str, frames_in: Optional[str] = None, frames_out: Optional[str] = None) -> int:
    """Load the job's runtime once, then answer requests until the input ends or a "close" request."""
    inp, out = _protocol_streams(frames_in, frames_out)
    writer = _Writer(out)
    lead_process_group()  # the host can kill it and anything it started at once
    hello: Dict[str, Any] = {"op": "hello", "id": 0, "protocol": SERVE_PROTOCOL, "pid": os.getpid(), "python": sys.version.split()[0]}
    hello["pgid"] = os.getpgid(0) if hasattr(os, "getpgid") else None
    try:
        job, cap, watchdog, rt = _load_session(job_path, hello)
    except Exception as exc:  # the host reports it as a failed session, with the cause
        hello.update(_failure(exc))
        try:
            writer.send(hello)
        except OSError:
            pass
        return 1
    readinto = stream_readinto(inp)
    try:
        writer.send(hello)
        return _serve_requests(readinto, writer, rt, job, cap, watchdog, hello["pid"])
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the host went away; nothing to answer
    finally:
        try:
            rt.close()
        except Exception:  # noqa: BLE001 - closing after a failure
            pass


USAGE = "usage: agent serve JOB.json [--frames-in REQUESTS --frames-out RESPONSES]\n"


def main(argv: List[str]) -> int:
    """`serve JOB.json [--frames-in PATH --frames-out PATH]` (argv after the subcommand)."""
    args = list(argv)
    opts: Dict[str, Optional[str]] = {"--frames-in": None, "--frames-out": None}
    for flag in list(opts):
        if flag in args:
            i = args.index(flag)
            if i + 1 >= len(args):
                sys.stderr.write(USAGE)
                return 2
            opts[flag] = args[i + 1]
            del args[i : i + 2]
    if len(args) != 1 or args[0].startswith("-") or (opts["--frames-in"] is None) != (opts["--frames-out"] is None):
        sys.stderr.write(USAGE)
        return 2
    return serve(args[0], opts["--frames-in"], opts["--frames-out"])
