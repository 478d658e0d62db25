"""The explain and aggregate stages' pieces: CAM routing from the declared capabilities, MaxBoxAcc from
streamed per-shard counts equal to `localisation.max_box_acc`, and the stored form of a shard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from edgecam.bench.aggregate import ExplainOutput, ShardOutput, Track, aggregate
from edgecam.bench.explain_stage import cam_jobs
from edgecam.bench.variant import Variant
from edgecam.config import ExplainSpec, RunConfig
from edgecam.explain.localisation import WSOL_THRESHOLDS, box_ious, max_box_acc


def _variant(fmt: str = "onnx", precision: str = "int8", runtime: str = "onnxruntime") -> Variant:
    return Variant("m", fmt, precision, runtime, Path("."), {"sha256": "s"})


def test_cam_jobs_follow_modes_and_the_exporters_host_simulation() -> None:
    cfg = RunConfig(explain=ExplainSpec(methods=("gradcampp", "eigencam", "layercam"), sim=True))
    assert cam_jobs(_variant("onnx"), cfg) == [("gradcampp", "mirror"), ("eigencam", "surrogate"), ("layercam", "mirror"), ("gradcampp", "sim"), ("layercam", "sim")]
    assert cam_jobs(_variant("tflite", runtime="litert"), cfg) == [("gradcampp", "mirror"), ("eigencam", "surrogate"), ("layercam", "mirror")]  # no host graph of a .tflite
    assert cam_jobs(_variant("onnx"), cfg.replace(explain=ExplainSpec(methods=("gradcampp",)))) == [("gradcampp", "mirror")]  # sim off


def _blob_cams(rng: np.random.Generator, n: int, size: int = 24) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Random Gaussian-blob CAMs and boxes near (but not exactly at) each blob; every third box is elsewhere."""
    yy, xx = np.mgrid[:size, :size]
    cams, boxes = [], []
    for _ in range(n):
        cy, cx, r = rng.integers(6, size - 6, 2).tolist() + [int(rng.integers(2, 5))]
        cams.append(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)) + 0.05 * rng.random((size, size)))
        d = rng.integers(-2, 3, 4)
        if len(boxes) % 3 == 2:
            boxes.append((0, 0, 3, 3) if cy + cx > size else (size - 4, size - 4, size - 1, size - 1))
            continue
        boxes.append((max(0, cx - 2 * r + d[0]), max(0, cy - 2 * r + d[1]), min(size - 1, cx + 2 * r + d[2]), min(size - 1, cy + 2 * r + d[3])))
    return np.asarray(cams, np.float32), boxes


def test_streamed_maxboxacc_equals_max_box_acc_on_all_cams() -> None:
    rng = np.random.default_rng(0)
    cams, boxes = _blob_cams(rng, 30)
    v = _variant()
    parts = []
    for s0, s1 in ((0, 7), (7, 19), (19, 30)):  # three shards, counted as the explain stage counts them
        tr = Track(np.zeros(len(WSOL_THRESHOLDS), dtype=np.int64))
        for c, b in zip(cams[s0:s1], boxes[s0:s1]):
            tr.hits += box_ious(c, b) >= 0.5
            tr.n += 1
        parts.append(ShardOutput(pd.DataFrame(), pd.DataFrame(), {(v.key, "gradcampp", "mirror"): tr}, {}, {}))
    out = ExplainOutput()
    aggregate([ShardOutput.from_job(p.to_job()) for p in parts], [v], {}, 2, out)
    ref = max_box_acc(cams, boxes)
    assert 0 < ref["max_box_acc"] < 1  # a non-trivial case
    assert out.wsol == [{"model": "m", "format": "onnx", "runtime": "onnxruntime", "precision": "int8", "cam_method": "gradcampp", "cam_mode": "mirror",
                         "max_box_acc": ref["max_box_acc"], "best_threshold": ref["best_threshold"], "images": 30}]


def test_a_variant_without_ground_truth_gets_no_wsol_row() -> None:
    v = _variant()
    part = ShardOutput(pd.DataFrame(), pd.DataFrame(), {(v.key, "gradcampp", "mirror"): Track(np.zeros(len(WSOL_THRESHOLDS), dtype=np.int64))}, {}, {})
    out = ExplainOutput()
    aggregate([part], [v], {}, 2, out)
    assert out.wsol == []


def test_a_shard_round_trips_through_its_stored_form() -> None:
    rng = np.random.default_rng(1)
    v = _variant()
    cam, fp32 = rng.random((2, 8, 8)).astype(np.float32)
    tr = Track(np.arange(len(WSOL_THRESHOLDS), dtype=np.int64), 5, [(0.3, 4, "img4", cam, fp32)])
    grid = {"score": None, "s0": 0, "scores": np.array([np.nan]), "ids": ["a"], "index": [0], "typical_ok": [True], "images": rng.random((1, 3, 8, 8)),
            "masks": np.zeros((1, 8, 8)), "has_box": np.array([False]), "saliency": rng.random((1, 8, 8)), "cams": {(v.key, "gradcampp", "mirror"): cam[None]},
            "preds": {v.key: np.array([3])}}
    shard = ShardOutput(pd.DataFrame({"image_id": ["a"], "cc_fp32": [0.9]}), pd.DataFrame(), {(v.key, "gradcampp", "mirror"): tr}, {v.key: np.arange(4)}, grid)
    back = ShardOutput.from_job(shard.to_job())
    pd.testing.assert_frame_equal(back.rows, shard.rows)
    t = back.tracks[(v.key, "gradcampp", "mirror")]
    assert t.n == 5 and np.array_equal(t.hits, tr.hits) and t.heap[0][:3] == (0.3, 4, "img4") and np.array_equal(t.heap[0][3], cam)
    assert back.grid["has_box"].tolist() == [False] and np.array_equal(back.grid["cams"][(v.key, "gradcampp", "mirror")], cam[None])
    assert np.array_equal(back.hist[v.key], np.arange(4))


def test_dissimilar_heaps_stay_bounded_and_keep_maps_of_the_worst_only() -> None:
    """Rogers et al.'s top-5% keeps ids and RMSE of top_k images, but CAM maps of only FIGURE_CAMS of them,
    whatever the shard count: memory is flat in the images."""
    from edgecam.bench.aggregate import FIGURE_CAMS, fold, push

    rng = np.random.default_rng(3)
    acc = ShardOutput(None, None, {}, {}, {})
    key = ("m-onnx-int8-ort", "gradcampp", "mirror")
    scores = rng.random(300)
    for s0 in range(0, 300, 50):  # six shards of 50 images, each with its own heap of top_k = 15
        tr = Track(np.zeros(len(WSOL_THRESHOLDS), dtype=np.int64))
        for i in range(s0, s0 + 50):
            push(tr.heap, (float(scores[i]), i, f"img{i}", np.full((4, 4), i, np.float32), np.zeros((4, 4), np.float32)), 15)
        assert len(tr.heap) == 15 and sum(it[3] is not None for it in tr.heap) == FIGURE_CAMS
        part = ShardOutput(pd.DataFrame(), pd.DataFrame(), {key: tr}, {}, {})
        fold(acc, part, 15)
        assert part.tracks == {}  # emptied: nothing per shard outlives the fold
    heap = acc.tracks[key].heap
    assert sorted(it[1] for it in heap) == sorted(np.argsort(-scores)[:15].tolist())  # the run's top 15
    with_maps = sorted((it for it in heap if it[3] is not None), key=lambda it: -it[0])
    assert [it[1] for it in with_maps] == np.argsort(-scores)[:FIGURE_CAMS].tolist() and with_maps[0][3][0, 0] == with_maps[0][1]
