"""The WSOL boxes from one OpenCV labelling per distinct mask, and the per-shard helper `box_ious_batch`: the same
boxes and IoUs as labelling the (T, H, W) threshold stack with scipy (the first implementation, kept here as the
reference), ties and degenerate CAMs included; `energy_pointing_game` on a `PreparedMap` equals it on the array."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from edgecam.explain.localisation import (
    WSOL_THRESHOLDS,
    box_from_mask,
    box_ious,
    box_ious_batch,
    boxes_from_cam,
    energy_pointing_game,
)
from edgecam.explain.metrics import PreparedMap


def _reference_boxes(cam: np.ndarray, thresholds: np.ndarray) -> list[Any]:
    """The first implementation: all thresholds labelled at once by scipy (8-connectivity within a slice);
    the largest component per slice, equal sizes broken by the lowest label (first in row-major order)."""
    from scipy import ndimage

    c = np.asarray(cam, dtype=np.float64)
    if not np.isfinite(c).all() or c.max() == c.min():
        return [None] * len(thresholds)
    norm = np.clip((c - c.min()) / (c.max() - c.min()), 0.0, 1.0)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True
    labels, count = ndimage.label(norm[None] >= np.asarray(thresholds)[:, None, None], structure=structure)
    out: list[Any] = [None] * len(thresholds)
    if count:
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        objects = ndimage.find_objects(labels)
        slice_of = np.array([o[0].start for o in objects])
        order = np.lexsort((np.arange(count), -sizes, slice_of))
        first = np.ones(count, dtype=bool)
        first[1:] = slice_of[order][1:] != slice_of[order][:-1]
        for k in order[first]:
            _, ys, xs = objects[k]
            out[int(slice_of[k])] = (int(xs.start), int(ys.start), int(xs.stop) - 1, int(ys.stop) - 1)
    return out


def _cams(seed: int = 0) -> list[np.ndarray]:
    """Smooth multi-blob CAMs (bilinear upsampling of ReLU'd 7x7 maps, as real CAMs are made), noise (many
    components), mirror-symmetric maps and equal squares (ties), plateaus, and the degenerate kinds."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(6):
        base = np.maximum(rng.normal(size=(7, 7)) + 0.3, 0).astype(np.float32)
        out.append(cv2.resize(base, (56, 48), interpolation=cv2.INTER_LINEAR))
    for _ in range(4):
        out.append(rng.random((31, 37)))
        out.append(cv2.resize(rng.random((4, 4)), (40, 40), interpolation=cv2.INTER_NEAREST))
        half = cv2.resize(np.maximum(rng.normal(size=(7, 7)), 0), (28, 28))
        out.append(half + half[:, ::-1])
    twins = np.zeros((40, 40))
    twins[5:10, 5:10] = 1.0
    twins[20:25, 30:35] = 1.0
    out.append(twins)
    diag = np.zeros((12, 12))
    diag[0:3, 0:3] = diag[3:6, 3:6] = 1.0  # touching diagonally: one 8-connected component
    out.append(diag)
    out.append(np.zeros((16, 16)))
    out.append(np.full((16, 16), 2.0))
    nan = rng.random((16, 16))
    nan[3, 3] = np.nan
    out.append(nan)
    out.append(np.arange(12.0).reshape(1, 12))  # one row
    return out


@pytest.mark.parametrize("thresholds", [WSOL_THRESHOLDS, np.array([0.9, 0.1, 0.5, 0.5, 0.0, 1.0, 0.33])])
def test_boxes_equal_the_scipy_stack_reference(thresholds: np.ndarray) -> None:
    for cam in _cams():
        before = cam.copy()
        assert boxes_from_cam(cam, thresholds) == _reference_boxes(cam, thresholds)
        assert boxes_from_cam(PreparedMap(cam), thresholds) == _reference_boxes(cam, thresholds)
        np.testing.assert_array_equal(cam, before)


def test_box_ious_batch_equals_box_ious_per_image() -> None:
    cams = _cams(1)
    rng = np.random.default_rng(3)
    gts: list[Any] = []
    for i, cam in enumerate(cams):
        h, w = cam.shape
        if i % 5 == 4:
            gts.append(None)  # no ground truth: zeros
            continue
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        box = (x0, y0, int(rng.integers(x0, w)), int(rng.integers(y0, h)))
        gts.append(box if i % 3 else np.array([box, (0, 0, w - 1, h - 1)]))  # one box, or several
    for i in range(0, len(cams), 7):  # stacks of CAMs of one shape, as a shard has
        group = [j for j in range(len(cams)) if cams[j].shape == cams[i].shape]
        got = box_ious_batch(np.stack([cams[j] for j in group]), [gts[j] for j in group])
        assert got.shape == (len(group), WSOL_THRESHOLDS.size)
        for row, j in zip(got, group):
            np.testing.assert_array_equal(row, box_ious(cams[j], gts[j]))
    ragged = box_ious_batch(cams, gts)  # a list of CAMs of different shapes works too
    for row, cam, gt in zip(ragged, cams, gts):
        np.testing.assert_array_equal(row, box_ious(cam, gt))
    with pytest.raises(ValueError, match="one per image"):
        box_ious_batch(cams[:2], gts[:1])


def test_box_ious_batch_as_the_explain_stage_counts() -> None:
    """The shard loop's counts (hits per threshold, best IoU per image, NaN for a non-finite CAM) from one call."""
    cams = np.stack([c for c in _cams(2) if c.shape == (40, 40)])
    masks = np.zeros_like(cams, dtype=bool)
    masks[:, 8:30, 10:35] = True
    gt = [box_from_mask(m) for m in masks]
    ious = box_ious_batch(cams, gt)
    hits = np.zeros(WSOL_THRESHOLDS.size, dtype=np.int64)
    best = np.full(len(cams), np.nan)
    for i in range(len(cams)):  # today's loop in explain_shard
        row = box_ious(cams[i], gt[i])
        hits += row >= 0.5
        best[i] = row.max() if np.isfinite(cams[i]).all() else np.nan
    np.testing.assert_array_equal(hits, (ious >= 0.5).sum(0))
    finite = np.isfinite(cams).reshape(len(cams), -1).all(1)
    np.testing.assert_array_equal(best, np.where(finite, ious.max(1), np.nan))


def test_energy_pointing_game_on_a_prepared_map() -> None:
    rng = np.random.default_rng(4)
    for cam in _cams(5):
        h, w = cam.shape
        mask = rng.random((h, w)) > 0.6
        for region in (mask, np.zeros((h, w), dtype=bool), (0, 0, w // 2, h // 2), (-3, -3, w + 5, h + 5)):
            want = energy_pointing_game(cam, region)
            got = energy_pointing_game(PreparedMap(cam), region)
            assert got == want or (math.isnan(got) and math.isnan(want))
    with pytest.raises(ValueError, match="same shape"):
        energy_pointing_game(PreparedMap(np.ones((4, 4))), np.ones((4, 5), dtype=bool))


def test_equal_sizes_go_to_the_first_pixel_in_row_major_order() -> None:
    """OpenCV labels 2 x 2 blocks at a time, so its label order is not row-major: the tie-break must not use it.
    B's first pixel (row 0) comes before A's (row 1, column 0), though A's block is scanned first."""
    cam = np.zeros((6, 10))
    cam[1:3, 0:2] = 1.0  # A: rows 1-2, columns 0-1
    cam[0:2, 5:7] = 1.0  # B: rows 0-1, columns 5-6
    assert boxes_from_cam(cam, [0.5]) == [(5, 0, 6, 1)] == _reference_boxes(cam, np.array([0.5]))
