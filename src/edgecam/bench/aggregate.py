"""Stage 5, aggregate: the run-level results of one model from its explain shards (rows, WSOL MaxBoxAcc,
the most dissimilar CAMs, activation histograms, the grid), and the stored form of a shard.

MaxBoxAcc (Choe et al., CVPR 2020, Sec. 4.1) is max_t BoxAcc(t) over the images that have ground truth,
from per-threshold hit counts summed over shards: the same numbers `explain.localisation.max_box_acc` gives
on all those images' CAMs at once (its per-image step, `box_ious`, is what the shards count with).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from edgecam.bench.store import Job
from edgecam.bench.variant import Variant
from edgecam.explain.localisation import WSOL_THRESHOLDS

HIST_BINS = 64
HeapItem = tuple[float, int, str, Any, Any]  # (RMSE vs fp32, image index, image id, CAM | None, fp32 CAM | None)
FIGURE_CAMS = 4  # the maps kept per track: the worst images dissimilar.png shows; the rest keep id and RMSE only


@dataclass
class Track:
    """Per (variant, method, mode): WSOL hits per threshold over `n` images with ground truth, and the top-k
    most dissimilar CAMs (a min-heap)."""

    hits: np.ndarray
    n: int = 0
    heap: list[HeapItem] = field(default_factory=list)


def push(heap: list[HeapItem], item: HeapItem, top_k: int) -> None:
    """Keep the `top_k` largest items (Rogers et al. 2023's top-5% subset) and the CAMs of only the
    `FIGURE_CAMS` largest: memory stays flat in the image count (5% of 10,000 224 px CAM pairs is 200 MB)."""
    (heapq.heappush if len(heap) < top_k else heapq.heappushpop)(heap, item)
    if len(heap) > FIGURE_CAMS:
        keep = {(it[0], it[1]) for it in heapq.nlargest(FIGURE_CAMS, heap, key=lambda it: (it[0], it[1]))}
        for j, it in enumerate(heap):
            if it[3] is not None and (it[0], it[1]) not in keep:
                heap[j] = (it[0], it[1], it[2], None, None)  # same key: the heap order holds


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
    calls: int = 0  # device-session calls this run made (0 for shards read back from the store)
    bytes_sent: int = 0  # what those calls put on the wire to the device, and got back
    bytes_received: int = 0
    predict_bytes_sent: int = 0  # the logits-only predictions of the test images past the explained ones
    overlapped_device_s: float = 0.0  # device calls made one shard ahead, while the host explained (`Prefetch`)
    estimates: list[dict[str, float]] = field(default_factory=list)  # the stage's time as predicted after shards 1 and 2


@dataclass
class ShardOutput:
    """One shard's explain job: its rows and what the run-level aggregates need from it. Stored as a job
    (tables + JSON + npz, see `bench/store.py`) so that a resumed run reads back exactly what it wrote.

    Its parts are named (`parts`: "rows", "preds:<variant>", "hist:<variant>", "track:<variant>|<method>|<mode>",
    ...); the stored record lists the parts the shard must hold (`to_job(parts)`), so that a resume can check a
    stored shard holds all of them (`explain_stage.expected_parts`) before reusing it."""

    rows: Any  # DataFrame
    gaps: Any  # DataFrame
    tracks: dict[tuple[str, str, str], Track]
    hist: dict[str, np.ndarray]
    grid: dict[str, Any]
    preds: dict[str, np.ndarray] = field(default_factory=dict)  # per variant key: the shard's top-1
    edges: dict[str, np.ndarray] = field(default_factory=dict)  # shard 0 only: histogram edges per family
    kept: dict[str, np.ndarray] = field(default_factory=dict)  # `explain.keep_outputs`: ids, logits and CAMs kept

    def parts(self) -> set[str]:
        """The names of the parts this shard holds (before `fold` empties its tracks and histograms)."""
        held = {f"preds:{k}" for k in self.preds} | {f"hist:{k}" for k in self.hist} | {f"edges:{k}" for k in self.edges}
        held |= {"track:" + "|".join(k) for k in self.tracks}
        held |= {name for name, df in (("rows", self.rows), ("gaps", self.gaps)) if df is not None and len(df)}
        held |= {name for name, got in (("grid", self.grid), ("kept", self.kept)) if got}
        return held

    def to_job(self, parts: Iterable[str] | None = None) -> Job:
        """The stored form; its record lists `parts` (default: the parts it holds), what a resume checks it for."""
        arrays: dict[str, np.ndarray] = {}
        tracks = []
        for t, (key, tr) in enumerate(self.tracks.items()):
            heap = []
            for h, (score, index, image_id, cam, cam_fp32) in enumerate(tr.heap):
                if cam is not None:
                    arrays[f"t{t}_h{h}_cam"], arrays[f"t{t}_h{h}_fp32"] = cam, cam_fp32
                heap.append([score, index, image_id])
            tracks.append({"key": list(key), "hits": tr.hits.tolist(), "n": tr.n, "heap": heap})
        grid: dict[str, Any] = {}
        if self.grid:
            for name in ("images", "masks", "saliency", "has_box"):
                arrays[f"grid_{name}"] = np.asarray(self.grid[name])
            cams = []
            for j, (key, c) in enumerate(self.grid["cams"].items()):
                arrays[f"grid_cam{j}"] = np.asarray(c)
                cams.append(list(key))
            grid = {"ids": self.grid["ids"], "kinds": self.grid["kinds"], "cams": cams, "preds": {k: np.asarray(p).tolist() for k, p in self.grid["preds"].items()}}
        arrays.update({f"hist_{k}": np.asarray(v) for k, v in self.hist.items()})
        arrays.update({f"pred_{k}": np.asarray(v) for k, v in self.preds.items()})
        arrays.update({f"edges_{k}": np.asarray(v) for k, v in self.edges.items()})
        arrays.update({f"keep_{k}": np.asarray(v) for k, v in self.kept.items()})
        tables = {name: df for name, df in (("rows", self.rows), ("gaps", self.gaps)) if len(df.columns)}
        return Job({"tracks": tracks, "hist": list(self.hist), "grid": grid, "preds": list(self.preds), "edges": list(self.edges),
                    "kept": list(self.kept), "parts": sorted(self.parts() if parts is None else parts)}, arrays, tables)

    @classmethod
    def from_job(cls, job: Job) -> "ShardOutput":
        import pandas as pd

        a, meta = job.arrays, job.meta
        tracks = {}
        for t, tr in enumerate(meta["tracks"]):
            heap = [(float(s), int(i), str(image_id), a.get(f"t{t}_h{h}_cam"), a.get(f"t{t}_h{h}_fp32")) for h, (s, i, image_id) in enumerate(tr["heap"])]
            tracks[tuple(tr["key"])] = Track(np.asarray(tr["hits"], dtype=np.int64), int(tr["n"]), heap)
        grid: dict[str, Any] = {}
        if meta["grid"]:
            g = meta["grid"]
            grid = {"ids": g["ids"], "kinds": g["kinds"], **{name: a[f"grid_{name}"] for name in ("images", "masks", "saliency", "has_box")},
                    "cams": {tuple(k): a[f"grid_cam{j}"] for j, k in enumerate(g["cams"])}, "preds": {k: np.asarray(p) for k, p in g["preds"].items()}}
        return cls(job.tables.get("rows", pd.DataFrame()), job.tables.get("gaps", pd.DataFrame()), tracks,  # type: ignore[arg-type]
                   {k: a[f"hist_{k}"] for k in meta["hist"]}, grid, {k: a[f"pred_{k}"] for k in meta.get("preds", [])},
                   {k: a[f"edges_{k}"] for k in meta.get("edges", [])}, {k: a[f"keep_{k}"] for k in meta.get("kept", [])})


def fold(acc: ShardOutput, part: ShardOutput, top_k: int) -> None:
    """Merge `part`'s WSOL counts, dissimilar heaps and histograms into `acc` and empty them in `part`, so
    that a run holds one bounded heap per track however many shards it has (the union of per-shard top-k
    holds the run's top-k)."""
    for tkey, tr in part.tracks.items():
        a = acc.tracks.setdefault(tkey, Track(np.zeros_like(tr.hits)))
        a.hits += tr.hits
        a.n += tr.n
        for item in tr.heap:
            push(a.heap, item, top_k)
    for vkey, counts in part.hist.items():
        acc.hist[vkey] = acc.hist.get(vkey, 0) + counts
    part.tracks, part.hist = {}, {}


def aggregate(parts: list[ShardOutput], ok: list[Variant], hist_edges: dict[str, np.ndarray], top_k: int, out: ExplainOutput) -> None:
    """Fill `out` from one model's shards: rows, WSOL MaxBoxAcc (only over images with ground truth; no row
    at all for a variant without any), the most dissimilar CAMs, activation histograms and the grid."""
    out.rows = [p.rows for p in parts if p.rows is not None and len(p.rows)]
    out.gaps = [p.gaps for p in parts if p.gaps is not None and len(p.gaps)]
    out.grid = next((p.grid for p in parts if p.grid), {})
    by_key = {v.key: v for v in ok}
    folded = ShardOutput(None, None, {}, {}, {})
    for p in parts:
        fold(folded, p, top_k)
    tracks, hist = folded.tracks, folded.hist
    for (vkey, method, mode), tr in tracks.items():
        v = by_key[vkey]
        ident = {"model": v.model, "format": v.format, "runtime": v.runtime, "precision": v.precision, "cam_method": method, "cam_mode": mode}
        if tr.n:
            box_acc = tr.hits / tr.n
            best = int(np.argmax(box_acc))  # the lowest threshold reaching the maximum, as max_box_acc
            out.wsol.append({**ident, "max_box_acc": float(box_acc[best]), "best_threshold": float(WSOL_THRESHOLDS[best]), "images": tr.n})
        for rmse_v, _, image_id, cam, cam_fp32 in sorted(tr.heap, key=lambda it: (it[0], it[1]), reverse=True):
            out.dissimilar.append({**ident, "image_id": image_id, "rmse_fp32": rmse_v, "cam": cam, "cam_fp32": cam_fp32})
    for vkey, counts in hist.items():
        v = by_key[vkey]
        edges = hist_edges[v.family]
        out.histograms += [{"model": v.model, "format": v.format, "runtime": v.runtime, "precision": v.precision, "bin_lo": float(edges[i]), "bin_hi": float(edges[i + 1]),
                            "count": int(counts[i])} for i in range(len(counts))]
