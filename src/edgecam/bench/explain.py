"""The explain stage: CAMs of every variant, streamed shard by shard into per-image metric rows.

For each shard of `explain.shard_size` test images: the host reference CAM and the visual-saliency maps,
then every CAM method on every variant (mirror / surrogate from the device's outputs and its session, sim
in the host fake-quant graph), then the rows: agreement with the fp32 CAM of the same format, runtime and
mode (SIM / CC / KLD / RMSE / EMD), with the ground-truth mask (SIM / CC / KLD / NSS, WSOL IoU, energy
pointing game), with the visual-saliency map, the device's activation statistics, and Deletion / Insertion
through the device session. CAMs are dropped after their shard; what outlives a shard is small: the rows,
per-threshold WSOL hit counts, activation histograms and a bounded heap of the most dissimilar CAMs
(Rogers et al. 2023's top-5% subset).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    from edgecam.bench.store import Job, JobStore
    from edgecam.bench.sweep import Datasets, Variant
    from edgecam.config import RunConfig

Progress = Callable[[str, float], None]
WSOL_THRESHOLDS = np.round(np.arange(0.05, 1.0, 0.05), 2)  # CAM thresholds (fraction of max), Choe et al. 2020
GRADIENT_METHODS = ("gradcampp", "gradcam", "xgradcam", "layercam", "hirescam")
HIST_BINS = 64


class DeviceSession:
    """The device as a function: `session(x) -> {"logits"}` (or every output with `outputs=None`) for any
    number of inputs, sent to the agent in "forward" jobs of at most `max_inputs` (bounds what one job ships
    and holds). Masked-input CAMs and the faithfulness curves need only the logits back; not shipping the
    features makes a Score-CAM job ~3x lighter."""

    def __init__(self, device: Any, artifact_dir: Any, job: dict[str, Any], timeout: float | None = 600, max_inputs: int = 16384, outputs: Sequence[str] | None = ("logits",), batch_size: int = 16) -> None:
        self.device, self.artifact_dir, self.timeout, self.max_inputs = device, artifact_dir, timeout, max_inputs
        self.job = {**job, "mode": "forward", "output_batch_size": batch_size, **({"outputs": list(outputs)} if outputs is not None else {})}
        self.calls = 0
        self.inputs = 0

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        parts: dict[str, list[np.ndarray]] = {}
        for i in range(0, len(x), self.max_inputs):
            _, out = self.device.run_job(self.artifact_dir, x[i : i + self.max_inputs], self.job, timeout=self.timeout)
            self.calls += 1
            self.inputs += len(x[i : i + self.max_inputs])
            for k, v in out.items():
                parts.setdefault(k, []).append(v)
        return {k: np.concatenate(v) for k, v in parts.items()}

    def masked(self, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """Logits of images[i] * masks[i, k] for every i, k, (N * K, classes), image-major; the device does
        the multiplication, so only the (N, K, H, W) masks travel, in jobs of at most `max_inputs` products."""
        per_job = max(1, self.max_inputs // max(1, masks.shape[1]))
        out = []
        for i in range(0, len(images), per_job):
            job = {**self.job, "mode": "masked"}
            _, res = self.device.run_job(self.artifact_dir, images[i : i + per_job], job, timeout=self.timeout, extra={"masks": masks[i : i + per_job]})
            self.calls += 1
            self.inputs += int(np.prod(masks[i : i + per_job].shape[:2]))
            out.append(res["logits"])
        return np.concatenate(out)


@dataclass
class ExplainOutput:
    """What the explain stage leaves behind for one model."""

    rows: list[Any] = field(default_factory=list)  # per-shard DataFrames of per-image rows
    gaps: list[Any] = field(default_factory=list)  # per-shard DataFrames of runtime-gap rows
    wsol: list[dict[str, Any]] = field(default_factory=list)
    histograms: list[dict[str, Any]] = field(default_factory=list)
    dissimilar: list[dict[str, Any]] = field(default_factory=list)
    grid: dict[str, Any] = field(default_factory=dict)  # the report's CAM grid: a few images, every variant
    failed: list[dict[str, str]] = field(default_factory=list)  # shards that raised: {"job", "error"}


HeapItem = tuple[float, int, str, np.ndarray, np.ndarray]  # (RMSE vs fp32, image index, image id, CAM, fp32 CAM)


@dataclass
class _Track:
    """Per (variant, method, mode): WSOL hits per threshold and the top-k most dissimilar CAMs (min-heap)."""

    hits: np.ndarray
    n: int = 0
    heap: list[HeapItem] = field(default_factory=list)


def _push(heap: list[HeapItem], item: HeapItem, top_k: int) -> None:
    """Keep the `top_k` largest items (Rogers et al. 2023's top-5% subset, bounded memory)."""
    (heapq.heappush if len(heap) < top_k else heapq.heappushpop)(heap, item)


@dataclass
class ShardOutput:
    """One shard's explain job: its rows and what the run-level aggregates need from it. Stored as a job
    (tables + JSON + npz, see `bench/store.py`) so that a resumed run reads back exactly what it wrote."""

    rows: Any  # DataFrame
    gaps: Any  # DataFrame
    tracks: dict[tuple[str, str, str], _Track]
    hist: dict[str, np.ndarray]
    grid: dict[str, Any]

    def to_job(self) -> "Job":
        from edgecam.bench.store import Job

        arrays: dict[str, np.ndarray] = {}
        tracks = []
        for t, (key, tr) in enumerate(self.tracks.items()):
            heap = []
            for h, (score, index, image_id, cam, cam_fp32) in enumerate(tr.heap):
                arrays[f"t{t}_h{h}_cam"], arrays[f"t{t}_h{h}_fp32"] = cam, cam_fp32
                heap.append([score, index, image_id])
            tracks.append({"key": list(key), "hits": tr.hits.tolist(), "n": tr.n, "heap": heap})
        grid: dict[str, Any] = {}
        if self.grid:
            for name in ("images", "masks", "saliency"):
                arrays[f"grid_{name}"] = np.asarray(self.grid[name])
            cams = []
            for j, (key, c) in enumerate(self.grid["cams"].items()):
                arrays[f"grid_cam{j}"] = np.asarray(c)
                cams.append(list(key))
            grid = {"ids": self.grid["ids"], "kinds": self.grid["kinds"], "cams": cams, "preds": {k: np.asarray(p).tolist() for k, p in self.grid["preds"].items()}}
        arrays.update({f"hist_{k}": np.asarray(v) for k, v in self.hist.items()})
        tables = {name: df for name, df in (("rows", self.rows), ("gaps", self.gaps)) if len(df.columns)}
        return Job({"tracks": tracks, "hist": list(self.hist), "grid": grid}, arrays, tables)

    @classmethod
    def from_job(cls, job: "Job") -> "ShardOutput":
        import pandas as pd

        a, meta = job.arrays, job.meta
        tracks = {}
        for t, tr in enumerate(meta["tracks"]):
            heap = [(float(s), int(i), str(image_id), a[f"t{t}_h{h}_cam"], a[f"t{t}_h{h}_fp32"]) for h, (s, i, image_id) in enumerate(tr["heap"])]
            tracks[tuple(tr["key"])] = _Track(np.asarray(tr["hits"], dtype=np.int64), int(tr["n"]), heap)
        grid: dict[str, Any] = {}
        if meta["grid"]:
            g = meta["grid"]
            grid = {"ids": g["ids"], "kinds": g["kinds"], **{name: a[f"grid_{name}"] for name in ("images", "masks", "saliency")},
                    "cams": {tuple(k): a[f"grid_cam{j}"] for j, k in enumerate(g["cams"])}, "preds": {k: np.asarray(p) for k, p in g["preds"].items()}}
        return cls(job.tables.get("rows", pd.DataFrame()), job.tables.get("gaps", pd.DataFrame()), tracks,  # type: ignore[arg-type]
                   {k: a[f"hist_{k}"] for k in meta["hist"]}, grid)


def _cam_jobs(v: "Variant", cfg: "RunConfig") -> list[tuple[str, str]]:
    """(method, mode) pairs to run on variant `v`."""
    from edgecam.explain.cams import CAM_METHODS

    jobs = [(m, CAM_METHODS.get(m).mode) for m in cfg.explain.methods]
    if cfg.explain.sim and v.format == "onnx":
        jobs += [(m, "sim") for m in cfg.explain.methods if m in GRADIENT_METHODS]
    return jobs


def _sim_module(v: "Variant") -> Any:
    import onnx

    from edgecam.exporters.quantize.graph import OnnxGraphModule

    return OnnxGraphModule(onnx.load(str(v.artifact_dir / v.manifest["file"])), name=v.key).eval()


@dataclass
class _Setup:
    """What every shard of one model shares."""

    ok: list["Variant"]
    provider: Any
    provider_name: str
    sims: dict[str, Any]
    preds: dict[str, np.ndarray]
    hist_edges: dict[str, np.ndarray]
    top_k: int
    n_faith: int


def explain_model(
    model: Any, layer: str, variants: list["Variant"], cfg: "RunConfig", data: "Datasets", n_img: int, device: Any,
    sessions: dict[str, DeviceSession], step: Progress, log: Callable[[str], None], mean: Sequence[float], std: Sequence[float],
    store: "JobStore", key: dict[str, Any],
) -> ExplainOutput:
    """Explain `n_img` test images on every successful variant of one model, one shard job at a time.

    Each shard is a job of `store` keyed by `key` + the shard's image range: a finished shard is read back
    instead of recomputed, a new one is committed as soon as it is done. A shard whose device calls
    fail (crash, timeout, lost board) is recorded in `failed` and the next shard goes on."""
    from edgecam.bench.store import job_key
    from edgecam.errors import EdgecamError
    from edgecam.explain.saliency import SALIENCY_PROVIDERS

    ex = cfg.explain
    ok = [v for v in variants if not v.error]
    out = ExplainOutput()
    if not ok:
        return out
    provider_cls = SALIENCY_PROVIDERS.get(ex.saliency)
    setup = _Setup(
        ok, provider_cls(ex.saliency_dir) if ex.saliency == "directory" else provider_cls(), provider_cls.name,
        {v.key: _sim_module(v) for v in ok if ex.sim and v.format == "onnx"}, {v.key: v.outputs["logits"].argmax(1) for v in ok},
        _hist_edges(ok, min(n_img, ex.shard_size)), max(1, int(np.ceil(0.05 * n_img))), min(n_img, ex.faithfulness_images) if ex.faithfulness else 0,
    )
    shards = [(s0, min(n_img, s0 + ex.shard_size)) for s0 in range(0, n_img, ex.shard_size)]
    parts: list[ShardOutput] = []
    for i, (s0, s1) in enumerate(shards):
        k = job_key(**key, shard=[s0, s1])
        job = store.get("explain", k)
        if job is None:
            try:
                shard = _explain_shard(model, layer, cfg, data, s0, s1, device, sessions, setup, log, mean, std)
            except (EdgecamError, OSError, TimeoutError) as exc:
                out.failed.append({"job": f"explain {ok[0].model} images {s0}-{s1 - 1}", "error": f"{type(exc).__name__}: {exc}"})
                log(f"[red]FAILED[/red] explain {ok[0].model} images {s0}-{s1 - 1}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
                continue
            store.put("explain", k, shard.to_job())
            job = store.get("explain", k, count=False)
        assert job is not None
        parts.append(ShardOutput.from_job(job))  # the stored form, resumed or not: one code path to the results
        step(f"CAMs {ok[0].model}", (i + 1) / len(shards))
    _aggregate(parts, setup, out)
    return out


def _hist_edges(ok: list["Variant"], n_first: int) -> dict[str, np.ndarray]:
    """Activation-histogram bin edges per model / format / runtime, from the first shard's features of its
    first variant that has an fp32 sibling (the fp32 one where it comes first): every precision and shard
    is binned alike."""
    keys = {v.key for v in ok}
    edges: dict[str, np.ndarray] = {}
    for v in ok:
        if f"{v.model}-{v.format}-fp32-{v.runtime}" in keys:
            edges.setdefault(f"{v.model}-{v.format}-{v.runtime}", _edges(np.asarray(v.outputs["features"][:n_first], dtype=np.float32)))
    return edges


def _explain_shard(
    model: Any, layer: str, cfg: "RunConfig", data: "Datasets", s0: int, s1: int, device: Any, sessions: dict[str, DeviceSession],
    setup: _Setup, log: Callable[[str], None], mean: Sequence[float], std: Sequence[float],
) -> ShardOutput:
    """CAMs of every variant on test images s0..s1-1, then their rows and the shard's aggregate pieces."""
    import pandas as pd

    from edgecam.bench.results import gap_rows
    from edgecam.explain.cams import CamContext, cam_method, reference_cams

    ex, ok, preds_all = cfg.explain, setup.ok, setup.preds
    x = data.test_x[s0:s1]
    ids = data.test_ids[s0:s1]
    labels = data.test_y[s0:s1]
    masks = data.test_masks[s0:s1]
    raw = np.clip(x * np.asarray(std, np.float32)[:, None, None] + np.asarray(mean, np.float32)[:, None, None], 0, 1)
    saliency = setup.provider.maps(raw, list(ids), masks)
    host_ctx = CamContext(model, layer, x, seed=ex.seed, rise_masks=ex.rise_masks)
    ref_targets = labels if ex.target == "label" else _host_pred(model, x)
    reference = reference_cams(host_ctx, ex.reference, ref_targets)
    cams: dict[tuple[str, str, str], np.ndarray] = {}
    for v in ok:
        pred = preds_all[v.key][s0:s1]
        targets = labels if ex.target == "label" else pred
        ctx = CamContext(model, layer, x, forward=sessions.get(v.key), sim_module=setup.sims.get(v.key), seed=ex.seed, rise_masks=ex.rise_masks)
        for method, mode in _cam_jobs(v, cfg):
            cams[(v.key, method, mode)] = cam_method(method, mode)(ctx, v.outputs["features"][s0:s1], targets)
    grid = _grid(ok, cams, raw, masks, saliency, ids, preds_all) if s0 == 0 else {}
    gaps: list[dict[str, Any]] = []
    first_by_precision: dict[str, "Variant"] = {}
    for v in ok:  # the runtime gap: each other runtime's CAMs vs the first runtime's, at the same precision
        ref_v = first_by_precision.setdefault(v.precision, v)
        if ref_v is not v:
            for method in ex.methods:
                mode = cam_method(method).mode
                gaps += gap_rows(v, ref_v, method, cams[(v.key, method, mode)], cams[(ref_v.key, method, mode)], ids, preds_all[v.key][s0:s1], preds_all[ref_v.key][s0:s1])
    rows: list[dict[str, Any]] = []
    tracks: dict[tuple[str, str, str], _Track] = {}
    hist: dict[str, np.ndarray] = {}
    input_finite = np.isfinite(x).reshape(len(x), -1).all(1)
    for v in ok:
        base = f"{v.model}-{v.format}-fp32-{v.runtime}"
        if base not in preds_all:
            if s0 == 0:
                log(f"[yellow]no fp32 {v.format}/{v.runtime} variant of {v.model}: {v.key} has no CAM comparison rows[/yellow]")
            continue
        feats = np.asarray(v.outputs["features"][s0:s1], dtype=np.float32)
        edges = setup.hist_edges[f"{v.model}-{v.format}-{v.runtime}"]
        hist[v.key] = np.histogram(np.clip(feats[np.isfinite(feats)], edges[0], edges[-1]), bins=edges)[0]
        output_finite = np.isfinite(feats).reshape(len(feats), -1).all(1) & np.isfinite(v.outputs["logits"][s0:s1]).all(1)
        act = [_act_stats(f) for f in feats]
        for method, mode in _cam_jobs(v, cfg):
            c = cams[(v.key, method, mode)]
            faith = _faithfulness(sessions.get(v.key), x, c, preds_all[v.key][s0:s1], s0, setup.n_faith, ex.faithfulness_steps)
            track = tracks.setdefault((v.key, method, mode), _Track(np.zeros(len(WSOL_THRESHOLDS), dtype=np.int64)))
            shard_rows = _rows(v, method, mode, c, cams[(base, method, mode)], reference, masks, saliency, setup.provider_name, ids, labels,
                               preds_all[v.key][s0:s1], preds_all[base][s0:s1], device, act, faith, ex.emd_size, track, setup.top_k, s0)
            for r, fin_in, fin_out in zip(shard_rows, input_finite, output_finite):
                r["input_finite"], r["output_finite"] = bool(fin_in), bool(fin_out)
            rows += shard_rows
    return ShardOutput(pd.DataFrame(rows), pd.DataFrame(gaps), tracks, hist, grid)


def _aggregate(parts: list[ShardOutput], setup: _Setup, out: ExplainOutput) -> None:
    """Run-level results of one model from its shards: rows, WSOL MaxBoxAcc, the most dissimilar CAMs,
    activation histograms and the grid (shard 0)."""
    out.rows = [p.rows for p in parts if len(p.rows)]
    out.gaps = [p.gaps for p in parts if len(p.gaps)]
    out.grid = next((p.grid for p in parts if p.grid), {})
    by_key = {v.key: v for v in setup.ok}
    tracks: dict[tuple[str, str, str], _Track] = {}
    hist: dict[str, np.ndarray] = {}
    for p in parts:
        for tkey, tr in p.tracks.items():
            acc = tracks.setdefault(tkey, _Track(np.zeros_like(tr.hits)))
            acc.hits += tr.hits
            acc.n += tr.n
            for item in tr.heap:  # the union of per-shard top-k holds the run's top-k
                _push(acc.heap, item, setup.top_k)
        for vkey, counts in p.hist.items():
            hist[vkey] = hist.get(vkey, 0) + counts
    for (vkey, method, mode), tr in tracks.items():
        v = by_key[vkey]
        acc_t = tr.hits / max(1, tr.n)
        best = int(np.argmax(acc_t))
        out.wsol.append({"model": v.model, "format": v.format, "runtime": v.runtime, "precision": v.precision, "cam_method": method, "cam_mode": mode,
                         "max_box_acc": float(acc_t[best]), "best_threshold": float(WSOL_THRESHOLDS[best]), "images": tr.n})
        for rmse_v, _, image_id, cam, cam_fp32 in sorted(tr.heap, key=lambda it: (it[0], it[1]), reverse=True):
            out.dissimilar.append({"model": v.model, "format": v.format, "runtime": v.runtime, "precision": v.precision, "cam_method": method,
                                   "cam_mode": mode, "image_id": image_id, "rmse_fp32": rmse_v, "cam": cam, "cam_fp32": cam_fp32})
    for vkey, counts in hist.items():
        v = by_key[vkey]
        edges = setup.hist_edges[f"{v.model}-{v.format}-{v.runtime}"]
        out.histograms += [{"model": v.model, "format": v.format, "runtime": v.runtime, "precision": v.precision, "bin_lo": float(edges[i]), "bin_hi": float(edges[i + 1]), "count": int(counts[i])} for i in range(len(counts))]


GRID_TYPICAL = 3
GRID_DISSIMILAR = 2


def _grid(ok: list["Variant"], cams: dict[tuple[str, str, str], np.ndarray], raw: np.ndarray, masks: np.ndarray, saliency: np.ndarray,
          ids: Sequence[str], preds: dict[str, np.ndarray]) -> dict[str, Any]:
    """The report's Figure-2 grid (2403.09939): the first shard's first images ("typical") and its images
    whose lowest-precision CAM is furthest from fp32 by RMSE ("dissimilar"), with every variant's CAM."""
    from edgecam.explain.metrics import rmse

    n = len(raw)
    chosen = list(range(min(GRID_TYPICAL, n)))
    kinds = ["typical"] * len(chosen)
    method_mode = next(((m, mode) for (_, m, mode) in cams), None)
    lowest = [v for v in ok if v.precision != "fp32"]
    if method_mode and lowest:
        v = lowest[-1]
        base = f"{v.model}-{v.format}-fp32-{v.runtime}"
        if (base, *method_mode) in cams:
            a, b = cams[(v.key, *method_mode)], cams[(base, *method_mode)]
            scores = np.array([rmse(a[i], b[i]) for i in range(n)])
            order = [i for i in np.argsort(-np.nan_to_num(scores, nan=-1.0), kind="stable") if i not in chosen][:GRID_DISSIMILAR]
            chosen += [int(i) for i in order]
            kinds += ["dissimilar"] * len(order)
    return {
        "ids": [str(ids[i]) for i in chosen], "kinds": kinds, "images": raw[chosen], "masks": masks[chosen], "saliency": saliency[chosen],
        "cams": {key: c[chosen] for key, c in cams.items()}, "preds": {k: p[chosen] for k, p in preds.items()},
    }


def _edges(feats: np.ndarray) -> np.ndarray:
    finite = feats[np.isfinite(feats)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    return np.linspace(lo, hi if hi > lo else lo + 1.0, HIST_BINS + 1)


def _act_stats(f: np.ndarray) -> dict[str, float]:
    from edgecam.explain.activations import activation_stats

    st = activation_stats(f)
    return {f"act_{k}": float(st[k]) for k in ("entropy", "std", "hoyer", "gini")}


def _faithfulness(session: DeviceSession | None, x: np.ndarray, cams: np.ndarray, targets: np.ndarray, s0: int, n_faith: int, steps: int) -> list[dict[str, float]]:
    """Deletion / Insertion AUCs (Petsiuk et al. 2018) for the shard's images below `n_faith`, else NaN."""
    from edgecam.explain.faithfulness import faithfulness_rows

    k = max(0, min(len(x), n_faith - s0))
    nan = {"deletion_auc": float("nan"), "insertion_auc": float("nan")}
    if session is None or k == 0:
        return [nan] * len(x)
    res = faithfulness_rows(lambda b: session(b)["logits"], x[:k], cams[:k], targets[:k], steps=steps, batch_size=256)
    return [{"deletion_auc": float(r["deletion_auc"]), "insertion_auc": float(r["insertion_auc"])} for r in res] + [nan] * (len(x) - k)


def _rows(
    v: "Variant", method: str, mode: str, cams: np.ndarray, cams_fp32: np.ndarray, reference: np.ndarray, masks: np.ndarray,
    saliency: np.ndarray, provider: str, ids: Sequence[str], labels: np.ndarray, pred: np.ndarray, pred_fp32: np.ndarray,
    device: str, act: list[dict[str, float]], faith: list[dict[str, float]], emd_size: int, track: _Track, top_k: int, s0: int,
) -> list[dict[str, Any]]:
    """One row per image; updates `track` (WSOL hits, most-dissimilar heap) as a side effect."""
    from edgecam.explain.localisation import box_from_mask, box_iou, boxes_from_cam, energy_pointing_game
    from edgecam.explain.metrics import cc, compare, emd, nss

    rows = []
    is_fp32 = v.precision == "fp32"
    for i in range(len(cams)):
        vs_fp32 = compare(cams[i], cams_fp32[i])
        vs_gt = compare(cams[i], masks[i])
        vs_sal = compare(cams[i], saliency[i])
        gt_box = box_from_mask(masks[i] > 0.5)
        ious = [box_iou(b, gt_box) if b is not None and gt_box is not None else 0.0 for b in boxes_from_cam(cams[i], WSOL_THRESHOLDS)]
        track.hits += np.asarray(ious) >= 0.5
        track.n += 1
        if not is_fp32 and np.isfinite(vs_fp32["rmse"]):
            _push(track.heap, (float(vs_fp32["rmse"]), s0 + i, str(ids[i]), cams[i].copy(), cams_fp32[i].copy()), top_k)
        rows.append({
            "model": v.model, "format": v.format, "runtime": v.runtime, "precision": v.precision,
            "precision_effective": v.manifest.get("precision_effective", v.precision), "device": device,
            "cam_method": method, "cam_mode": mode, "image_id": ids[i], "label": int(labels[i]), "pred": int(pred[i]),
            "top1_correct": bool(pred[i] == labels[i]), "agrees_fp32": bool(pred[i] == pred_fp32[i]),
            "sim_fp32": vs_fp32["sim"], "cc_fp32": vs_fp32["cc"], "kld_fp32": vs_fp32["kld"], "rmse_fp32": vs_fp32["rmse"],
            "emd_fp32": 0.0 if is_fp32 else (emd(cams[i], cams_fp32[i], emd_size) if emd_size else float("nan")),
            "sim_gt": vs_gt["sim"], "cc_gt": vs_gt["cc"], "kld_gt": vs_gt["kld"], "nss_gt": nss(cams[i], masks[i] > 0.5),
            "sim_sal": vs_sal["sim"], "cc_sal": vs_sal["cc"], "kld_sal": vs_sal["kld"], "saliency_provider": provider,
            "wsol_iou": float(max(ious)) if ious else float("nan"), "pointing_energy": energy_pointing_game(cams[i], masks[i] > 0.5),
            **faith[i], **act[i],
            "cc_host_ref": cc(cams[i], reference[i]),
            "cam_constant": bool(vs_gt["pred_constant"]), "cc_fp32_nan": bool(np.isnan(vs_fp32["cc"])), "cc_gt_nan": bool(np.isnan(vs_gt["cc"])),
            "artifact_sha256": v.manifest.get("sha256"),
        })
    return rows


def _host_pred(model: Any, images: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(np.ascontiguousarray(images[i : i + 128]))).argmax(1).numpy() for i in range(0, len(images), 128)])


def write_dissimilar(items: list[dict[str, Any]], out_dir: Any, per_variant: int = 4) -> None:
    """Rogers et al. 2023's subset: the top 5% of images by RMSE to the fp32 CAM, per variant x method x
    mode, to `dissimilar.csv` (ids and RMSE) and `dissimilar.png` (fp32 CAM above the quantized CAM for the
    `per_variant` worst images of each variant)."""
    import pandas as pd

    from edgecam.bench.sweep import _write_csv

    keys = ["model", "format", "runtime", "precision", "cam_method", "cam_mode"]
    _write_csv(pd.DataFrame([{k: it[k] for k in (*keys, "image_id", "rmse_fp32")} for it in items]), out_dir / "dissimilar.csv")
    if not items:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgecam.cache import atomic_path

    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for it in items:
        groups.setdefault(tuple(it[k] for k in keys), []).append(it)
    height = len(groups) * 1.25 + 0.4
    fig, axes = plt.subplots(len(groups), 2 * per_variant, figsize=(2 * per_variant * 1.1, height), squeeze=False)
    fig.subplots_adjust(top=1 - 0.35 / height, bottom=0.01, hspace=0.45)
    for r, (key, group) in enumerate(groups.items()):
        for c in range(per_variant):
            for j, field_name in enumerate(("cam_fp32", "cam")):
                ax = axes[r, 2 * c + j]
                ax.axis("off")
                if c < len(group):
                    ax.imshow(group[c][field_name], cmap="jet", vmin=0, vmax=1)
                    ax.set_title(f"{group[c]['image_id']} {'fp32' if j == 0 else key[3]}\nRMSE {group[c]['rmse_fp32']:.2f}" if j else f"{group[c]['image_id']} fp32", fontsize=5)
        axes[r, 0].text(-0.1, 0.5, "/".join(str(k) for k in key), transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=5)
    fig.suptitle("Most dissimilar CAMs vs fp32 (top 5% by RMSE, Rogers et al. 2023)", fontsize=7, y=1 - 0.05 / height)
    with atomic_path(out_dir / "dissimilar.png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def write_grid(grids: dict[str, dict[str, Any]], out_dir: Any) -> None:
    """Save the per-model CAM grids as `grid.npz` (arrays) + `grid.json` (what each array is)."""
    from edgecam.cache import atomic_path, atomic_write_json

    arrays: dict[str, np.ndarray] = {}
    index: dict[str, Any] = {}
    for model, g in grids.items():
        if not g:
            continue
        entry: dict[str, Any] = {"ids": g["ids"], "kinds": g["kinds"], "cams": []}
        for name in ("images", "masks", "saliency"):
            arrays[f"{model}__{name}"] = np.asarray(g[name], dtype=np.float32)
        for j, ((vkey, method, mode), c) in enumerate(g["cams"].items()):
            key = f"{model}__cam{j}"
            arrays[key] = np.asarray(c, dtype=np.float16)  # display only: half precision halves the file
            entry["cams"].append({"variant": vkey, "method": method, "mode": mode, "array": key, "pred": [int(p) for p in g["preds"][vkey]]})
        index[model] = entry
    with atomic_path(out_dir / "grid.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    atomic_write_json(out_dir / "grid.json", index)
