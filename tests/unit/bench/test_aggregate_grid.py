"""The report's CAM grid picked across the whole run (issue 37): every shard scores its images and keeps a few
candidates (`explain_stage._grid`), the run picks among them (`aggregate.pick_grid`) with bounded memory."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from edgecam.bench.aggregate import (GRID_DISSIMILAR, GRID_TYPICAL, ExplainOutput, ShardOutput, aggregate, grid_pick, light_grid, pick_grid,
                                     shard_candidates)
from edgecam.bench.explain_stage import _check_shard, _grid, expected_parts, grid_score, grid_scores
from edgecam.bench.store import Job, JobStore
from edgecam.bench.variant import NONFINITE, Variant
from edgecam.data.datasets import TestShard

V8, V32 = "m-onnx-int8-onnxruntime", "m-onnx-fp32-onnxruntime"
SCORE = {"variant": V8, "method": "gradcampp", "mode": "mirror", "metric": "rmse_fp32"}
SIZE = 6  # pixels a side


def _shard(scores: np.ndarray, s0: int, nonfinite: tuple[int, ...] = ()) -> ShardOutput:
    """A shard's output holding only its grid part, made by the stage's own `_grid` from synthetic images whose
    arrays encode their global index (so a picked row can be traced to its image); `nonfinite`: shard positions
    whose int8 outputs were NaN (pred NONFINITE)."""
    n = len(scores)
    index = s0 + np.arange(n)
    raw = np.broadcast_to((index % 250 / 250.0)[:, None, None, None], (n, 3, SIZE, SIZE)).astype(np.float32)
    masks = np.broadcast_to((index % 2)[:, None, None], (n, SIZE, SIZE)).astype(np.float32)
    shard = TestShard(s0, raw, tuple(f"img{i:04d}" for i in index), np.zeros(n, np.int64), masks, index % 2 == 1)
    cams = {(V32, "gradcampp", "mirror"): np.broadcast_to(index[:, None, None] / 1000.0, (n, SIZE, SIZE)).astype(np.float32),
            (V8, "gradcampp", "mirror"): np.broadcast_to(index[:, None, None] / 2000.0, (n, SIZE, SIZE)).astype(np.float32)}
    pred8 = np.full(n, 3, np.int64)
    pred8[list(nonfinite)] = NONFINITE
    preds = {V32: np.full(n, 3, np.int64), V8: pred8}
    grid = _grid(cams, raw, shard, raw[:, 0] * 0.5, preds, np.asarray(scores, np.float64), SCORE, s0)
    return ShardOutput(pd.DataFrame(), pd.DataFrame(), {}, {}, grid)


def _shards(scores: np.ndarray, size: int, nonfinite: tuple[int, ...] = ()) -> list[ShardOutput]:
    return [_shard(scores[s0:s0 + size], s0, tuple(i - s0 for i in nonfinite if s0 <= i < s0 + size)) for s0 in range(0, len(scores), size)]


def _exact(scores: np.ndarray, typical_ok: np.ndarray | None = None) -> tuple[list[int], list[int]]:
    """The rule on every image of the run at once (what the shards approximate for "typical")."""
    ok = np.ones(len(scores), bool) if typical_ok is None else typical_ok
    finite = scores[np.isfinite(scores)]
    return grid_pick(scores, ok, np.arange(len(scores)), float(np.median(finite)))


def _picked(grid: dict[str, Any], kind: str) -> list[int]:
    return [int(i[3:]) for i, k in zip(grid["ids"], grid["kinds"]) if k == kind]


def test_the_most_dissimilar_image_of_the_last_shard_and_the_images_nearest_the_run_median_are_picked() -> None:
    """40 images in 4 shards of 10, each shard 4 low scores, 2 middle ones and 4 high. The run's highest score is
    image 37 (the last shard), its second image 12; the run's median is 0.484375, midway between images 6 and 25,
    and 14 is the next nearest: what the old grid (the first shard's first images and its own most dissimilar)
    could never show. Exact values (multiples of 1/64) make the tie of 6 and 25 exact: it goes to the earlier."""
    rng = np.random.default_rng(0)
    mids = {3: 0.375, 6: 0.46875, 14: 0.4375, 18: 0.625, 21: 0.40625, 25: 0.5, 33: 0.546875, 36: 0.5625}
    highs = {1, 2, 8, 9, 11, 12, 13, 16, 20, 23, 27, 28, 31, 34, 37, 39}
    scores = np.array([mids[i] if i in mids else rng.uniform(0.7, 0.9) if i in highs else rng.uniform(0.1, 0.3) for i in range(40)])
    scores[37], scores[12] = 0.99, 0.95
    parts = _shards(scores, 10)
    assert all(len(p.grid["ids"]) <= GRID_TYPICAL + GRID_DISSIMILAR for p in parts)  # bounded per shard
    assert parts[0].grid["images"].dtype == np.uint8 and parts[0].grid["cams"][(V8, "gradcampp", "mirror")].dtype == np.float16
    out = ExplainOutput()
    aggregate(parts, [], {}, 2, out)
    g = out.grid
    assert _picked(g, "dissimilar") == [37, 12] and _picked(g, "typical") == [6, 25, 14]
    assert (_picked(g, "dissimilar"), _picked(g, "typical")) == _exact(scores)  # the rule on all 40 images at once
    assert g["kinds"] == ["typical"] * 3 + ["dissimilar"] * 2
    assert g["scores"] == [0.46875, 0.5, 0.4375, 0.99, 0.95]
    assert g["score"]["median"] == 0.484375 and g["score"]["scored_images"] == 40 and g["score"]["shards"] == 4
    # every row's arrays are its own image's: the input (uint8 back to [0, 1]), mask, CAMs and predictions
    for row, i in enumerate([6, 25, 14, 37, 12]):
        assert g["images"][row].dtype == np.float32 and g["images"][row].max() == pytest.approx(i / 250.0, abs=1 / 255)
        assert g["masks"][row].max() == i % 2 and bool(g["has_box"][row]) == bool(i % 2)
        assert float(g["cams"][(V32, "gradcampp", "mirror")][row].max()) == pytest.approx(i / 1000.0, rel=1e-3)
        assert g["preds"][V8][row] == 3
    assert "2 highest of the run's 40 finite scores (exact)" in g["rule"] and "nearest the run's median score (0.4844)" in g["rule"]
    assert "4 shards of up to 10 images" in g["rule"] and V8 in g["rule"]


def test_typical_is_exact_on_one_shard_and_states_its_approximation_on_several() -> None:
    """One shard: the exact rule. Several: of what each shard kept, nearest the run's median, and the sentence says
    so. Here image 10 (0.48) ties image 2 for nearest the run's median (0.485), but its shard's median is 0.25 and
    it is not among that shard's candidates: the typical images are 2, 0, 1 where the exact rule gives 2, 10, 0."""
    scores = np.array([0.50, 0.51, 0.49, 0.52, 0.9, 0.95, 0.0, 0.1, 0.05, 0.08, 0.48, 0.6, 0.7, 0.2, 0.3, 0.02])
    dis, typ = _exact(scores)
    assert (dis, typ) == ([5, 4], [2, 10, 0])
    one = pick_grid([_shard(scores, 0).grid])
    assert _picked(one, "dissimilar") == dis and _picked(one, "typical") == typ
    assert "among" not in one["rule"]
    two = pick_grid([p.grid for p in _shards(scores, 8)])
    assert _picked(two, "dissimilar") == dis  # exact whatever the shards
    assert _picked(two, "typical") == [2, 0, 1]
    assert "among those its 2 shards of up to 8 images kept (each shard's 3 nearest its own median and its 2 highest" in two["rule"]


def test_nan_scores_and_nonfinite_outputs_are_never_typical_and_nan_never_dissimilar() -> None:
    """Images whose outputs were NaN have NaN scores (results' NaN metrics): never picked. An image whose score is
    finite but whose outputs on some variant were not (pred NONFINITE) may be dissimilar, never typical."""
    scores = np.full(24, np.nan)
    scores[[2, 9, 14, 17, 20]] = [0.30, 0.31, 0.29, 0.9, 0.8]  # image 9 is the median itself ...
    g = pick_grid([p.grid for p in _shards(scores, 8, nonfinite=(9, 17))])  # ... but a variant's outputs for it were not finite
    assert _picked(g, "dissimilar") == [17, 20]  # 17: finite score, non-finite outputs elsewhere: dissimilar is allowed
    assert _picked(g, "typical") == [2, 14]  # not 9, never a NaN-score image: fewer than GRID_TYPICAL rather than those
    assert all(np.isfinite(g["scores"]))

    nothing = np.full(10, np.nan)  # no image scored at all (the lowest precision answered NaN for every image)
    parts = _shards(nothing, 5, nonfinite=(0, 1))
    assert [len(p.grid["ids"]) for p in parts] == [3, 0]  # only the first shard keeps a fallback
    g = pick_grid([p.grid for p in parts])
    assert g["kinds"] == ["first"] * 3 and _picked(g, "first") == [2, 3, 4]  # finite outputs first
    assert all(np.isnan(g["scores"])) and "no image has a finite score" in g["rule"]


def test_a_resumed_run_reads_back_the_same_grid_and_holds_only_scores_meanwhile(tmp_path: Path) -> None:
    """Each shard through its stored form (to_job / JobStore / from_job), kept light (`light_grid`, no arrays) and
    its picked candidates read back from the store at the end: the same grid as the shards held in memory."""
    rng = np.random.default_rng(4)
    scores = rng.random(30)
    scores[[5, 21]] = np.nan
    parts = _shards(scores, 7, nonfinite=(5, 21))
    want = pick_grid([p.grid for p in parts])
    store = JobStore(tmp_path / "jobs")
    light = []
    for p in parts:
        store.put("explain", f"s{p.grid['s0']}", p.to_job())
        back = ShardOutput.from_job(store.get("explain", f"s{p.grid['s0']}"))  # type: ignore[arg-type]
        light.append(ShardOutput(back.rows, back.gaps, {}, {}, light_grid(back.grid)))
    assert all("images" not in p.grid and "cams" not in p.grid for p in light)
    loads: list[int] = []

    def load(s0: int) -> dict[str, Any] | None:
        loads.append(s0)
        job = store.get("explain", f"s{s0}", count=False)
        return ShardOutput.from_job(job).grid if job is not None else None

    out = ExplainOutput()
    aggregate(light, [], {}, 2, out, load)
    got = out.grid
    assert len(set(loads)) == len(loads) <= GRID_TYPICAL + GRID_DISSIMILAR  # only the shards of the picked images
    for k in ("ids", "kinds", "scores", "rule", "score"):
        assert got[k] == want[k], k
    for k in ("images", "masks", "has_box", "saliency"):
        assert np.array_equal(got[k], want[k], equal_nan=True), k
    for k in want["cams"]:
        assert np.array_equal(got["cams"][k], want["cams"][k])
    assert all(np.array_equal(got["preds"][k], want["preds"][k]) for k in want["preds"])

    # a shard whose job can no longer be read back: its candidates are left out and the pick redone without them
    first_shard = int(got["ids"][0][3:]) // 7 * 7
    gone = pick_grid([p.grid for p in light], lambda s0: None if s0 == first_shard else load(s0))
    assert not any(first_shard <= int(i[3:]) < first_shard + 7 for i in gone["ids"]) and len(gone["ids"]) == len(got["ids"])


def test_a_shard_stored_with_the_old_grid_or_without_one_is_redone() -> None:
    """Before issue 37 only the first shard held a grid ("ids", "kinds": its first images): such a shard, and a
    later shard stored without a grid part, are refused by the resume check and recomputed."""
    from edgecam.config import RunConfig

    cfg = RunConfig()
    cfg = cfg.replace(explain=dataclasses.replace(cfg.explain, methods=("gradcampp",), sim=False))
    ok = [Variant("m", "onnx", p, "onnxruntime", Path("."), {"sha256": p}) for p in ("fp32", "int8")]
    assert "grid" in expected_parts(ok, cfg, 0) and "grid" in expected_parts(ok, cfg, 500)
    part = _shard(np.linspace(0, 1, 5), 500)
    job = part.to_job()
    old = Job({**job.meta, "grid": {"ids": ["a"], "kinds": ["typical"], "cams": [], "preds": {}}}, job.arrays, job.tables)
    with pytest.raises(KeyError, match="earlier form"):
        _check_shard(old, [], 5, {"grid"})
    with pytest.raises(KeyError, match="stored without grid"):
        _check_shard(Job({**job.meta, "grid": {}, "parts": []}, {}, {}), [], 5, {"grid"})


def test_the_score_is_the_reference_method_on_the_lowest_precision_and_read_from_the_rows() -> None:
    from edgecam.config import RunConfig

    cfg = RunConfig()
    cfg = cfg.replace(explain=dataclasses.replace(cfg.explain, methods=("eigencam", "gradcampp"), reference="gradcampp", sim=False))
    ok = [Variant("m", f, p, r, Path("."), {}) for f, r in (("onnx", "onnxruntime"), ("tflite", "litert")) for p in ("fp32", "int16", "int8")]
    assert grid_score(ok, cfg) == {"variant": "m-tflite-int8-litert", "method": "gradcampp", "mode": "mirror", "metric": "rmse_fp32"}
    assert grid_score(ok[:3] + ok[4:5], cfg)["variant"] == "m-onnx-int8-onnxruntime"  # type: ignore[index]  # no fp32 tflite: not scored
    assert grid_score([ok[0]], cfg) is None
    rows = [{"model": "m", "format": "tflite", "runtime": "litert", "precision": "int8", "cam_method": meth, "cam_mode": "mirror", "rmse_fp32": x}
            for meth, x in (("eigencam", 9.0), ("gradcampp", 0.25), ("gradcampp", np.nan))]
    s = grid_scores(rows, grid_score(ok, cfg), ok, 2)
    assert s[0] == 0.25 and np.isnan(s[1])
    assert np.isnan(grid_scores(rows, None, ok, 2)).all()


def test_grid_json_has_the_rule_and_each_images_score(tmp_path: Path) -> None:
    from edgecam.bench.outputs import write_grid

    scores = np.array([0.2, 0.4, np.nan, 0.3, 0.9, 0.1])
    g = pick_grid([_shard(scores, 0).grid])
    write_grid({"m": g}, tmp_path)
    entry = json.loads((tmp_path / "grid.json").read_text())["m"]
    assert entry["rule"] == g["rule"] and entry["rule"].count(";") >= 2
    assert entry["ids"] == g["ids"] == ["img0003", "img0000", "img0005", "img0004", "img0001"]
    assert entry["scores"] == pytest.approx([float(scores[int(i[3:])]) for i in entry["ids"]])
    assert entry["kinds"] == ["typical"] * 3 + ["dissimilar"] * 2 and {c["variant"] for c in entry["cams"]} == {V8, V32}
    assert entry["score"]["variant"] == V8 and entry["score"]["median"] == pytest.approx(0.3)


def test_shard_candidates_are_bounded() -> None:
    s = np.random.default_rng(1).random(100)
    kept = shard_candidates(s, np.ones(100, bool), 0)
    assert len(kept) == GRID_TYPICAL + GRID_DISSIMILAR and kept == sorted(kept)
    assert shard_candidates(np.full(5, np.nan), np.ones(5, bool), 5) == []
