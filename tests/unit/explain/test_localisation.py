"""WSOL boxes, MaxBoxAcc and the energy pointing game on synthetic blobs with known boxes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgecam.explain.localisation import box_from_mask, box_iou, boxes_from_cam, energy_pointing_game, max_box_acc


def _blob(y0: int, x0: int, y1: int, x1: int, size: int = 32, value: float = 1.0) -> np.ndarray:
    m = np.zeros((size, size))
    m[y0 : y1 + 1, x0 : x1 + 1] = value
    return m


def test_box_from_mask_and_iou() -> None:
    assert box_from_mask(_blob(2, 3, 5, 9) > 0) == (3, 2, 9, 5)
    assert box_from_mask(np.zeros((4, 4), bool)) is None
    assert box_iou((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert box_iou((0, 0, 1, 1), (1, 1, 2, 2)) == pytest.approx(1 / 7)  # 1 shared pixel of 4 + 4 - 1
    assert box_iou((0, 0, 1, 1), None) == 0.0


def test_largest_component_wins() -> None:
    cam = _blob(0, 0, 1, 1) + _blob(10, 10, 20, 20)  # a 4-pixel and a 121-pixel component
    assert boxes_from_cam(cam, [0.5]) == [(10, 10, 20, 20)]
    assert boxes_from_cam(np.zeros((8, 8)), [0.5]) == [None]


def test_max_box_acc_right_and_wrong_place() -> None:
    gt = [(10, 10, 20, 20)] * 3
    right = [_blob(10, 10, 20, 20) for _ in range(3)]
    wrong = [_blob(0, 0, 5, 5) for _ in range(3)]
    assert max_box_acc(right, gt, [0.2, 0.5])["max_box_acc"] == 1.0
    assert max_box_acc(wrong, gt, [0.2, 0.5])["max_box_acc"] == 0.0
    # a graded CAM: a low threshold takes in the halo (box too big), a high one finds the object
    graded = [_blob(4, 4, 26, 26, value=0.2) + _blob(10, 10, 20, 20, value=0.8) for _ in range(3)]
    res = max_box_acc(graded, gt, [0.1, 0.5])
    assert res == {"max_box_acc": 1.0, "best_threshold": 0.5}


def test_energy_pointing_game() -> None:
    cam = _blob(0, 0, 3, 3) * 3 + 1  # normalised: 1 inside the 16-pixel box, 0 outside
    assert energy_pointing_game(cam, _blob(0, 0, 3, 3) > 0) == pytest.approx(1.0)
    assert energy_pointing_game(cam, _blob(0, 0, 1, 1) > 0) == pytest.approx(4 / 16)
    assert math.isnan(energy_pointing_game(np.zeros((4, 4)), np.ones((4, 4), bool)))
    with pytest.raises(ValueError, match="same shape"):
        energy_pointing_game(np.ones((4, 4)), np.ones((3, 3), bool))
