"""The explain stage's ETA (`StageEta`) and torch thread setting, without a device or a model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgecam.bench.explain_stage import StageEta, _torch_threads


def _eta(sizes: list[int]) -> tuple[StageEta, list[str]]:
    logged: list[str] = []
    return StageEta("m", 2, sizes, logged.append), logged


def test_first_shard_estimate_leaves_out_the_unoverlapped_wait_for_the_device() -> None:
    """Shard 1: 10 s, of which 6 s waiting for the device's start and outputs (device 7 s), 4 s host work. Later
    shards overlap the two, so each costs max(4, 7) = 7 s, not 10 s."""
    eta, logged = _eta([32, 32, 32, 32])
    eta.done(0, 10.0, False, wait_s=6.0, device_s=7.0)
    assert eta.estimates[0]["stage_s"] == pytest.approx(10.0 + 3 * 7.0)
    assert eta.estimates[0]["per_image_variant_s"] == pytest.approx(7.0 / 32 / 2)
    assert "to go for 96 images" in logged[0]


def test_host_bound_first_shard_and_the_steady_second_shard() -> None:
    eta, _ = _eta([32, 32, 32, 16])
    eta.done(0, 12.0, False, wait_s=2.0, device_s=3.0)  # host-bound: 10 s of host work per shard
    eta.done(1, 9.0, False, wait_s=0.5, device_s=3.0)  # the second shard's whole time is the steady state
    assert eta.estimates[0]["stage_s"] == pytest.approx(12.0 + 10.0 * 80 / 32)
    assert eta.estimates[1]["stage_s"] == pytest.approx(21.0 + 9.0 * 48 / 32)
    eta.done(2, 9.0, False)
    assert len(eta.estimates) == 2  # estimated twice, then quiet


def test_resumed_shards_count_as_elapsed_but_are_not_a_rate() -> None:
    eta, _ = _eta([10, 10, 10])
    eta.done(0, 0.2, True)
    assert eta.estimates == []
    eta.done(1, 5.0, False)  # no device figures (nothing prefetched): the shard's own time
    assert eta.estimates[0]["stage_s"] == pytest.approx(0.2 + 5.0 + 5.0)


def test_torch_threads_set_inside_and_restored() -> None:
    before = torch.get_num_threads()
    with _torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with _torch_threads(None):
        assert torch.get_num_threads() == before


def _shard_holding(need: set[str], n: int) -> "ShardOutput":
    """A ShardOutput that holds exactly the parts named in `need` (rows, preds, hist, edges, tracks, grid, kept, gaps)."""
    import numpy as np
    import pandas as pd

    from edgecam.bench.aggregate import ShardOutput, Track

    tracks = {tuple(p[len("track:"):].split("|")): Track(np.zeros(3, dtype=np.int64)) for p in need if p.startswith("track:")}
    grid = {"score": None, "s0": 0, "scores": np.full(n, np.nan), "ids": ["a"], "index": [0], "typical_ok": [True], "images": np.zeros((1, 3, 2, 2), np.uint8),
            "masks": np.zeros((1, 2, 2), np.uint8), "saliency": np.zeros((1, 2, 2), np.float16), "has_box": np.zeros(1, bool), "cams": {}, "preds": {}} if "grid" in need else {}
    rows = pd.DataFrame({"image_id": [str(i) for i in range(n)]}) if "rows" in need else pd.DataFrame()
    gaps = pd.DataFrame({"image_id": ["0"]}) if "gaps" in need else pd.DataFrame()
    pick = lambda kind: [p.split(":", 1)[1] for p in need if p.startswith(kind + ":")]  # noqa: E731
    return ShardOutput(rows, gaps, tracks, {k: np.ones(4, np.int64) for k in pick("hist")}, grid, {k: np.zeros(n, np.int64) for k in pick("preds")},
                       {k: np.linspace(0, 1, 5) for k in pick("edges")}, {"ids": np.array(["0"])} if "kept" in need else {})


def test_a_shard_must_hold_every_part_the_run_expects_before_it_is_reused() -> None:
    """Issue 36 (N55): a shard stored without its activation histogram was reused. `expected_parts` comes from the
    variants and config alone; a record that omits a part, or lists one it does not hold, is refused."""
    import dataclasses
    from pathlib import Path

    from edgecam.bench.explain_stage import _check_shard, expected_parts
    from edgecam.bench.variant import Variant
    from edgecam.config import RunConfig

    cfg = RunConfig()
    cfg = cfg.replace(explain=dataclasses.replace(cfg.explain, methods=("gradcampp",), sim=False))
    ok = [Variant("m", "onnx", p, "onnxruntime", Path("."), {"sha256": p}) for p in ("fp32", "int8")] + [Variant("m", "tflite", "int8", "litert", Path("."), {})]
    first, later = expected_parts(ok, cfg, 0), expected_parts(ok, cfg, 10_000)
    onnx = "m-onnx-int8-onnxruntime"
    assert {f"hist:{onnx}", "hist:m-onnx-fp32-onnxruntime", "edges:m-onnx-onnxruntime", "grid", "kept", "rows", "gaps", f"track:{onnx}|gradcampp|mirror"} <= first
    assert "hist:m-tflite-int8-litert" not in first and "preds:m-tflite-int8-litert" in first  # no fp32 tflite: no rows, no histogram
    assert later == first - {"edges:m-onnx-onnxruntime", "kept"}  # issue 37: every shard holds its grid candidates

    _check_shard(_shard_holding(later, 4).to_job(later), ok, 4, later)  # complete: reused
    part = _shard_holding(later, 4)
    part.hist.pop(onnx)
    with pytest.raises(KeyError, match=f"stored without hist:{onnx}"):  # the old commit: consistent, but a part short
        _check_shard(part.to_job(), ok, 4, later)
    with pytest.raises(KeyError, match=f"lists hist:{onnx}, which it does not hold"):
        _check_shard(part.to_job(later), ok, 4, later)
    old = _shard_holding(later, 4).to_job(later)
    del old.meta["parts"]  # stored before records listed their parts
    with pytest.raises(KeyError, match="lists no parts"):
        _check_shard(old, ok, 4, later)


def test_shrink_maps_keeps_small_maps_and_takes_no_maps() -> None:
    """The grid's and the kept outputs' maps: area-downsampled to at most `size` a side, as they are when small;
    a shard that keeps no grid candidate shrinks an empty stack (it crashed the run with numpy's empty stack)."""
    from edgecam.bench.explain_stage import shrink_maps

    maps = np.arange(2 * 8 * 4, dtype=np.float32).reshape(2, 8, 4)
    small = shrink_maps(maps, 4)
    assert small.shape == (2, 4, 2) and small[0, 0, 0] == np.mean(maps[0, :2, :2])
    assert np.array_equal(shrink_maps(maps, 8), maps)
    assert shrink_maps(maps[:0], 4).shape == (0, 4, 2)
