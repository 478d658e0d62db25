"""Stage 4, explain: CAMs of every variant of one model, streamed shard by shard into per-image rows.

For each shard of `explain.shard_size` test images, decoded when its turn comes: every variant's outputs
(logits, features) through its persistent device session, the host reference CAM and the visual-saliency
maps, then every CAM method on every variant in each mode it declares and the artifact allows (mirror / surrogate
from the device's outputs and its session; sim in the host fake-quant graph), then the rows
(`bench/results.py`), the runtime gap and what the run-level aggregates need (`bench/aggregate.py`): WSOL
hit counts per threshold on images with ground truth, activation histograms, a bounded heap of the most
dissimilar CAMs (Rogers et al. 2023's top-5% subset) and the shard's candidates for the report's CAM grid (each
image's score, `grid_score`, and at most GRID_TYPICAL + GRID_DISSIMILAR images with their arrays, stored small:
uint8 images and masks, float16 maps). Images, outputs and CAMs are dropped after their shard: nothing holds all
images of all variants, and a run keeps of each shard's grid candidates their scores only, reading back the
arrays of the few the run picks (`aggregate.pick_grid`). The test images past the explained ones get a logits-only
pass, shard by shard, for the variants' accuracy.

Each shard is a job of the run's store: a finished shard is read back instead of recomputed. A shard is stored
all or nothing: its record lists every part it must hold (`expected_parts`: rows, predictions, histograms, ...),
one computed without a part (its histogram edges' shard failed) is not stored, and a stored one is reused only
when it holds every part its record and the run expect; otherwise it is redone. A device's NaN / Inf outputs
give no prediction (`variant.NONFINITE`) and NaN metrics, never class 0.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from edgecam.bench import outputs as files
from edgecam.bench.aggregate import HIST_BINS, ExplainOutput, ShardOutput, Track, aggregate, fold, light_grid, push, shard_candidates
from edgecam.bench.measure import device_job
from edgecam.bench.store import job_key
from edgecam.bench.variant import NO_REFERENCE, NONFINITE, Variant, finite_top1
from edgecam.errors import EdgecamError
from edgecam.explain.localisation import WSOL_THRESHOLDS
from edgecam.stages import stage

if TYPE_CHECKING:
    from edgecam.bench.context import RunContext
    from edgecam.config import RunConfig
    from edgecam.data.datasets import TestShard
    from edgecam.devices.session import DeviceSession

    Fetched = tuple[TestShard, dict[str, dict[str, np.ndarray]]]  # a shard and every variant's outputs for it


def default_jobs(cfg: "RunConfig") -> list[tuple[str, str]]:
    """(method, mode) for each configured method in its default mode (what every variant runs)."""
    from edgecam.explain.cams import CAM_METHODS

    return [(m, CAM_METHODS.get(m).default_mode()) for m in cfg.explain.methods]


def cam_jobs(v: Variant, cfg: "RunConfig") -> list[tuple[str, str]]:
    """(method, mode) pairs to run on `v`: each method in its default mode, and with `explain.sim` also in
    "sim" where the method declares that mode and the artifact's exporter can simulate its graph on the host."""
    from edgecam.explain.cams import CAM_METHODS
    from edgecam.exporters import exporter_class

    jobs = default_jobs(cfg)
    if cfg.explain.sim and exporter_class(v.format).host_simulation and not v.manifest.get("contract"):  # not a user's file: its graph is its own
        jobs += [(m, "sim") for m in cfg.explain.methods if "sim" in CAM_METHODS.get(m).modes]
    return jobs


@dataclass(frozen=True)
class ModelSetup:
    """What every shard of one model shares."""

    ok: list[Variant]
    model: Any
    layer: str
    sessions: dict[str, "DeviceSession"]
    provider: Any
    provider_name: str
    sims: dict[str, Any]
    hist_edges: dict[str, np.ndarray]  # per family, from shard 0's features (filled when shard 0 is computed or read)
    top_k: int
    n_faith: int
    host_body: Any = None  # `explain.split.OnnxBody` over the run's fp32 ONNX export: the reference CAM's body


def host_body(ok: list[Variant]) -> Any:
    """The fp32 reference's body in ONNX Runtime on the host, where the run exported an fp32 ONNX model (a quarter
    of the torch body's cost; checked against it on the first shard, else unused), or None."""
    import torch

    from edgecam.explain.split import OnnxBody

    for v in ok:
        if v.format == "onnx" and v.precision == "fp32" and (v.artifact_dir / "model.onnx").is_file() and not v.manifest.get("contract"):
            return OnnxBody(v.artifact_dir / "model.onnx", torch.get_num_threads())
    return None


class StageEta:
    """The explain stage's whole time, host share included, from the shards computed so far: logged after the
    first computed shard and refined after the second (the steady state), with the clock time it should end.
    `estimates`: what was predicted, for the manifest.

    The first shard is not the steady state: the host waits for its device outputs (the agents' start and model
    load, not overlapped with anything), while every later shard's outputs come during the previous shard's host
    work. So after the first shard a shard is taken to cost max(host work, device work) of the first: measured
    on 2,000 images, the first shard's own rate put the stage at 1.56x its time."""

    def __init__(self, model: str, n_variants: int, sizes: list[int], log: Any) -> None:
        self.model, self.n_variants, self.sizes, self.log = model, n_variants, sizes, log
        self.computed: list[float] = []
        self.elapsed = 0.0
        self.estimates: list[dict[str, float]] = []

    def done(self, i: int, seconds: float, reused: bool, wait_s: float = 0.0, device_s: float = 0.0) -> None:
        """Shard `i` took `seconds`, of which `wait_s` waiting for its device outputs, which took the device
        (worker) `device_s`; `reused`: resumed from the job store (no time to learn from)."""
        self.elapsed += seconds
        if reused:
            return
        self.computed.append(seconds)
        left = sum(self.sizes[i + 1 :])
        if len(self.computed) > 2 or left == 0:
            return
        shard_s = max(seconds - wait_s, device_s) if len(self.computed) == 1 and device_s > 0 else seconds
        per_image = shard_s / self.sizes[i]
        total = self.elapsed + per_image * left
        self.estimates.append({"after_shards": float(i + 1), "stage_s": total, "per_image_variant_s": per_image / self.n_variants})
        end = time.strftime("%H:%M", time.localtime(time.time() + per_image * left))
        self.log(f"explain {self.model}: {self.sizes[i] * self.n_variants / seconds:.1f} images/s per variant on shard {i + 1} (host and device); "
                 f"~{_duration(per_image * left)} to go for {left:,} images, the stage ~{_duration(total)} in all (ends ~{end})")


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def explain_model(ctx: "RunContext", model: Any, layer: str, variants: list[Variant], ckpt_sha: str) -> ExplainOutput:
    """Explain the run's test images on every successful variant of one model, one shard job at a time. A
    shard whose device calls fail (crash, timeout, lost board) is recorded in `failed`; the next goes on."""
    from edgecam.devices.session import DeviceSession
    from edgecam.explain.saliency import SALIENCY_PROVIDERS

    cfg, ex, n_img = ctx.cfg, ctx.cfg.explain, ctx.n_img
    ok = [v for v in variants if v.ok]
    if not ok:
        return ExplainOutput()
    rspecs = {r.name: r for r in cfg.runtimes}
    jobs = {v.key: device_job(rspecs[v.runtime], ctx.dspec) for v in ok}
    provider_cls = SALIENCY_PROVIDERS.get(ex.saliency)
    setup = ModelSetup(
        ok, model, layer, {v.key: DeviceSession(ctx.device, v.artifact_dir, jobs[v.key], cfg.bench.timeout_s) for v in ok},
        provider_cls(ex.saliency_dir) if ex.saliency == "directory" else provider_cls(), provider_cls.name,
        {v.key: _sim_module(v) for v in ok if any(mode == "sim" for _, mode in cam_jobs(v, cfg))},
        {}, max(1, int(np.ceil(0.05 * n_img))), min(n_img, ex.faithfulness_images) if ex.faithfulness else 0, host_body(ok),
    )
    key = {"kind": "explain", "model": ok[0].model, "weights": ckpt_sha, "device": ctx.device_id or ctx.dspec.name, "data": ctx.data.fingerprint, "images": n_img,
           "explain": ex.to_dict(), "saliency": saliency_fingerprint(ex.saliency_dir) if ex.saliency == "directory" else None,
           "variants": sorted((v.key, v.manifest.get("sha256"), jobs[v.key]) for v in ok)}
    shards = [(s0, min(n_img, s0 + ex.shard_size)) for s0 in range(0, n_img, ex.shard_size)]
    for v in ok:
        v.preds = np.full(ctx.data.n_test, -1, dtype=np.int64)
    try:
        return _explain_shards(ctx, setup, key, shards)
    finally:  # the agents end (and their board folders go) however the stage ends
        for s in setup.sessions.values():
            s.close()


def _explain_shards(ctx: "RunContext", setup: ModelSetup, key: dict[str, Any], shards: list[tuple[int, int]]) -> ExplainOutput:
    """Each shard as a job of the store, then the aggregates and the predictions of the other images."""
    ok = setup.ok
    out = ExplainOutput()
    parts: list[ShardOutput] = []
    folded = ShardOutput(None, None, {}, {}, {})
    bar = ctx.bar(f"CAMs {ok[0].model}", ctx.n_img)  # the stage starts here: its elapsed time counts the first shard too
    keys = [job_key(**key, shard=[s0, s1]) for s0, s1 in shards]
    needs = [expected_parts(ok, ctx.cfg, s0) for s0, _ in shards]
    ahead = Prefetch(ctx, setup)
    incomplete: dict[int, tuple[ShardOutput, set[str]]] = {}

    def compute(i: int) -> Any:
        fetched = ahead.take(*shards[i])
        if i + 1 < len(shards) and not ctx.store.has("explain", keys[i + 1]):
            ahead.start(*shards[i + 1])  # its device outputs come while this shard's CAMs and metrics run
        part = explain_shard(ctx, setup, *shards[i], fetched)
        missing = needs[i] - part.parts()
        if missing:  # all or nothing: a shard that lacks a part is used by this run but never stored, so the next run redoes it
            incomplete[i] = (part, missing)
            return None
        return part.to_job(needs[i])

    eta = StageEta(ok[0].model, len(ok), [s1 - s0 for s0, s1 in shards], ctx.log)
    try:
        if shards and not ctx.store.has("explain", keys[0]):
            ahead.start(*shards[0])  # the first shard's device outputs come while the host loads its libraries
            warm_host(ctx.cfg.explain.emd_size > 0)
        for i, (s0, s1) in enumerate(shards):
            try:
                t0 = time.perf_counter()
                job, reused = ctx.store.get_or_compute("explain", keys[i], lambda i=i: compute(i), lambda j, n=s1 - s0, i=i: _check_shard(j, ok, n, needs[i]))
                eta.done(i, time.perf_counter() - t0, reused, ahead.last_wait_s, ahead.last_device_s)
            except (EdgecamError, OSError, TimeoutError) as exc:
                out.failed.append({"job": f"explain {ok[0].model} images {s0}-{s1 - 1}", "error": f"{type(exc).__name__}: {exc}"})
                ctx.log(f"[red]FAILED[/red] explain {ok[0].model} images {s0}-{s1 - 1}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
                continue
            if job is None:  # computed, but without every part it must hold (`compute`): its rows count here, nothing is stored
                part, missing = incomplete.pop(i)
                why = _incomplete_reason(missing, s0)
                out.failed.append({"job": f"explain {ok[0].model} images {s0}-{s1 - 1}", "error": why})
                ctx.log(f"[yellow]explain {ok[0].model} images {s0}-{s1 - 1}: {why}[/yellow]")
            else:
                part = ShardOutput.from_job(job)  # the stored form, resumed or not: one code path to the results
            if s0 == 0:
                setup.hist_edges.update(part.edges)
            _keep_preds(ok, part.preds, s0)
            if part.kept:  # to disk at once: a run holds no kept outputs in memory
                files.write_kept(ctx.out_dir, ok[0].model, s0, part.kept)
                part.kept = {}
            fold(folded, part, setup.top_k)  # bounded: one heap per track, not one per shard
            if job is not None:  # stored: its grid candidates' arrays are read back only if the run picks them
                part.grid = light_grid(part.grid)
            parts.append(part)
            bar(f"CAMs {ok[0].model}", s1 / max(1, ctx.n_img))  # images done (shards end at n_img)
    finally:
        ahead.close()
    out.overlapped_device_s = ahead.device_s
    out.estimates = eta.estimates
    stored = {s0: k for (s0, _), k in zip(shards, keys)}

    def load_grid(s0: int) -> dict[str, Any] | None:
        job = ctx.store.get("explain", stored[s0], count=False)
        return ShardOutput.from_job(job).grid if job is not None else None

    aggregate([*parts, folded], setup.ok, setup.hist_edges, setup.top_k, out, load_grid)
    out.calls = sum(s.calls for s in setup.sessions.values())  # the explain shards' device traffic; predictions apart
    out.bytes_sent = sum(s.bytes_sent for s in setup.sessions.values())
    out.bytes_received = sum(s.bytes_received for s in setup.sessions.values())
    predict_rest(ctx, setup, key)
    out.predict_bytes_sent = sum(s.bytes_sent for s in setup.sessions.values()) - out.bytes_sent
    return out


def warm_host(emd: bool) -> None:
    """Load what the host's CAMs and metrics need (the `grad-cam` package ~3 s, POT ~3 s, the compiled WSOL kernel)
    while the worker computes the first shard's device outputs, rather than inside the first shard's host work."""
    import pytorch_grad_cam  # noqa: F401

    from edgecam.explain.components import largest_component_boxes
    from edgecam.explain.metrics import import_pot

    if emd:
        import_pot()
    largest_component_boxes(np.zeros((2, 2)), np.array([0.5]))


def saliency_fingerprint(directory: str | None) -> str:
    """SHA-256 over the saliency maps' relative paths and bytes: maps changed in place make new explain jobs
    (the path alone would resume into rows computed from the old maps). Linked folders are followed, as the
    map reader (`<dir>/<image id>.npy`) follows them; each real folder is read once, so a link loop ends."""
    import hashlib
    import os
    from pathlib import Path

    from edgecam.cache import sha256_file

    root = Path(directory or "")
    files: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for here, dirs, names in os.walk(root, followlinks=True):
        st = os.stat(here)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        files += [Path(here) / n for n in names if (Path(here) / n).is_file()]
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.relative_to(root).as_posix().encode("utf-8", "surrogateescape") + b"\0")
        h.update(bytes.fromhex(sha256_file(path)))
    return h.hexdigest()


def _check_len(a: np.ndarray, n: int) -> None:
    if a.shape != (n,):
        raise ValueError(f"{a.shape} predictions for {n} images")


def expected_parts(ok: list[Variant], cfg: "RunConfig", s0: int) -> set[str]:
    """Every part (`ShardOutput.parts`) the explain shard starting at image `s0` must hold, from the variants and
    the config alone (never from what a run happened to compute): each variant's predictions; for each variant
    with CAM rows its tracks and, where its family has an fp32 reference, its activation histogram; the rows;
    the runtime gap where two runtimes share a precision; the grid part (every shard: its images' scores and grid
    candidates; a shard stored before it, or with the grid of an earlier form, is redone); the first shard's
    histogram edges; the kept outputs of the first `explain.keep_outputs` images."""
    keys = {v.key for v in ok}
    with_rows = [v for v in ok if v.fp32_key in keys or v.reference == NO_REFERENCE]
    families = {v.family for v in ok if v.fp32_key in keys}  # `_hist_edges`: the families that get histogram edges
    need = {f"preds:{v.key}" for v in ok} | {f"hist:{v.key}" for v in with_rows if v.family in families}
    need |= {f"track:{v.key}|{method}|{mode}" for v in with_rows for method, mode in cam_jobs(v, cfg)}
    if with_rows:
        need.add("rows")
    precisions = [v.precision for v in ok]
    if len(set(precisions)) < len(precisions) and cfg.explain.methods:
        need.add("gaps")
    need.add("grid")
    if s0 == 0:
        need |= {f"edges:{f}" for f in families}
    if s0 < cfg.explain.keep_outputs:
        need.add("kept")
    return need


def _incomplete_reason(missing: set[str], s0: int) -> str:
    """Why a computed shard was not stored, for failed.csv and the log."""
    names = sorted(missing)
    listed = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    cause = " (activation-histogram edges come from the first shard, which did not complete)" if s0 and any(n.startswith("hist:") for n in names) else ""
    return f"incomplete shard, not stored: it lacks {listed}{cause}; its rows are in this run's results, and the next run redoes it"


def _check_shard(job: Any, ok: list[Variant], n: int, need: set[str]) -> None:
    """A stored explain shard that holds everything it must: its record lists every part in `need` (a shard stored
    without one, or before records listed parts, is redone), each listed part is there, and every variant's
    predictions cover its `n` images. The store has already checked every file against its SHA-256."""
    listed = job.meta.get("parts")
    if not isinstance(listed, list):
        raise KeyError("the shard's record lists no parts")
    lacking = need - set(listed)
    if lacking:
        raise KeyError(f"the shard was stored without {', '.join(sorted(lacking)[:4])}")
    part = ShardOutput.from_job(job)
    absent = set(listed) - part.parts()
    if absent:
        raise KeyError(f"the shard's record lists {', '.join(sorted(absent)[:4])}, which it does not hold")
    for v in ok:
        if v.key not in part.preds:
            raise KeyError(f"no predictions of {v.key}")
        _check_len(part.preds[v.key], n)


def _keep_preds(ok: list[Variant], preds: dict[str, np.ndarray], s0: int) -> None:
    """Record a shard's top-1 predictions on each variant (`Variant.preds`, -1 where not predicted)."""
    for v in ok:
        if v.key in preds and v.preds is not None:
            v.preds[s0 : s0 + len(preds[v.key])] = preds[v.key]


def predict_rest(ctx: "RunContext", setup: "ModelSetup", key: dict[str, Any]) -> None:
    """Top-1 of every variant on the test images past the explained ones (logits only, shard by shard, one
    job each), so that accuracy and agreement cover the whole test split as the timing pass once did."""
    from edgecam.bench.store import Job

    size = max(ctx.cfg.explain.shard_size, 256)
    for s0 in range(ctx.n_img, ctx.data.n_test, size):
        s1 = min(ctx.data.n_test, s0 + size)

        def compute(s0: int = s0, s1: int = s1) -> Job:
            x = ctx.data.test_shard(s0, s1).x
            return Job({}, {f"pred_{v.key}": finite_top1(setup.sessions[v.key](x)["logits"]) for v in setup.ok})

        try:
            # predictions depend on the variants, weights, device and data only: a change of explain settings or
            # saliency maps does not redo them
            pkey = {k: v for k, v in key.items() if k not in ("explain", "saliency")}
            job, _ = ctx.store.get_or_compute("predict", job_key(**pkey, predict=[s0, s1]), compute,
                                              lambda j, n=s1 - s0: [_check_len(j.arrays[f"pred_{v.key}"], n) for v in setup.ok])
        except (EdgecamError, OSError, TimeoutError) as exc:
            ctx.log(f"[yellow]predictions of images {s0}-{s1 - 1} failed ({type(exc).__name__}: {exc}); accuracy leaves them out[/yellow]")
            continue
        assert job is not None
        _keep_preds(setup.ok, {k[len("pred_"):]: a for k, a in job.arrays.items()}, s0)


def _sim_module(v: Variant) -> Any:
    import onnx

    from edgecam.exporters.quantize.graph import OnnxGraphModule

    return OnnxGraphModule(onnx.load(str(v.artifact_dir / v.manifest["file"])), name=v.key).eval()


def _hist_edges(ok: list[Variant], outputs: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Activation-histogram bin edges per model / format / runtime, from shard 0's features of its first
    variant that has an fp32 sibling (the fp32 one where it comes first): every precision and shard is
    binned alike."""
    edges: dict[str, np.ndarray] = {}
    for v in ok:
        if v.fp32_key in outputs and v.key in outputs:
            edges.setdefault(v.family, _edges(np.asarray(outputs[v.key]["features"], dtype=np.float32)))
    return edges


def _edges(feats: np.ndarray) -> np.ndarray:
    finite = feats[np.isfinite(feats)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    return np.linspace(lo, hi if hi > lo else lo + 1.0, HIST_BINS + 1)


def variant_cams(ctx: "RunContext", setup: ModelSetup, shard: "TestShard", outputs: dict[str, dict[str, np.ndarray]],
                 preds: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[tuple[str, str, str], np.ndarray]]:
    """The host reference CAMs of the shard and every (variant key, method, mode)'s CAMs, (N, H, W) each."""
    from edgecam.explain.cams import CamContext, cam_method, reference_cams

    ex = ctx.cfg.explain
    with stage("cam"):
        host_ctx = CamContext(setup.model, setup.layer, shard.x, seed=ex.seed, options=dict(ex.method_options), body=setup.host_body)
        with stage("cam.reference"):
            if setup.model is None:  # a model of TFLite files only: no float graph (its "v. host reference" columns are NaN)
                reference = np.full((len(shard.x), *shard.x.shape[2:]), np.nan, dtype=np.float32)
            else:
                reference = reference_cams(host_ctx, ex.reference, shard.labels if ex.target == "label" else None)
        if setup.host_body is not None and setup.host_body.reason:
            ctx.log(f"[yellow]reference CAMs use the torch body: {setup.host_body.reason}[/yellow]")
            setup.host_body = None
        cams: dict[tuple[str, str, str], np.ndarray] = {}
        for v in setup.ok:
            targets = shard.labels if ex.target == "label" else preds[v.key]
            vctx = CamContext(setup.model, setup.layer, shard.x, forward=setup.sessions.get(v.key), sim_module=setup.sims.get(v.key), seed=ex.seed,
                              options=dict(ex.method_options))
            for method, mode in cam_jobs(v, ctx.cfg):
                with stage(f"cam.{method}.{mode}"):
                    cams[(v.key, method, mode)] = cam_method(method, mode)(vctx, outputs[v.key]["features"], targets)
    return reference, cams


def fetch_shard(ctx: "RunContext", setup: ModelSetup, s0: int, s1: int) -> "Fetched":
    """Test images s0..s1-1 decoded and every variant's outputs (logits + features) for them: the shard's device work."""
    shard = ctx.data.test_shard(s0, s1)
    return shard, {v.key: setup.sessions[v.key].forward(shard.x, None) for v in setup.ok}


class Prefetch:
    """One shard ahead: the next shard's decode and device outputs run on a worker thread while the host explains
    the current one (the device computes while the host computes). At most one shard is in flight, so memory
    holds two shards' images and outputs, never more. The device sessions serialise their requests, so a
    Score-CAM or a faithfulness curve of the current shard can share a session with the worker. `device_s`: the
    worker's seconds in device calls (they overlap the host's work and are not in the main thread's stage tags)."""

    def __init__(self, ctx: "RunContext", setup: ModelSetup) -> None:
        from concurrent.futures import Future, ThreadPoolExecutor

        self.ctx, self.setup = ctx, setup
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="edgecam-prefetch")
        self.pending: dict[tuple[int, int], Future[tuple[Fetched, float]]] = {}
        self.device_s = 0.0
        self.last_wait_s = self.last_device_s = 0.0  # the last `take`: seconds waited, the fetch's device seconds

    def _fetch(self, s0: int, s1: int) -> tuple["Fetched", float]:
        from edgecam.stages import clock

        before = clock().snapshot().get("device", 0.0)
        got = fetch_shard(self.ctx, self.setup, s0, s1)
        return got, clock().snapshot().get("device", 0.0) - before

    def start(self, s0: int, s1: int) -> None:
        if (s0, s1) not in self.pending:
            self.pending[(s0, s1)] = self.pool.submit(self._fetch, s0, s1)

    def take(self, s0: int, s1: int) -> "Fetched":
        """Shard s0..s1-1 fetched: the worker's result (its error raised here), or fetched now if not started."""
        fut = self.pending.pop((s0, s1), None)
        t0 = time.perf_counter()
        if fut is None:
            got, secs = self._fetch(s0, s1)
        else:
            with stage("device.wait"):  # the part of the worker's device time the host did not hide
                got, secs = fut.result()
            self.device_s += secs
        self.last_wait_s, self.last_device_s = time.perf_counter() - t0, secs
        return got

    def close(self) -> None:
        for fut in self.pending.values():
            fut.cancel()
        self.pending.clear()
        self.pool.shutdown(wait=True)


def explain_shard(ctx: "RunContext", setup: ModelSetup, s0: int, s1: int, fetched: "Fetched | None" = None) -> ShardOutput:
    """CAMs of every variant on test images s0..s1-1, then their rows and the shard's aggregate pieces. `fetched`:
    the shard and its device outputs when a `Prefetch` already has them. numpy's BLAS runs on one thread here: its
    matrices are small (49 x 49 Gram matrices, 224 x 224 maps), and a second thread only contends with the device's
    and ONNX Runtime's (measured: the metrics' process CPU 48.8 -> 28.7 ms per image and variant, wall unchanged)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"), _torch_threads(1 if ctx.device.kind == "local" else None):
        return _explain_shard(ctx, setup, s0, s1, fetched)


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `n` inside (None: unchanged). With the device on this host its runtime
    keeps the cores busy while the host explains (`Prefetch`), and torch's OpenMP threads then wait on each other
    at every barrier: measured on 2 cores, one 2-image forward of EfficientNet-Lite0 took ~2.5 s in the stage
    against 0.07 s alone."""
    import torch

    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _explain_shard(ctx: "RunContext", setup: ModelSetup, s0: int, s1: int, fetched: "Fetched | None" = None) -> ShardOutput:
    import pandas as pd

    ok = setup.ok
    shard, outputs = fetched if fetched is not None else fetch_shard(ctx, setup, s0, s1)  # logits + features, this shard only
    targets = {k: np.asarray(o["logits"]).argmax(1) for k, o in outputs.items()}  # the classes the CAMs explain (any index, to run at all)
    preds = {k: finite_top1(o["logits"], o["features"]) for k, o in outputs.items()}  # what is reported: NONFINITE where the outputs were not finite
    edges_all = setup.hist_edges if s0 else _hist_edges(ok, outputs)
    with stage("metrics.saliency"):
        mean, std = (np.asarray(a, np.float32)[:, None, None] for a in (ctx.data.mean, ctx.data.std))
        raw = np.clip(shard.x * std + mean, 0, 1)
        saliency = setup.provider.maps(raw, list(shard.ids), shard.masks)
    reference, cams = variant_cams(ctx, setup, shard, outputs, targets)
    rows: list[dict[str, Any]] = []
    tracks: dict[tuple[str, str, str], Track] = {}
    hist: dict[str, np.ndarray] = {}
    with stage("metrics"):
        gaps = runtime_gap_rows(ctx.cfg, ok, cams, shard.ids, preds)
        truth = ShardTruth.of(shard)
        for v in ok:
            if v.fp32_key not in preds and v.reference != NO_REFERENCE:
                if s0 == 0:
                    ctx.log(f"[yellow]no fp32 {v.format}/{v.runtime} variant of {v.model}: {v.key} has no CAM comparison rows[/yellow]")
                continue
            edges = edges_all.get(v.family)
            if edges is not None:  # None only when shard 0 failed: this shard's activations get no histogram
                feats = np.asarray(outputs[v.key]["features"], dtype=np.float32)
                hist[v.key] = np.histogram(np.clip(feats[np.isfinite(feats)], edges[0], edges[-1]), bins=edges)[0]
            v_rows, v_tracks = variant_rows(ctx, setup, v, VariantCams(shard, outputs[v.key], cams, reference, saliency, preds, targets), truth, s0)
            rows += v_rows
            tracks.update(v_tracks)
    score = grid_score(ok, ctx.cfg)
    grid = _grid(cams, raw, shard, saliency, preds, grid_scores(rows, score, ok, len(raw)), score, s0)
    kept = kept_outputs(ok, outputs, cams, shard.ids, s0, ctx.cfg.explain.keep_outputs, ctx.cfg.explain.keep_cam_size)
    return ShardOutput(pd.DataFrame(rows), pd.DataFrame(gaps), tracks, hist, grid, preds, edges_all if s0 == 0 else {}, kept)


def runtime_gap_rows(cfg: "RunConfig", ok: list[Variant], cams: dict[tuple[str, str, str], np.ndarray], ids: Sequence[str],
                     preds: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The runtime gap: each other runtime's CAMs vs the first runtime's at the same precision, per image."""
    from edgecam.bench.results import gap_rows

    gaps: list[dict[str, Any]] = []
    first_by_precision: dict[str, Variant] = {}
    for v in ok:
        ref_v = first_by_precision.setdefault(v.precision, v)
        if ref_v is not v:
            for method, mode in default_jobs(cfg):
                gaps += gap_rows(v, ref_v, method, cams[(v.key, method, mode)], cams[(ref_v.key, method, mode)], ids, preds[v.key], preds[ref_v.key])
    return gaps


@dataclass(frozen=True)
class ShardTruth:
    """What a shard's images say about themselves, shared by every variant: ground-truth boxes (None without),
    the images that have one, and which inputs are finite."""

    gt_boxes: list[Any]
    has_box: list[int]
    input_finite: np.ndarray

    @classmethod
    def of(cls, shard: "TestShard") -> "ShardTruth":
        from edgecam.explain.localisation import box_from_mask

        boxes = [box_from_mask(m > 0.5) if has else None for m, has in zip(shard.masks, shard.has_box)]
        return cls(boxes, [i for i, b in enumerate(boxes) if b is not None], np.isfinite(shard.x).reshape(len(shard.x), -1).all(1))


@dataclass(frozen=True)
class VariantCams:
    """One shard's CAMs and what they are compared with: the shard, one variant's device outputs, every
    (variant key, method, mode)'s CAMs, the host reference CAMs, the saliency maps, every variant's top-1 as
    reported (`NONFINITE` where its outputs were not finite) and the classes its CAMs explained (`targets`)."""

    shard: "TestShard"
    outputs: dict[str, np.ndarray]
    cams: dict[tuple[str, str, str], np.ndarray]
    reference: np.ndarray
    saliency: np.ndarray
    preds: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]


def variant_rows(ctx: "RunContext", setup: ModelSetup, v: Variant, got: VariantCams, truth: ShardTruth, s0: int) -> tuple[list[dict[str, Any]], dict[tuple[str, str, str], Track]]:
    """`v`'s result rows for the shard, one per image and CAM job, and its tracks (WSOL hit counts of Choe et al.
    2020 on the images with ground truth; the heap of its CAMs least like fp32's)."""
    from edgecam.bench.results import CamMaps, ShardMaps, image_rows
    from edgecam.explain.cams import CAM_METHODS
    from edgecam.explain.localisation import box_ious_batch

    ex, shard = ctx.cfg.explain, got.shard
    feats = np.asarray(got.outputs["features"], dtype=np.float32)
    output_finite = np.isfinite(feats).reshape(len(feats), -1).all(1) & np.isfinite(got.outputs["logits"]).reshape(len(feats), -1).all(1)
    has_box = [i for i in truth.has_box if output_finite[i]]  # WSOL counts images whose CAM came from finite outputs only
    act = [_act_stats(f) for f in feats]
    pred_fp32 = got.preds.get(v.fp32_key)
    if pred_fp32 is None:  # no float reference (NO_REFERENCE): no top-1 to agree with
        pred_fp32 = np.full(len(shard.x), -1, dtype=np.int64)
    against = ShardMaps(shard, got.reference, got.saliency, setup.provider_name, got.preds[v.key], pred_fp32)
    rows: list[dict[str, Any]] = []
    tracks: dict[tuple[str, str, str], Track] = {}
    for method, mode in cam_jobs(v, ctx.cfg):
        c = got.cams[(v.key, method, mode)]
        c_fp32 = got.cams.get((v.fp32_key, method, mode))
        if c_fp32 is None:  # no float reference (NO_REFERENCE): "v. fp32" is NaN
            c_fp32 = np.full_like(c, np.nan)
        faith = _faithfulness(setup.sessions.get(v.key), shard.x, c, got.targets[v.key], s0, setup.n_faith, ex.faithfulness_steps)
        track = tracks.setdefault((v.key, method, mode), Track(np.zeros(len(WSOL_THRESHOLDS), dtype=np.int64)))
        wsol_iou = np.full(len(c), np.nan)
        if has_box:  # MaxBoxAcc counts on images with ground truth only
            ious = box_ious_batch(c[has_box], [truth.gt_boxes[i] for i in has_box])  # zeros for a constant or non-finite CAM: a miss
            track.n += len(has_box)
            track.hits += (ious >= 0.5).sum(0)
            wsol_iou[has_box] = np.where(np.isfinite(c[has_box]).reshape(len(has_box), -1).all(1), ious.max(1), np.nan)
        channels = CAM_METHODS.get(method).channels(feats.shape[1], dict(ex.method_options))
        extra = [{**faith[i], **act[i], "cam_channels": channels, "input_finite": bool(truth.input_finite[i]), "output_finite": bool(output_finite[i])}
                 for i in range(len(c))]
        new = image_rows(v, CamMaps(method, mode, c, c_fp32, wsol_iou, extra), against, ctx.device.name, ex.emd_size)
        if v.precision != "fp32":
            for i, r in enumerate(new):
                if np.isfinite(r["rmse_fp32"]):
                    push(track.heap, (float(r["rmse_fp32"]), s0 + i, str(shard.ids[i]), c[i].copy(), c_fp32[i].copy()), setup.top_k)
        rows += new
    return rows, tracks


def kept_outputs(ok: list[Variant], outputs: dict[str, dict[str, np.ndarray]], cams: dict[tuple[str, str, str], np.ndarray], ids: Sequence[str],
                 s0: int, keep: int, size: int) -> dict[str, np.ndarray]:
    """What a run keeps of the shard's images among the first `keep` of the run (`explain.keep_outputs`), for
    comparisons across runs (`edgecam compare`'s device gap: the same artifact on two devices): the image
    ids, each variant's logits (float32) and each CAM area-downsampled to at most `size` pixels a side."""
    n = max(0, min(len(ids), keep - s0))
    if n == 0:
        return {}
    kept = {"ids": np.asarray([str(i) for i in ids[:n]])}
    names = {v.key: f"{v.model}|{v.format}|{v.precision}|{v.runtime}" for v in ok}
    for v in ok:
        kept[f"logits|{names[v.key]}"] = np.asarray(outputs[v.key]["logits"][:n], dtype=np.float32)
    for (vkey, method, mode), c in cams.items():
        kept[f"cam|{names[vkey]}|{method}|{mode}"] = shrink_maps(c[:n], size)
    return kept


def shrink_maps(maps: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) maps area-downsampled (cv2.INTER_AREA) to at most `size` pixels a side, float32; as they are
    when already that small."""
    import cv2

    h, w = maps.shape[1:]
    f = min(1.0, size / max(h, w))
    if f >= 1:
        return np.asarray(maps, np.float32)
    dsize = (max(1, round(w * f)), max(1, round(h * f)))
    out = np.empty((len(maps), dsize[1], dsize[0]), np.float32)  # (0, h, w) for a shard that keeps no grid candidate
    for i, m in enumerate(maps):
        out[i] = cv2.resize(np.asarray(m, np.float32), dsize, interpolation=cv2.INTER_AREA).reshape(dsize[1], dsize[0])
    return out


def precision_bits(precision: str) -> int:
    """The bits of a precision label, for "lowest precision": the smallest number in it ("int8" 8, "int16x8" 8,
    "fp16" 16); a label without one ("mixed") counts as 8."""
    import re

    bits = [int(b) for b in re.findall(r"\d+", precision)]
    return min(bits) if bits else 8


def grid_score(ok: list[Variant], cfg: "RunConfig") -> dict[str, str] | None:
    """What the grid scores each image by: the RMSE vs fp32 (results' `rmse_fp32`) of the CAMs of the run's reference
    method (`explain.reference`, else the first of `explain.methods`) in its default mode, on the lowest-precision
    quantized variant that has an fp32 CAM to compare with (the last such in the run's order on a tie), or None."""
    if not cfg.explain.methods:
        return None
    method = cfg.explain.reference if cfg.explain.reference in cfg.explain.methods else cfg.explain.methods[0]
    mode = dict(default_jobs(cfg))[method]
    keys = {v.key for v in ok}
    scored = [v for v in ok if v.precision != "fp32" and v.fp32_key in keys and (method, mode) in cam_jobs(v, cfg)]
    if not scored:
        return None
    v = min(reversed(scored), key=lambda v: precision_bits(v.precision))  # min keeps the first of equals: the last in `ok`
    return {"variant": v.key, "method": method, "mode": mode, "metric": "rmse_fp32"}


def grid_scores(rows: list[dict[str, Any]], score: dict[str, str] | None, ok: list[Variant], n: int) -> np.ndarray:
    """Each of the shard's `n` images' grid score: its row's `score["metric"]` (the very number results.parquet holds;
    NaN where the outputs were not finite), NaN for all without a score."""
    if score is None:
        return np.full(n, np.nan)
    v = next(v for v in ok if v.key == score["variant"])
    ident = (v.model, v.format, v.runtime, v.precision, score["method"], score["mode"])
    got = [float(r[score["metric"]]) for r in rows if (r["model"], r["format"], r["runtime"], r["precision"], r["cam_method"], r["cam_mode"]) == ident]
    return np.asarray(got, dtype=np.float64) if len(got) == n else np.full(n, np.nan)


#: the grid's saliency maps and CAMs are kept at most this many pixels a side (the report upsamples them onto
#: the image): a CAM is a 7 x 7 to 28 x 28 map upsampled, so 56 px loses nothing visible, and a shard's grid
#: candidates (5 images x every variant's CAM) stay ~1 MB at 224 px instead of ~7.5 MB
GRID_MAP_SIZE = 56


def _half(a: np.ndarray) -> np.ndarray:
    """A map for display, float16 (half the bytes of float32); values past float16's range saturate, NaN stays."""
    return np.clip(np.asarray(a, dtype=np.float32), -65504, 65504).astype(np.float16)


def _byte(a: np.ndarray) -> np.ndarray:
    """An image or mask in [0, 1] for display, uint8 0-255 (NaN as 0): a quarter of float32's bytes."""
    return np.round(np.clip(np.nan_to_num(np.asarray(a, dtype=np.float32)), 0, 1) * 255).astype(np.uint8)


def _grid(cams: dict[tuple[str, str, str], np.ndarray], raw: np.ndarray, shard: "TestShard", saliency: np.ndarray, preds: dict[str, np.ndarray],
          scores: np.ndarray, score: dict[str, str] | None, s0: int) -> dict[str, Any]:
    """The shard's part of the report's Figure-2 grid (2403.09939): every image's score (`grid_score`) and the
    images it keeps as candidates (`aggregate.shard_candidates`: its most dissimilar and those nearest its own
    median; the run picks among every shard's, `aggregate.pick_grid`) with their input (uint8), mask (uint8),
    saliency and every variant's CAM (float16, at most `GRID_MAP_SIZE` px a side) and prediction. An image with a non-finite output on any variant
    (`NONFINITE`) is never a typical candidate."""
    n = len(raw)
    typical_ok = np.ones(n, dtype=bool)
    for p in preds.values():
        typical_ok &= np.asarray(p) != NONFINITE
    chosen = shard_candidates(scores, typical_ok, s0)
    return {
        "score": score, "s0": s0, "scores": np.asarray(scores, dtype=np.float64), "ids": [str(shard.ids[i]) for i in chosen], "index": [s0 + i for i in chosen],
        "typical_ok": [bool(typical_ok[i]) for i in chosen], "images": _byte(raw[chosen]), "masks": _byte(shard.masks[chosen]),
        "has_box": np.asarray(shard.has_box[chosen], dtype=bool), "saliency": _half(shrink_maps(saliency[chosen], GRID_MAP_SIZE)),
        "cams": {key: _half(shrink_maps(c[chosen], GRID_MAP_SIZE)) for key, c in cams.items()},
        "preds": {k: np.asarray(p[chosen], dtype=np.int64) for k, p in preds.items()},
    }


def _act_stats(f: np.ndarray) -> dict[str, float]:
    from edgecam.explain.activations import activation_stats

    st = activation_stats(f)
    return {f"act_{k}": float(st[k]) for k in ("entropy", "std", "hoyer", "gini")}


def _faithfulness(session: "DeviceSession | None", x: np.ndarray, cams: np.ndarray, targets: np.ndarray, s0: int, n_faith: int, steps: int) -> list[dict[str, float]]:
    """Deletion / Insertion AUCs (Petsiuk et al. 2018) for the shard's images below `n_faith`, else NaN. The
    device composes the perturbed inputs from each image and its CAM (`DeviceSession.perturb`): only those
    two travel, not 2 x (steps + 1) images."""
    from edgecam.explain.faithfulness import faithfulness_from_logits

    k = max(0, min(len(x), n_faith - s0))
    nan = {"deletion_auc": float("nan"), "insertion_auc": float("nan")}
    if session is None or k == 0:
        return [nan] * len(x)
    res = faithfulness_from_logits(session.perturb(x[:k], cams[:k], steps, kind="both"), targets[:k], steps, x.shape[2] * x.shape[3])
    return [{"deletion_auc": float(r["deletion_auc"]), "insertion_auc": float(r["insertion_auc"])} for r in res] + [nan] * (len(x) - k)
