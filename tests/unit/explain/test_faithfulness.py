"""Deletion / Insertion (Petsiuk et al. 2018) with a forward whose answer is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from edgecam.explain.faithfulness import deletion_insertion, faithfulness_rows, perturbation_series


class RegionModel:
    """Two classes; logit of class 0 = 20 x (mean intensity inside the top-left 4x4 region) - 10: the
    target's probability follows exactly how much of that region survives. Counts calls and batch sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.batches.append(len(x))
        inside = x[:, :, :4, :4].mean(axis=(1, 2, 3))
        return np.stack([20 * inside - 10, np.zeros(len(x))], 1)


def _image_and_cams() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    img = np.ones((1, 8, 8), np.float32)
    good = np.zeros((8, 8))
    good[:4, :4] = 1.0  # points at the region the model uses
    return img, good, 1.0 - good


def test_faithful_cam_deletes_faster_and_inserts_faster() -> None:
    img, good, bad = _image_and_cams()
    g = deletion_insertion(RegionModel(), img, good, 0, steps=4, blur_sigma=100.0)
    b = deletion_insertion(RegionModel(), img, bad, 0, steps=4, blur_sigma=100.0)
    assert g["deletion_auc"] < b["deletion_auc"] and g["insertion_auc"] > b["insertion_auc"]
    # good CAM, deletion: step 1 removes 16 px = the whole region -> p = sigmoid(-10) from step 1 on
    s = 1 / (1 + np.exp(-10))
    np.testing.assert_allclose(g["deletion_curve"], [s, 1 - s, 1 - s, 1 - s, 1 - s], rtol=1e-9)
    # trapezoid over x = 0, .25, .5, .75, 1
    assert g["deletion_auc"] == pytest.approx(0.25 * ((s + (1 - s)) / 2 + 3 * (1 - s)))


def test_series_orders_by_cam_and_spans_0_to_100_percent() -> None:
    img = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    cam = np.arange(16, dtype=np.float64).reshape(4, 4)  # highest CAM = bottom-right
    d, ins = perturbation_series(img, cam, steps=4, baseline=-1.0, blur_sigma=1.0)
    assert d.shape == ins.shape == (5, 1, 4, 4)
    np.testing.assert_array_equal(d[0], img)
    np.testing.assert_array_equal(ins[-1], img)
    assert (d[-1] == -1).all()
    assert (d[1].ravel()[12:] == -1).all() and (d[1].ravel()[:12] == img.ravel()[:12]).all()
    with pytest.raises(ValueError, match="same size"):
        perturbation_series(img, np.zeros((3, 3)), 4)


def test_batching_respects_batch_size_and_does_not_change_results() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.random((5, 1, 8, 8)).astype(np.float32)
    cams = rng.random((5, 8, 8))
    small, big = RegionModel(), RegionModel()
    a = faithfulness_rows(small, imgs, cams, [0] * 5, steps=4, batch_size=7)
    b = faithfulness_rows(big, imgs, cams, [0] * 5, steps=4, batch_size=4096)
    assert max(small.batches) <= 7 and sum(small.batches) == 5 * 10
    assert len(big.batches) == 1  # every perturbed image of all five in one device call
    for x, y in zip(a, b):
        assert x["deletion_auc"] == pytest.approx(y["deletion_auc"]) and x["insertion_auc"] == pytest.approx(y["insertion_auc"])
