"""Explanation sensitivity: which quantized node group of an ONNX QDQ artifact moves the CAM, and a
mixed-precision plan that keeps it.

For each group of the artifact (`exporters/quantize/groups.py`: an activation's Q/DQ, a layer's weight DQ)
two variants are simulated on the host (`exporters/quantize/graph.py`, the same fake-quant graph as the
"sim" CAM mode): the artifact with that group alone in higher precision ("fallback": float, or int16 for a
weight ONNX Runtime would otherwise re-quantize, see `groups.with_fallback`), and the fp32 model with that group
alone quantized ("only"). Each variant's `features` get the CAM of `sensitivity.method` through the
fp32 graph's head (what the device's "mirror" CAMs do: device features, fp32 head gradients), compared per
image with the fp32 model's CAM by CC / SIM / KLD (`explain/metrics.py`, Bylinskii et al. 2018), and its
top-1 with the fp32 top-1. ONNX Runtime's `qdq_loss_debug` gives each group's SQNR (its activation pairing
and weight matching; the SQNR formula of `compute_signal_to_quantization_noice_ratio`, accumulated over
the chunks of images so that memory stays bounded).

The ranking images are a seeded subset of the training split, never the test images: the plan is then
measured on the device on images it was not chosen on. The plan is a verified greedy search (`plan`): groups
in ranking order are kept in fallback when they raise the host CC vs fp32, until it reaches `cc_target` or
`budget` groups are kept; the planned model is exported as precision `mixed` and runs on the device like any
other variant, and its device CAMs on the ranking images are compared with the host simulation's.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from edgecam.bench import outputs as files
from edgecam.bench.store import Job, job_key
from edgecam.bench.variant import Variant
from edgecam.errors import ConfigError, EdgecamError

if TYPE_CHECKING:
    import onnx

    from edgecam.bench.context import RunContext
    from edgecam.config import ModelSpec, SensitivitySpec

MIXED = "mixed"
JOB_VERSION = 3  # in the job keys and the mixed artifact's: 2 added the gain intervals and the verified plan, 3 int16 weight fallbacks


@dataclass
class Evaluation:
    """A simulated variant on the ranking images: CAMs (N, H, W), top-1 and features."""

    cams: np.ndarray
    preds: np.ndarray


class Simulator:
    """Host simulation of QDQ variants of one model on fixed images, and the CAMs of their features.

    The graph runs in ONNX Runtime on the host at graph optimisation "basic": every QuantizeLinear /
    DequantizeLinear stays an op and the layers between them run in float, the QDQ graph's own semantics
    (ONNX operator spec), without the fused integer kernels a device's runtime picks at "all". It is what
    `graph.OnnxGraphModule` computes (within a few quantization steps of the logits), ~4x faster on a 224 px
    EfficientNet-Lite0 here; the head's gradients come from the fp32 graph in `OnnxGraphModule`."""

    def __init__(self, fp32: "onnx.ModelProto", images: np.ndarray, labels: np.ndarray, method: str, target: str, batch_size: int, threads: int = 2,
                 disabled_optimizers: Sequence[str] = ()) -> None:
        import onnx

        from edgecam.exporters.quantize.graph import OnnxGraphModule

        self.images, self.labels, self.method, self.target, self.batch, self.threads = images, labels, method, target, batch_size, threads
        outputs = [o.name for o in fp32.graph.output]
        if outputs[:2] != ["logits", "features"]:
            raise EdgecamError(f"the fp32 artifact's outputs are {outputs}, expected logits and features")
        inferred = onnx.shape_inference.infer_shapes(fp32)
        head = onnx.utils.Extractor(inferred).extract_model(["features"], ["logits"])  # the layers after the CAM layer
        self.head = OnnxGraphModule(head, name="fp32 head").eval()
        self.head.quant = False
        self.fp32 = fp32
        # ONNX Runtime passes to leave out, e.g. "WeightBiasQuantization" to emulate a network whose float
        # biases stay float (TensorRT's): at "basic" it would quantize them to int32 as the device's ORT does
        self.disabled_optimizers = list(disabled_optimizers)
        self._reference: Evaluation | None = None

    def reference(self) -> Evaluation:
        """The fp32 model's evaluation, computed once (the ranking and the plan compare against it)."""
        if self._reference is None:
            self._reference = self.run(self.fp32)
        return self._reference

    def run(self, model: "onnx.ModelProto") -> Evaluation:
        """Features and logits of `model` in host simulation, then the CAMs of its targets."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # Q / DQ stay ops: no integer kernels
        options.intra_op_num_threads = self.threads
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"], disabled_optimizers=self.disabled_optimizers)
        feats, logits = [], []
        for i in range(0, len(self.images), self.batch):
            lg, f = session.run(["logits", "features"], {"input": np.ascontiguousarray(self.images[i : i + self.batch])})
            feats.append(f)
            logits.append(lg)
        f, lg = np.concatenate(feats), np.concatenate(logits)
        preds = lg.argmax(1)
        targets = self.labels if self.target == "label" else preds
        return Evaluation(self.cams(f, targets), preds)

    def cams(self, features: np.ndarray, targets: Sequence[int]) -> np.ndarray:
        """The CAM `method` of `features` with d logit / d features through the fp32 head (mirror mode)."""
        import torch

        from edgecam.explain.cams import package_weighted_cam

        size = (int(self.images.shape[3]), int(self.images.shape[2]))
        out = []
        for i in range(0, len(features), self.batch):
            f = torch.from_numpy(np.ascontiguousarray(features[i : i + self.batch], dtype=np.float32)).requires_grad_(True)
            logits = self.head(f)["logits"]
            idx = torch.as_tensor(np.asarray(targets[i : i + self.batch], dtype=np.int64))
            (grads,) = torch.autograd.grad(logits.gather(1, idx[:, None]).sum(), f)
            out.append(package_weighted_cam(self.method, f.detach().numpy(), grads.numpy(), size))
        return np.concatenate(out)


def image_cc(ev: Evaluation, ref: Evaluation) -> np.ndarray:
    """Per-image CC of `ev`'s CAMs vs `ref`'s (NaN for a constant map)."""
    from edgecam.explain.metrics import cc

    return np.array([cc(a, b) for a, b in zip(ev.cams, ref.cams)], dtype=np.float64)


def fidelity(ev: Evaluation, ref: Evaluation) -> dict[str, float]:
    """Mean CC / SIM / KLD of `ev`'s CAMs vs `ref`'s, and top-1 agreement (constant maps: NaN, left out)."""
    from edgecam.explain.metrics import kld, sim

    def mean(vals: np.ndarray) -> float:
        return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")

    def per_image(fn: Callable[[np.ndarray, np.ndarray], float]) -> np.ndarray:
        return np.array([fn(a, b) for a, b in zip(ev.cams, ref.cams)], dtype=np.float64)

    return {"cc": mean(image_cc(ev, ref)), "sim": mean(per_image(sim)), "kld": mean(per_image(kld)), "top1_agreement": float(np.mean(ev.preds == ref.preds))}


def sqnr_db(qdq_path: Path, fp32_path: Path, images: np.ndarray, chunk: int = 8) -> dict[str, float]:
    """SQNR (dB) per group name, by ONNX Runtime's `qdq_loss_debug`: activations as the tensor before its Q vs
    after its DQ (ORT's `qdq_err`; where the quantizer folded a Relu / Clip into the Q, the tensor before it
    gets that activation first), weights as float vs dequantized (`compute_weight_error`). Activations are
    collected `chunk` images at a time; the norms of ORT's SQNR, 20 log10(|x| / |x - y|), add up over chunks."""
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as dbg

    from edgecam.exporters.quantize.groups import folded_activations

    folded = folded_activations(onnx.load(str(qdq_path)), onnx.load(str(fp32_path)))

    out: dict[str, float] = {}
    for name, value in dbg.compute_weight_error(dbg.create_weight_matching(str(fp32_path), str(qdq_path))).items():
        out[name[: -len("_quantized")] if name.endswith("_quantized") else name] = float(value)
    sums: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="edgecam-sqnr-") as tmp:
        aug = Path(tmp) / "augmented.onnx"
        dbg.modify_model_output_intermediate_tensors(str(qdq_path), str(aug))
        for i in range(0, len(images), chunk):
            batch = np.ascontiguousarray(images[i : i + chunk], dtype=np.float32)
            acts = dbg.collect_activations(str(aug), iter([{"input": batch}]))
            for name, pair in dbg.create_activation_matching(acts).items():
                x = np.concatenate([np.ravel(a) for a in pair["pre_qdq"]]).astype(np.float64)
                if name in folded:
                    x = folded[name](x)
                y = np.concatenate([np.ravel(a) for a in pair["post_qdq"]]).astype(np.float64)
                acc = sums.setdefault(name, [0.0, 0.0])
                acc[0] += float(np.dot(x, x))
                acc[1] += float(np.dot(x - y, x - y))
    eps = float(np.finfo("float").eps)  # ORT's floor on both norms
    for name, (signal, noise) in sums.items():
        out[name] = 20 * math.log10(max(math.sqrt(signal), eps) / max(math.sqrt(noise), eps))
    return out


Memo = Callable[[str, Callable[[], dict[str, Any]]], dict[str, Any]]


def _no_memo(_name: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    return compute()


def rank(qdq: "onnx.ModelProto", fp32: "onnx.ModelProto", simulator: Simulator, sqnr: dict[str, float],
         progress: Callable[[str, float], None] | None = None, memo: Memo = _no_memo) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """One row per group: fidelity of its fallback and of its only-quantized variant, deltas vs the whole
    artifact (fallback) and vs fp32 (only), SQNR; sorted most CAM-sensitive first (fallback CC gain, then the
    only-quantized CC loss, then graph order). Returns (rows, the artifact's own fidelity). `memo(name,
    compute)` may return a group's stored row instead of computing it (the run's job store: an interrupted
    ranking resumes group by group)."""
    from edgecam.exporters.quantize.groups import qdq_groups

    groups = qdq_groups(qdq)
    names = [g.name for g in groups]
    ref = simulator.reference()
    whole = simulator.run(qdq)
    base, exact = fidelity(whole, ref), fidelity(ref, ref)  # exact: CC 1, SIM 1, KLD ~0 (constant maps aside)
    base_cc = image_cc(whole, ref)
    rows: list[dict[str, Any]] = []
    for i, g in enumerate(groups):
        rows.append(memo(g.name, lambda g=g: _group_row(qdq, fp32, simulator, g, names, ref, base, base_cc, exact, sqnr)))
        if progress is not None:
            progress(f"sensitivity: group {i + 1}/{len(groups)} {g.name}", (i + 1) / (len(groups) + 1))
    rows.sort(key=lambda r: (-_finite(r["delta_cc"]), _finite(r["only_delta_cc"]), r["position"]))
    for i, r in enumerate(rows):
        r["rank"] = i + 1
    return rows, base


def _group_row(qdq: "onnx.ModelProto", fp32: "onnx.ModelProto", simulator: Simulator, g: Any, names: list[str], ref: Evaluation,
               base: dict[str, float], base_cc: np.ndarray, exact: dict[str, float], sqnr: dict[str, float]) -> dict[str, Any]:
    """One group's row of the ranking: its fallback and its only-quantized variant, simulated. The fallback's CC
    gain has a paired 95% bootstrap interval over the ranking images (is the gain more than image noise?)."""
    from edgecam.bench.stats import bootstrap_diff_ci
    from edgecam.exporters.quantize.groups import with_fallback

    fall_ev = simulator.run(with_fallback(qdq, fp32, [g.name]))
    fall = fidelity(fall_ev, ref)
    only = fidelity(simulator.run(with_fallback(qdq, fp32, [n for n in names if n != g.name])), ref)
    _gain, lo, hi = bootstrap_diff_ci(base_cc, image_cc(fall_ev, ref), paired=True)
    return {
        "group": g.name, "kind": g.kind, "consumer": g.consumer, "position": g.position, "dtype": g.dtype, "nodes": len(g.nodes),
        **{f"fallback_{k}": v for k, v in fall.items()}, **{f"delta_{k}": fall[k] - base[k] for k in fall},
        "delta_cc_ci_lo": lo, "delta_cc_ci_hi": hi,
        **{f"only_{k}": v for k, v in only.items()}, **{f"only_delta_{k}": only[k] - exact[k] for k in only},
        "sqnr_db": sqnr.get(g.name, float("nan")),
    }


def _finite(v: float) -> float:
    return float(v) if math.isfinite(v) else 0.0


PLAN_TRIES_PER_GROUP = 4  # the plan tries at most budget x this many candidates (each one host simulation)


def plan(qdq: "onnx.ModelProto", fp32: "onnx.ModelProto", simulator: Simulator, rows: list[dict[str, Any]], spec: "SensitivitySpec",
         base: dict[str, float]) -> list[dict[str, Any]]:
    """The verified greedy plan: groups in ranking order whose fallback alone raised CC are tried one at a time
    on top of those already in float, and kept only if the combination raises the host CC vs fp32 (gains of
    single groups need not add up); until the CC reaches `spec.cc_target`, `spec.budget` groups are kept, or
    budget x PLAN_TRIES_PER_GROUP candidates were tried. One row per step (step 0: none in float), `kept` says
    which are in the plan; the plan's figures are those of its last kept step (`plan_result`)."""
    from edgecam.exporters.quantize.groups import with_fallback

    ref = simulator.reference()
    steps = [{"step": 0, "group": "", "kept": True, **base}]
    chosen: list[str] = []
    current = base
    for r in rows:
        if current["cc"] >= spec.cc_target or len(chosen) >= spec.budget or len(steps) > spec.budget * PLAN_TRIES_PER_GROUP:
            break
        if not r["delta_cc"] > 0:
            break  # sorted: no later group raises CC either
        tried = fidelity(simulator.run(with_fallback(qdq, fp32, [*chosen, r["group"]])), ref)
        kept = bool(tried["cc"] > current["cc"])
        steps.append({"step": len(steps), "group": r["group"], "kept": kept, **tried})
        if kept:
            chosen.append(r["group"])
            current = tried
    return steps


def plan_result(steps: list[dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """The plan's float groups and its host figures (its last kept step)."""
    kept = [s for s in steps if s["kept"]]
    return [s["group"] for s in kept[1:]], kept[-1]


def ranking_images(data: Any, spec: "SensitivitySpec") -> tuple[np.ndarray, np.ndarray]:
    """`spec.images` training-split images and labels, a seeded subset (in split order)."""
    x, y = data.calibration_arrays(spec.images, spec.seed)
    idx = np.sort(np.random.default_rng(spec.seed).permutation(len(x))[: spec.images])
    return np.ascontiguousarray(x[idx], dtype=np.float32), np.asarray(y[idx])


def analyse(ctx: "RunContext", mspec: "ModelSpec", variants: list[Variant], key: dict[str, Any]) -> Job:
    """The ranking and the plan of one model's artifact at `sensitivity.precision`, as a job (resumable)."""
    import onnx
    import pandas as pd

    spec = ctx.cfg.sensitivity
    qdq_v, fp32_v = _pair(variants, spec.precision)
    qdq_path, fp32_path = qdq_v.artifact_dir / qdq_v.manifest["file"], fp32_v.artifact_dir / fp32_v.manifest["file"]
    images, labels = ranking_images(ctx.data, spec)
    qdq, fp32 = onnx.load(str(qdq_path)), onnx.load(str(fp32_path))
    bar = ctx.bar(f"sensitivity {mspec.name}")
    simulator = Simulator(fp32, images, labels, spec.method, ctx.cfg.explain.target, spec.batch_size, os.cpu_count() or 1)
    ranking_key = {**key, "spec": {k: v for k, v in key["spec"].items() if k not in ("cc_target", "budget")}}  # the plan's knobs only

    def memo(group: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        job, _ = ctx.store.get_or_compute("sensitivity", job_key(**ranking_key, group=group), lambda: Job(compute()), lambda j: j.meta["delta_cc"])
        assert job is not None
        return dict(job.meta)

    rows, base = rank(qdq, fp32, simulator, sqnr_db(qdq_path, fp32_path, images), bar, memo)
    steps = plan(qdq, fp32, simulator, rows, spec, base)
    float_groups, result = plan_result(steps)
    bar(f"sensitivity {mspec.name}", 1.0)
    meta = {"model": mspec.name, "precision": spec.precision, "images": int(len(images)), "base": base, "float_groups": float_groups,
            "planned": {k: result[k] for k in ("cc", "sim", "kld", "top1_agreement")}, "reached": bool(result["cc"] >= spec.cc_target),
            "artifact_sha256": qdq_v.manifest["sha256"], "fp32_sha256": fp32_v.manifest["sha256"]}
    return Job(meta, tables={"ranking": pd.DataFrame(rows), "plan": pd.DataFrame(steps)})


def _pair(variants: list[Variant], precision: str) -> tuple[Variant, Variant]:
    """The model's ONNX variants at `precision` and fp32 (the first runtime that runs them)."""
    qdq = next((v for v in variants if v.format == "onnx" and v.precision == precision and v.ok), None)
    fp32 = next((v for v in variants if v.format == "onnx" and v.precision == "fp32" and v.ok), None)
    if qdq is None or fp32 is None:
        raise ConfigError(f"sensitivity: no ONNX {precision} and fp32 variants of this model ran (an ONNX runtime such as onnxruntime must be configured)")
    return qdq, fp32


def mixed_artifact(qdq_v: Variant, fp32_v: Variant, float_groups: list[str], meta: dict[str, Any]) -> Path:
    """The planned model (`float_groups` left in float) as a cached artifact of precision `mixed`; its
    manifest records the base artifact, the float groups and the plan's host figures."""
    from edgecam.cache import stable_hash
    from edgecam.exporters.base import MANIFEST_VERSION, cached_artifact

    key = stable_hash({"base": qdq_v.manifest["sha256"], "fp32": fp32_v.manifest["sha256"], "float_groups": float_groups, "manifest_version": MANIFEST_VERSION, "surgery": JOB_VERSION})
    return cached_artifact(f"{qdq_v.model}-onnx-{MIXED}-{key}", lambda out: _write_mixed(out, qdq_v, fp32_v, float_groups, meta))[0]


def _write_mixed(out: Path, qdq_v: Variant, fp32_v: Variant, float_groups: list[str], meta: dict[str, Any]) -> None:
    """Write the planned model and its manifest into `out` (the artifact cache's directory)."""
    import onnx

    from edgecam.exporters.base import staging_dir, write_manifest
    from edgecam.exporters.quantize.groups import float_groups_record, with_fallback

    qdq = onnx.load(str(qdq_v.artifact_dir / qdq_v.manifest["file"]))
    model = with_fallback(qdq, onnx.load(str(fp32_v.artifact_dir / fp32_v.manifest["file"])), float_groups)
    skip = {"manifest_version", "file", "sha256", "size_bytes", "outputs"}
    fields = {k: v for k, v in qdq_v.manifest.items() if k not in skip}
    fields.update(precision_requested=MIXED, precision_effective=MIXED)
    fields["quantization"] = {**qdq_v.manifest.get("quantization", {}), "base_precision": qdq_v.precision, "base_sha256": qdq_v.manifest["sha256"],
                              "float_groups": float_groups_record(qdq, float_groups, model), "plan": {k: meta[k] for k in ("base", "planned", "reached", "images")},
                              "scales_from": f"{qdq_v.manifest.get('quantization', {}).get('scales_from', 'the base artifact')}; the float groups restored from fp32"}
    with staging_dir(out) as tmp:
        onnx.save(model, str(tmp / "model.onnx"))
        write_manifest(tmp, tmp / "model.onnx", fields)


def sensitivity_stage(ctx: "RunContext", mspec: "ModelSpec", variants: list[Variant], ckpt_sha: str) -> tuple[list[Variant], dict[str, Any]]:
    """Rank, plan and export one model's `mixed` variant (one per runtime that runs its ONNX artifacts);
    writes `sensitivity.csv` and `sensitivity_plan.csv`. Returns (the new variants, the manifest entry)."""
    spec = ctx.cfg.sensitivity
    qdq_v, fp32_v = _pair(variants, spec.precision)
    parts = {"kind": "sensitivity", "version": JOB_VERSION, "spec": spec.__dict__, "target": ctx.cfg.explain.target, "weights": ckpt_sha, "data": ctx.data.fingerprint,
             "artifact": qdq_v.manifest["sha256"], "fp32": fp32_v.manifest["sha256"]}
    job, _ = ctx.store.get_or_compute("sensitivity", job_key(**parts), lambda: analyse(ctx, mspec, variants, parts),
                                      lambda j: [j.tables["ranking"]["group"], j.tables["plan"]["cc"], j.meta["float_groups"]])
    assert job is not None
    ranking, steps = job.tables["ranking"], job.tables["plan"]
    files.write_tables(ctx.out_dir, [(files.SENSITIVITY, ranking.assign(model=mspec.name, precision=spec.precision)),
                                     (files.SENSITIVITY_PLAN, steps.assign(model=mspec.name, precision=spec.precision))])
    entry: dict[str, Any] = {**job.meta, "cc_target": spec.cc_target, "budget": spec.budget}
    if not job.meta["float_groups"]:
        why = (f"the {spec.precision} artifact already reaches the target {spec.cc_target}" if job.meta["reached"]
               else "no group's float fallback raised the CAM CC")
        ctx.log(f"[yellow]sensitivity {mspec.name}: host CAM CC vs fp32 {job.meta['base']['cc']:.4f}; {why}: no mixed variant[/yellow]")
        return [], entry
    from edgecam.exporters.base import copy_artifact

    art = copy_artifact(mixed_artifact(qdq_v, fp32_v, list(job.meta["float_groups"]), job.meta), ctx.out_dir / files.ARTIFACTS / f"{mspec.name}-onnx-{MIXED}")
    art_dir = art.directory
    host = job.meta["planned"]
    ctx.log(f"sensitivity {mspec.name}: {len(ranking)} groups ranked on {job.meta['images']} training-split images; host CAM CC vs fp32 "
            f"{job.meta['base']['cc']:.4f} at {spec.precision} -> {host['cc']:.4f} with {len(job.meta['float_groups'])} group(s) in float "
            f"({'reaches' if job.meta['reached'] else 'short of'} the target {spec.cc_target})")
    mixed = [Variant(v.model, v.format, MIXED, v.runtime, art_dir, art.manifest) for v in variants if v.format == "onnx" and v.precision == spec.precision]
    entry["artifact_sha256"] = art.manifest["sha256"]
    return mixed, entry


def host_device_agreement(ctx: "RunContext", mixed: Variant, ckpt_sha: str) -> dict[str, float]:
    """CC between the planned variant's CAMs on the device (its features, fp32 head) and in host simulation,
    on the ranking images: how far the simulation the plan was made in is from what the board runs."""
    import onnx

    from edgecam.bench.measure import device_job
    from edgecam.devices.session import DeviceSession
    from edgecam.explain.metrics import cc

    spec = ctx.cfg.sensitivity
    fp32_dir = mixed.artifact_dir.parent / f"{mixed.model}-onnx-fp32"
    fp32 = onnx.load(str(fp32_dir / "model.onnx"))
    images, labels = ranking_images(ctx.data, spec)
    simulator = Simulator(fp32, images, labels, spec.method, ctx.cfg.explain.target, spec.batch_size, os.cpu_count() or 1)
    host = simulator.run(onnx.load(str(mixed.artifact_dir / mixed.manifest["file"])))
    rspec = next(r for r in ctx.cfg.runtimes if r.name == mixed.runtime)

    def compute() -> Job:
        with DeviceSession(ctx.device, mixed.artifact_dir, device_job(rspec, ctx.dspec), ctx.cfg.bench.timeout_s) as session:
            out = session.forward(images, None)
        return Job({}, {"features": np.asarray(out["features"], np.float32), "logits": np.asarray(out["logits"], np.float32)})

    key = job_key(kind="sensitivity-device", artifact=mixed.manifest["sha256"], runtime=mixed.runtime, device=ctx.device_id or ctx.dspec.name,
                  images=spec.images, seed=spec.seed, data=ctx.data.fingerprint, weights=ckpt_sha)
    job, _ = ctx.store.get_or_compute("sensitivity", key, compute, lambda j: [j.arrays["features"], j.arrays["logits"]])
    assert job is not None
    preds = job.arrays["logits"].argmax(1)
    device = simulator.cams(job.arrays["features"], labels if ctx.cfg.explain.target == "label" else preds)
    vals = np.array([cc(a, b) for a, b in zip(device, host.cams)])
    return {"device_vs_host_cc": float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan"), "device_vs_host_cc_min": float(np.nanmin(vals)) if np.isfinite(vals).any() else float("nan"),
            "device_vs_host_top1_agreement": float(np.mean(preds == host.preds)), "images": int(len(images))}
