"""WSOL boxes and MaxBoxAcc (Choe et al., CVPR 2020) and the energy pointing game (Wang et al., Score-CAM,
CVPRW 2020) on synthetic blobs with known boxes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgecam.explain.localisation import (
    WSOL_THRESHOLDS,
    box_from_mask,
    box_iou,
    boxes_from_cam,
    energy_pointing_game,
    localisation_row,
    max_box_acc,
)


def _blob(y0: int, x0: int, y1: int, x1: int, size: int = 32, value: float = 1.0) -> np.ndarray:
    """A size x size map, ``value`` on rows y0..y1 and columns x0..x1 (inclusive), 0 elsewhere."""
    m = np.zeros((size, size))
    m[y0 : y1 + 1, x0 : x1 + 1] = value
    return m


def test_box_from_mask() -> None:
    assert box_from_mask(_blob(2, 3, 5, 9) > 0) == (3, 2, 9, 5)
    assert box_from_mask(_blob(2, 3, 5, 9, value=0.8)) == (3, 2, 9, 5)  # numeric masks: > 0.5
    assert box_from_mask(_blob(2, 3, 5, 9, value=0.4)) is None
    assert box_from_mask(np.zeros((4, 4), bool)) is None
    single = np.zeros((5, 7), bool)
    single[4, 6] = True
    assert box_from_mask(single) == (6, 4, 6, 4)
    with pytest.raises(ValueError, match="2-D"):
        box_from_mask(np.zeros((2, 3, 3), bool))


def test_box_iou_counts_pixels_inclusively() -> None:
    assert box_iou((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert box_iou((0, 0, 1, 1), (1, 1, 2, 2)) == pytest.approx(1 / 7)  # 1 shared pixel of 4 + 4 - 1
    assert box_iou((0, 0, 3, 1), (2, 0, 5, 1)) == pytest.approx(4 / 12)  # 2x2 shared of 8 + 8 - 4
    assert box_iou((0, 0, 1, 1), (5, 5, 6, 6)) == 0.0
    assert box_iou((3, 3, 3, 3), (3, 3, 3, 3)) == 1.0  # a one-pixel box has area 1
    assert box_iou((0, 0, 1, 1), None) == 0.0 and box_iou(None, None) == 0.0
    assert box_iou(np.array([0, 0, 1, 1]), (0, 0, 1, 1)) == 1.0
    with pytest.raises(ValueError, match="x0 <= x1"):
        box_iou((2, 0, 1, 1), (0, 0, 1, 1))
    with pytest.raises(ValueError, match="4 integers"):
        box_iou((0, 0, 1), (0, 0, 1, 1))


def test_largest_component_wins_and_thresholds_are_relative() -> None:
    cam = _blob(0, 0, 1, 1, value=1.0) + _blob(10, 10, 20, 20, value=0.6)  # small bright, large dim
    # t = 0.5 keeps both (0.6 >= 0.5): the 121-pixel component wins over the 4-pixel one;
    # t = 0.7 keeps only the bright one; t = 0 keeps the whole image (one component).
    assert boxes_from_cam(cam, [0.5, 0.7, 0.0, 1.01]) == [(10, 10, 20, 20), (0, 0, 1, 1), (0, 0, 31, 31), None]
    # Min-max normalisation: adding a constant or scaling by a positive factor changes no box.
    assert boxes_from_cam(3 * cam + 7, [0.5, 0.7]) == [(10, 10, 20, 20), (0, 0, 1, 1)]
    # 8-connectivity: two diagonal touching squares form one component.
    diag = _blob(0, 0, 2, 2) + _blob(3, 3, 5, 5) + _blob(20, 20, 23, 23)
    assert boxes_from_cam(diag, [0.5]) == [(0, 0, 5, 5)]
    # Equal sizes: the component reached first in row-major order wins.
    tie = _blob(10, 0, 12, 2) + _blob(2, 20, 4, 22)
    assert boxes_from_cam(tie, [0.5]) == [(20, 2, 22, 4)]


def test_boxes_match_a_per_threshold_reference_on_random_cams() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for _ in range(5):
        cam = ndimage.gaussian_filter(rng.random((24, 20)), 1.5)
        thresholds = np.linspace(0, 0.99, 40)
        expected = []
        norm = (cam - cam.min()) / (cam.max() - cam.min())
        for t in thresholds:  # one scipy.ndimage.label call per threshold
            labels, _n = ndimage.label(norm >= t, structure=np.ones((3, 3)))
            sizes = np.bincount(labels.ravel())[1:]
            ys, xs = np.nonzero(labels == 1 + int(np.argmax(sizes)))
            expected.append((xs.min(), ys.min(), xs.max(), ys.max()))
        assert boxes_from_cam(cam, thresholds) == expected


def test_degenerate_cams_give_no_box() -> None:
    assert boxes_from_cam(np.zeros((8, 8)), [0.0, 0.5]) == [None, None]  # all-zero: no information
    assert boxes_from_cam(np.full((8, 8), 3.0), [0.5]) == [None]
    nan_cam = _blob(1, 1, 3, 3, size=8)
    nan_cam[0, 0] = np.nan
    assert boxes_from_cam(nan_cam, [0.5]) == [None]
    assert len(boxes_from_cam(_blob(1, 1, 3, 3), WSOL_THRESHOLDS)) == 100 and WSOL_THRESHOLDS[1] == 0.01
    with pytest.raises(ValueError, match="2-D"):
        boxes_from_cam(np.zeros(8), [0.5])
    with pytest.raises(ValueError, match="thresholds"):
        boxes_from_cam(np.ones((4, 4)), [])


def test_max_box_acc_right_wrong_and_mixed() -> None:
    gt = [(10, 10, 20, 20)] * 4
    right = [_blob(10, 10, 20, 20) for _ in range(4)]
    wrong = [_blob(0, 0, 5, 5) for _ in range(4)]
    r = max_box_acc(right, gt)
    assert r["max_box_acc"] == 1.0 and r["best_threshold"] == 0.01  # t = 0 boxes the whole image
    np.testing.assert_array_equal(r["per_image_best_iou"], 1.0)
    assert r["box_acc"].shape == (100,) and r["box_acc"][0] == 0.0  # 121 / 1024 < 0.5 at t = 0
    w = max_box_acc(wrong, gt)
    assert w["max_box_acc"] == 0.0
    np.testing.assert_allclose(w["per_image_best_iou"], 121 / 1024)  # its best box is the whole image, at t = 0
    m = max_box_acc(right[:3] + wrong[:1], gt)
    assert m["max_box_acc"] == 0.75 and list(m["per_image_iou"]) == [1, 1, 1, 0]


def test_max_box_acc_uses_any_gt_box_and_the_dataset_level_threshold() -> None:
    # Image 0: a graded CAM, object box only at a high threshold. Image 1: a flat blob, right at any t > 0.
    graded = _blob(4, 4, 26, 26, value=0.2) + _blob(10, 10, 20, 20, value=0.8)
    res = max_box_acc([graded, _blob(10, 10, 20, 20)], [(10, 10, 20, 20), (10, 10, 20, 20)], thresholds=[0.1, 0.5])
    assert res["max_box_acc"] == 1.0 and res["best_threshold"] == 0.5
    np.testing.assert_array_equal(res["box_acc"], [0.5, 1.0])
    # At t = 0.1 image 0's box is the 23x23 halo: IoU with the 11x11 object = 121 / 529 < 0.5.
    assert boxes_from_cam(graded, [0.1]) == [(4, 4, 26, 26)]
    assert box_iou((4, 4, 26, 26), (10, 10, 20, 20)) == pytest.approx(121 / 529)
    assert res["per_image_best_iou"][0] == 1.0
    # Several ground-truth boxes: the best match counts; None = no ground truth = a miss.
    multi = max_box_acc([_blob(0, 0, 5, 5)] * 2, [[(20, 20, 30, 30), (0, 0, 5, 5)], None], thresholds=[0.5])
    assert multi["max_box_acc"] == 0.5 and list(multi["per_image_best_iou"]) == [1.0, 0.0]
    # A constant CAM is a miss, not an error.
    assert max_box_acc([np.zeros((32, 32))], [(0, 0, 31, 31)])["max_box_acc"] == 0.0
    with pytest.raises(ValueError, match="2 CAMs but 1"):
        max_box_acc([graded, graded], [(0, 0, 1, 1)])
    with pytest.raises(ValueError, match="at least one image"):
        max_box_acc([], [])
    with pytest.raises(ValueError, match="iou_threshold"):
        max_box_acc([graded], [(0, 0, 1, 1)], iou_threshold=0.0)


def test_energy_pointing_game_exact_values() -> None:
    cam = _blob(0, 0, 3, 3, size=8) * 3 + 1  # normalised: 1 on the 16-pixel square, 0 elsewhere
    assert energy_pointing_game(cam, _blob(0, 0, 3, 3, size=8) > 0) == pytest.approx(1.0)
    assert energy_pointing_game(cam, _blob(0, 0, 1, 1, size=8) > 0) == pytest.approx(4 / 16)
    assert energy_pointing_game(cam, (0, 0, 1, 1)) == pytest.approx(4 / 16)  # the same region as a box
    assert energy_pointing_game(cam, (2, 2, 20, 20)) == pytest.approx(4 / 16)  # a box clipped to the image
    assert energy_pointing_game(cam, _blob(4, 4, 7, 7, size=8) > 0) == 0.0
    ramp = np.arange(4, dtype=float)[None].repeat(2, 0)  # columns 0..3 -> normalised 0, 1/3, 2/3, 1
    assert energy_pointing_game(ramp, (3, 0, 3, 1)) == pytest.approx(1 / 2)  # (1 + 1) / (2 * (0 + 1/3 + 2/3 + 1))
    assert energy_pointing_game(ramp, np.array([[0, 0, 1, 0], [0, 0, 0, 0]])) == pytest.approx((2 / 3) / 4)


def test_energy_pointing_game_degenerate() -> None:
    assert math.isnan(energy_pointing_game(np.zeros((4, 4)), np.ones((4, 4), bool)))  # all-zero CAM
    assert math.isnan(energy_pointing_game(np.full((4, 4), 2.0), np.ones((4, 4), bool)))  # constant CAM
    assert math.isnan(energy_pointing_game(np.array([[0.0, np.inf], [1, 2]]), np.ones((2, 2), bool)))
    assert math.isnan(energy_pointing_game(np.eye(4), np.zeros((4, 4), bool)))  # no object
    assert math.isnan(energy_pointing_game(np.eye(4), (10, 10, 12, 12)))  # box outside the image
    with pytest.raises(ValueError, match="same shape"):
        energy_pointing_game(np.ones((4, 4)), np.ones((3, 3), bool))


def test_localisation_row() -> None:
    mask = _blob(10, 10, 20, 20, value=0.9)  # numeric mask, binarised at 0.5
    row = localisation_row(_blob(10, 10, 20, 20), mask)
    assert row == {"wsol_iou": 1.0, "pointing_energy": 1.0}
    shifted = localisation_row(_blob(10, 15, 20, 25), mask, thresholds=[0.5])
    assert shifted["wsol_iou"] == pytest.approx(66 / 176)  # 11x6 overlap of two 11x11 boxes
    assert shifted["pointing_energy"] == pytest.approx(6 / 11)
    assert localisation_row(np.zeros((32, 32)), mask)["wsol_iou"] == 0.0  # all-zero CAM: a miss
    assert math.isnan(localisation_row(np.zeros((32, 32)), mask)["pointing_energy"])
    assert math.isnan(localisation_row(_blob(1, 1, 2, 2), np.zeros((32, 32)))["wsol_iou"])  # no object
    with pytest.raises(ValueError, match="same shape"):
        localisation_row(np.ones((4, 4)), np.ones((3, 3)))


def test_inputs_are_not_modified() -> None:
    cam = _blob(3, 3, 9, 9, size=16) + 0.5
    mask = cam > 1
    cam.setflags(write=False)
    mask.setflags(write=False)
    localisation_row(cam, mask)
    max_box_acc([cam], [box_from_mask(mask)])
    assert cam[0, 0] == 0.5 and mask.sum() == 49
