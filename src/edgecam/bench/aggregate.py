"""Stage 5, aggregate: the run-level results of one model from its explain shards (rows, WSOL MaxBoxAcc,
the most dissimilar CAMs, activation histograms, the grid), and the stored form of a shard.

MaxBoxAcc (Choe et al., CVPR 2020, Sec. 4.1) is max_t BoxAcc(t) over the images that have ground truth,
from per-threshold hit counts summed over shards: the same numbers `explain.localisation.max_box_acc` gives
on all those images' CAMs at once (its per-image step, `box_ious`, is what the shards count with).

The report's CAM grid (Figure 2 of arXiv 2403.09939) is picked across the whole run with bounded memory: every
shard scores each of its images (one number, `explain_stage.grid_score`) and keeps a few candidates with their
arrays (`grid_pick` on the shard: its `GRID_DISSIMILAR` highest scores and its `GRID_TYPICAL` nearest its own
median); the run picks among them (`pick_grid`): "dissimilar" = the run's highest scores (exact: each shard's
top holds the run's top), "typical" = the candidates nearest the run's median score (the median itself exact,
from every shard's per-image scores). The rule, stated in one sentence, goes to grid.json (`GridPick.rule`).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from edgecam.bench.store import Job
from edgecam.bench.variant import Variant
from edgecam.explain.localisation import WSOL_THRESHOLDS

HIST_BINS = 64
HeapItem = tuple[float, int, str, Any, Any]  # (RMSE vs fp32, image index, image id, CAM | None, fp32 CAM | None)
FIGURE_CAMS = 4  # the maps kept per track: the worst images dissimilar.png shows; the rest keep id and RMSE only
GRID_TYPICAL = 3  # the report's CAM grid: images nearest the run's median score ...
GRID_DISSIMILAR = 2  # ... and images with the run's highest scores (least like fp32)
GRID_FORM = 2  # the stored form of a shard's grid candidates (1, before issue 37: the first shard's first images)
GRID_HEAVY = ("images", "masks", "saliency", "cams")  # a candidate's arrays; the rest of a shard's grid part is a few numbers


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
    grid: dict[str, Any]  # "grid": every image's score and the grid candidates (`explain_stage._grid`; `light_grid` once folded)
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
            g = self.grid
            arrays["grid_scores"] = np.asarray(g["scores"], dtype=np.float64)
            for name in ("images", "masks", "saliency", "has_box"):
                arrays[f"grid_{name}"] = np.asarray(g[name])
            for j, c in enumerate(g["cams"].values()):
                arrays[f"grid_cam{j}"] = np.asarray(c)
            grid = {"form": GRID_FORM, "score": g["score"], "s0": int(g["s0"]), "ids": [str(i) for i in g["ids"]], "index": [int(i) for i in g["index"]],
                    "typical_ok": [bool(b) for b in g["typical_ok"]], "cams": [list(k) for k in g["cams"]],
                    "preds": {k: np.asarray(p).tolist() for k, p in g["preds"].items()}}
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
            if g.get("form") != GRID_FORM:  # an earlier edgecam's grid (the first shard's first images): `_check_shard` has the shard redone
                raise KeyError(f"the shard's grid is of an earlier form ({g.get('form', 1)}, not {GRID_FORM}): no per-image scores")
            grid = {"score": g["score"], "s0": int(g["s0"]), "scores": a["grid_scores"], "ids": list(g["ids"]), "index": list(g["index"]),
                    "typical_ok": list(g["typical_ok"]), **{name: a[f"grid_{name}"] for name in ("images", "masks", "saliency", "has_box")},
                    "cams": {tuple(k): a[f"grid_cam{j}"] for j, k in enumerate(g["cams"])},
                    "preds": {k: np.asarray(p, dtype=np.int64) for k, p in g["preds"].items()}}
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


def aggregate(parts: list[ShardOutput], ok: list[Variant], hist_edges: dict[str, np.ndarray], top_k: int, out: ExplainOutput,
              load_grid: GridLoader | None = None) -> None:
    """Fill `out` from one model's shards: rows, WSOL MaxBoxAcc (only over images with ground truth; no row
    at all for a variant without any), the most dissimilar CAMs, activation histograms and the grid (`pick_grid`;
    `load_grid` reads back the candidates' arrays of a shard whose grid part was made light)."""
    out.rows = [p.rows for p in parts if p.rows is not None and len(p.rows)]
    out.gaps = [p.gaps for p in parts if p.gaps is not None and len(p.gaps)]
    out.grid = pick_grid([p.grid for p in parts if p.grid], load_grid)
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


GridLoader = Callable[[int], "dict[str, Any] | None"]  # a shard's first image -> its grid part with the arrays (None: unreadable)


def grid_pick(scores: Sequence[float], typical_ok: Sequence[bool], index: Sequence[int], median: float,
              n_typical: int = GRID_TYPICAL, n_dissimilar: int = GRID_DISSIMILAR) -> tuple[list[int], list[int]]:
    """The grid's rule on a set of images: positions of the "dissimilar" ones (the `n_dissimilar` highest finite
    scores, a tie to the lower image `index`) and of the "typical" ones (the `n_typical` whose score is nearest
    `median`, a tie to the lower index, among those with a finite score and `typical_ok`, not dissimilar). A NaN
    score (an image whose outputs or CAMs were not finite) is never picked; a NaN `median` picks no typical one."""
    s = np.asarray(scores, dtype=np.float64)
    idx = np.asarray(index, dtype=np.int64)
    finite = [int(j) for j in np.flatnonzero(np.isfinite(s))]
    dis = sorted(finite, key=lambda j: (-s[j], idx[j]))[:n_dissimilar]
    if not np.isfinite(median):
        return dis, []
    rest = [j for j in finite if typical_ok[j] and j not in dis]
    return dis, sorted(rest, key=lambda j: (abs(s[j] - median), idx[j]))[:n_typical]


def shard_candidates(scores: np.ndarray, typical_ok: Sequence[bool], s0: int) -> list[int]:
    """The positions (ascending) of the images a shard starting at image `s0` keeps for the grid: `grid_pick` on
    the shard with its own median, at most GRID_TYPICAL + GRID_DISSIMILAR images. A shard without any finite
    score keeps none, except the run's first shard: its first GRID_TYPICAL images (those with finite outputs on
    every variant first), the grid of a run where no image has a score."""
    s = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(s)
    if finite.any():
        dis, typ = grid_pick(s, typical_ok, s0 + np.arange(len(s)), float(np.median(s[finite])))
        return sorted({*dis, *typ})
    if s0 == 0:
        return sorted(sorted(range(len(s)), key=lambda j: (not typical_ok[j], j))[:GRID_TYPICAL])
    return []


def light_grid(grid: dict[str, Any]) -> dict[str, Any]:
    """A shard's grid part without its candidates' arrays (`GRID_HEAVY`): what a run holds per shard until the
    end (its per-image scores and a few candidates' ids, scores and predictions); `pick_grid` reads the arrays of
    the chosen ones back from the shard's stored job."""
    if not grid or "images" not in grid:
        return grid
    return {**{k: v for k, v in grid.items() if k not in GRID_HEAVY}, "cam_keys": list(grid["cams"])}


def _unit(a: np.ndarray) -> np.ndarray:
    """A stored grid array as the report reads it: uint8 (images, masks) back to float32 in [0, 1]."""
    a = np.asarray(a)
    return a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)


def pick_grid(grids: list[dict[str, Any]], load: GridLoader | None = None) -> dict[str, Any]:
    """The report's CAM grid of one model from its shards' grid parts (`explain_stage._grid`; full or `light_grid`):
    `grid_pick` over every shard's candidates with the run's median score (over every shard's per-image scores),
    each picked image with its arrays (a light part's from `load(s0)`; a shard that cannot be read back has its
    candidates left out and the pick redone). With no finite score in the run, the first shard's fallback
    candidates ("first"). Returns {} without candidates; else "ids", "kinds", "scores", "images", "masks",
    "has_box", "saliency", "cams", "preds", "score" (what was scored, the median) and "rule" (one sentence)."""
    grids = [g for g in grids if g and "scores" in g]
    if not grids:
        return {}
    score = next((g["score"] for g in grids if g.get("score")), None)
    every = np.concatenate([np.asarray(g["scores"], dtype=np.float64).ravel() for g in grids])
    finite = every[np.isfinite(every)]
    median = float(np.median(finite)) if finite.size else float("nan")
    cands = [(g, j) for g in grids for j in range(len(g["ids"]))]
    left_out: set[int] = set()  # shards (first image) whose arrays could not be read back
    loaded: dict[int, dict[str, Any] | None] = {}
    while True:
        pool = [(g, j) for g, j in cands if int(g["s0"]) not in left_out]
        c_scores = [float(np.asarray(g["scores"])[int(g["index"][j]) - int(g["s0"])]) for g, j in pool]
        c_ok = [bool(g["typical_ok"][j]) for g, j in pool]
        c_index = [int(g["index"][j]) for g, j in pool]
        if finite.size:
            dis, typ = grid_pick(c_scores, c_ok, c_index, median)
            chosen = [(p, "typical") for p in typ] + [(p, "dissimilar") for p in dis]
        else:
            chosen = [(p, "first") for p in sorted(range(len(pool)), key=lambda p: (not c_ok[p], c_index[p]))[:GRID_TYPICAL]]
        rows = []
        for p, kind in chosen:
            g, j = pool[p]
            s0 = int(g["s0"])
            if "images" not in g and s0 not in loaded:
                loaded[s0] = _load(load, s0)
            full = g if "images" in g else loaded[s0]
            held = [int(i) for i in full["index"]] if full is not None else []
            if int(g["index"][j]) not in held:  # its shard no longer reads back (or holds other images): left out, picked again
                left_out.add(s0)
                break
            rows.append((full, held.index(int(g["index"][j])), kind, c_scores[p]))
        else:
            break
    if not rows:
        return {}
    keys = list(rows[0][0]["cams"])
    out: dict[str, Any] = {
        "ids": [str(g["ids"][j]) for g, j, _, _ in rows], "kinds": [k for _, _, k, _ in rows], "scores": [float(s) for _, _, _, s in rows],
        "images": np.stack([_unit(g["images"][j]) for g, j, _, _ in rows]), "masks": np.stack([_unit(g["masks"][j]) for g, j, _, _ in rows]),
        "has_box": np.asarray([bool(g["has_box"][j]) for g, j, _, _ in rows]), "saliency": np.stack([_unit(g["saliency"][j]) for g, j, _, _ in rows]),
        "cams": {k: np.stack([np.asarray(g["cams"][k][j]) if k in g["cams"] else np.full(rows[0][0]["cams"][k].shape[1:], np.nan, np.float16)
                              for g, j, _, _ in rows]) for k in keys},
        "preds": {v: np.asarray([int(g["preds"][v][j]) if v in g["preds"] else -1 for g, j, _, _ in rows], dtype=np.int64) for v in rows[0][0]["preds"]},
    }
    out["score"] = {**(score or {}), "median": median if finite.size else None, "scored_images": int(finite.size), "images": int(every.size), "shards": len(grids)}
    out["rule"] = grid_rule(score, median, int(finite.size), len(grids), max(len(np.asarray(g["scores"])) for g in grids))
    return out


def _load(load: GridLoader | None, s0: int) -> dict[str, Any] | None:
    """The grid part with arrays of the shard starting at `s0`, or None (no loader, or the job does not read back)."""
    if load is None:
        return None
    try:
        got = load(s0)
    except Exception:  # noqa: BLE001 - a stored job that no longer reads back (removed, damaged): its candidates are left out
        return None
    return got if got and "images" in got else None


def grid_rule(score: dict[str, Any] | None, median: float, scored: int, shards: int, shard_size: int) -> str:
    """One sentence saying how the grid's images were picked (grid.json "rule", the report's caption)."""
    if not scored:
        why = (f"no image has a finite score ({score['metric']} of {score['variant']} {score['method']} ({score['mode']}) CAMs vs fp32)" if score
               else "no quantized variant has an fp32 CAM to compare with, so no image is scored")
        return (f"Images: {why}, so the grid shows the run's first {GRID_TYPICAL} images (those with finite outputs on every variant first) "
                "and no dissimilar ones.")
    assert score is not None
    what = (f"Each image is scored by the RMSE between its min-max normalised {score['variant']} CAM and the fp32 one "
            f"({score['method']}, {score['mode']} mode; Rogers et al. 2023)")
    dissimilar = f"dissimilar: the {GRID_DISSIMILAR} highest of the run's {scored} finite scores (exact)"
    near = f"the {GRID_TYPICAL} images nearest the run's median score ({median:.4g})"
    typical = (f"typical: {near}" if shards == 1 else
               f"typical: {near} among those its {shards} shards of up to {shard_size} images kept (each shard's "
               f"{GRID_TYPICAL} nearest its own median and its {GRID_DISSIMILAR} highest, so possibly not the run's very nearest)")
    return f"{what}; {dissimilar}; {typical}; an image with a NaN score or non-finite outputs on any variant is never typical, ties go to the earlier image."
