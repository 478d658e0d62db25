"""Deletion / Insertion (Petsiuk et al., RISE, BMVC 2018, Sec. 4.1) with forwards whose answers are known
in closed form, so curves and AUCs can be checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecam.explain.faithfulness import default_blur_sigma, deletion_insertion, faithfulness_rows, perturbation_series

HI = 1.0 / (1.0 + math.exp(-10.0))  # softmax([10, 0])[0]
LO = 1.0 - HI  # softmax([-10, 0])[0]


class RegionModel:
    """Two classes; logit 0 = 20 * (mean of the top-left 4x4 region) - 10, logit 1 = 0, so p(class 0)
    follows exactly how much of that region is left. Records every batch it sees."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.batches.append(x.copy())
        inside = x[:, :, :4, :4].mean(axis=(1, 2, 3), dtype=np.float64)
        return np.stack([20 * inside - 10, np.zeros(len(x))], 1)


class SharpRegionModel(RegionModel):
    """Like RegionModel but counts only region pixels that are exactly 1 (blurred pixels never are)."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.batches.append(x.copy())
        inside = (x[:, :, :4, :4] == 1.0).mean(axis=(1, 2, 3))
        return np.stack([20 * inside - 10, np.zeros(len(x))], 1)


def _region_image() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(1, 8, 8) image: 1 in the top-left 4x4 region, 0 elsewhere; the CAM on that region and its inverse."""
    img = np.zeros((1, 8, 8), np.float32)
    img[:, :4, :4] = 1.0
    good = np.zeros((8, 8))
    good[:4, :4] = 1.0
    return img, good, 1.0 - good


def test_hand_computed_curves_and_aucs() -> None:
    img, good, bad = _region_image()
    # sigma 4 blurs every region pixel below 1, so the blurred canvas holds none of the region
    g = deletion_insertion(SharpRegionModel(), img, good, 0, steps=4, blur_sigma=4.0)
    b = deletion_insertion(SharpRegionModel(), img, bad, 0, steps=4, blur_sigma=4.0)
    # steps=4 on 64 pixels: 16 pixels per step. Good CAM: step 1 deletes / reveals the whole region.
    np.testing.assert_allclose(g["deletion_curve"], [HI, LO, LO, LO, LO], rtol=1e-12)
    np.testing.assert_allclose(g["insertion_curve"], [LO, HI, HI, HI, HI], rtol=1e-12)
    # Inverted CAM: the region goes last, at step 4.
    np.testing.assert_allclose(b["deletion_curve"], [HI, HI, HI, HI, LO], rtol=1e-12)
    np.testing.assert_allclose(b["insertion_curve"], [LO, LO, LO, LO, HI], rtol=1e-12)
    np.testing.assert_allclose(g["fractions"], [0, 0.25, 0.5, 0.75, 1.0])
    # Trapezoids over x = 0, .25, .5, .75, 1 (HI + LO = 1).
    assert g["deletion_auc"] == pytest.approx(0.25 * (0.5 + 3 * LO), rel=1e-12)
    assert g["insertion_auc"] == pytest.approx(0.25 * (0.5 + 3 * HI), rel=1e-12)
    assert b["deletion_auc"] == pytest.approx(0.25 * (3 * HI + 0.5), rel=1e-12)
    assert b["insertion_auc"] == pytest.approx(0.25 * (3 * LO + 0.5), rel=1e-12)
    assert g["deletion_auc"] < b["deletion_auc"] and g["insertion_auc"] > b["insertion_auc"]


def test_partial_steps_and_ties_go_row_major() -> None:
    img, good, _ = _region_image()
    # steps=8: 8 pixels per step. The 16 tied region pixels go row-major: step 1 deletes rows 0-1 of the
    # region, leaving half of it: logit 20 * 0.5 - 10 = 0 -> p = 0.5; step 2 deletes the rest.
    r = deletion_insertion(RegionModel(), img, good, 0, steps=8, baseline="zero")
    np.testing.assert_allclose(r["deletion_curve"], [HI, 0.5] + [LO] * 7, rtol=1e-12)
    d, _ = perturbation_series(img, good, steps=8)
    assert (d[1, 0, :2, :4] == 0).all() and (d[1, 0, 2:4, :4] == 1).all()
    # A constant CAM is all ties: pixels go in plain row-major order.
    d, _ins = perturbation_series(np.arange(16, dtype=np.float32).reshape(1, 4, 4), np.zeros((4, 4)), steps=4, baseline=-1.0)
    for k in range(5):
        assert (d[k].ravel()[: 4 * k] == -1).all() and (d[k].ravel()[4 * k :] == np.arange(4 * k, 16)).all()


def test_series_spans_0_to_100_percent_with_each_baseline() -> None:
    img = np.random.default_rng(1).random((3, 6, 6)).astype(np.float32)
    cam = np.random.default_rng(2).random((6, 6))
    d, ins = perturbation_series(img, cam, steps=3, baseline="zero", blur_sigma=2.0)
    assert d.shape == ins.shape == (4, 3, 6, 6) and d.dtype == np.float32
    np.testing.assert_array_equal(d[0], img)  # 0% deleted
    np.testing.assert_array_equal(ins[-1], img)  # 100% revealed
    assert (d[-1] == 0).all()
    assert np.abs(ins[0] - img).max() > 0.05 and np.allclose(ins[0].mean(axis=(1, 2)), img.mean(axis=(1, 2)), atol=0.05)  # blurred
    d_blur, _ = perturbation_series(img, cam, steps=3, baseline="blur", blur_sigma=2.0)
    np.testing.assert_array_equal(d_blur[-1], ins[0])  # "blur" deletes to the insertion canvas
    d_chan, _ = perturbation_series(img, cam, steps=3, baseline=np.array([1.0, 2.0, 3.0])[:, None, None])
    assert (d_chan[-1][0] == 1).all() and (d_chan[-1][2] == 3).all()
    # The highest-CAM pixel is the first to go.
    top = np.unravel_index(np.argmax(cam), cam.shape)
    assert (d[1][:, top[0], top[1]] == 0).all()
    assert default_blur_sigma(224, 224) == 28.0 and default_blur_sigma(64, 32) == pytest.approx(8.0)


def test_endpoints_are_the_original_baseline_and_blurred_scores() -> None:
    img, good, _ = _region_image()
    m = RegionModel()
    r = deletion_insertion(m, img, good, 0, steps=4, blur_sigma=1.5)
    _d, ins = perturbation_series(img, good, steps=4, blur_sigma=1.5)
    p = lambda x: 1 / (1 + np.exp(-(20 * x[:, :4, :4].mean() - 10)))
    assert r["deletion_curve"][0] == pytest.approx(p(img)) == pytest.approx(r["insertion_curve"][-1])
    assert r["deletion_curve"][-1] == pytest.approx(LO) and r["insertion_curve"][0] == pytest.approx(p(ins[0]))


def test_batching_is_dense_bounded_and_does_not_change_results() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.random((5, 2, 8, 8)).astype(np.float32)
    cams = rng.random((5, 8, 8))
    targets = [0, 1, 0, 1, 1]
    per_image = 2 * (4 + 1)
    reference = None
    for batch_size in (1, 7, 10, 23, 4096):
        m = RegionModel()
        rows = faithfulness_rows(m, imgs, cams, targets, steps=4, batch_size=batch_size)
        sizes = [len(b) for b in m.batches]
        assert max(sizes) <= batch_size and sum(sizes) == 5 * per_image
        assert len(sizes) == math.ceil(5 * per_image / batch_size)  # the fewest calls possible
        assert all(b.dtype == np.float32 and b.shape[1:] == (2, 8, 8) for b in m.batches)
        if reference is None:
            reference = rows
        for r, ref in zip(rows, reference):
            np.testing.assert_allclose(r["deletion_curve"], ref["deletion_curve"], rtol=1e-12)
            np.testing.assert_allclose(r["insertion_curve"], ref["insertion_curve"], rtol=1e-12)
    # Per image, the multi-image helper agrees with the single-image function.
    single = deletion_insertion(RegionModel(), imgs[3], cams[3], 1, steps=4)
    assert single["deletion_auc"] == pytest.approx(reference[3]["deletion_auc"], rel=1e-12)
    assert single["insertion_auc"] == pytest.approx(reference[3]["insertion_auc"], rel=1e-12)


def test_inputs_are_not_modified_and_a_mutating_forward_is_harmless() -> None:
    img, good, _ = _region_image()
    img.setflags(write=False)
    good.setflags(write=False)

    def vandal(x: np.ndarray) -> np.ndarray:
        out = RegionModel()(x)
        x[...] = np.nan  # a forward that scribbles on its input batch must not corrupt later batches
        return out

    a = deletion_insertion(vandal, img, good, 0, steps=4, batch_size=3)
    b = deletion_insertion(RegionModel(), img, good, 0, steps=4, batch_size=3)
    np.testing.assert_array_equal(a["deletion_curve"], b["deletion_curve"])
    assert (img[:, :4, :4] == 1).all()


def test_degenerate_inputs() -> None:
    img, good, _ = _region_image()
    assert faithfulness_rows(RegionModel(), np.zeros((0, 1, 8, 8)), np.zeros((0, 8, 8)), []) == []
    # A NaN CAM value ranks last; an all-NaN CAM still gives a (row-major) curve, not an exception.
    nan_cam = good.copy()
    nan_cam[0, 0] = np.nan
    d, _ = perturbation_series(img, nan_cam, steps=64)
    assert d[63, 0, 0, 0] == 1 and d[64, 0, 0, 0] == 0
    assert 0 <= deletion_insertion(RegionModel(), img, np.full((8, 8), np.nan), 0, steps=4)["deletion_auc"] <= 1
    # Non-finite logits give NaN AUCs rather than an exception.
    r = deletion_insertion(lambda x: np.full((len(x), 2), np.nan), img, good, 0, steps=2)
    assert math.isnan(r["deletion_auc"]) and math.isnan(r["insertion_auc"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image": np.zeros((8, 8))}, r"image must be \(C, H, W\)"),
        ({"cam": np.zeros((4, 4))}, r"cam must be \(H, W\) = \(8, 8\)"),
        ({"target": 2}, "target class 2 is out of range for 2 logits"),
        ({"target": -1}, "non-negative integer"),
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"baseline": "mean"}, "baseline must be 'zero', 'blur'"),
        ({"baseline": np.zeros(5)}, "does not broadcast"),
        ({"blur_sigma": 0.0}, "blur_sigma must be None or a positive number"),
        ({"forward": lambda x: np.zeros((1, 2))}, r"forward must return \(batch, num_classes\)"),
    ],
)
def test_bad_input_raises_a_clear_value_error(kwargs: dict, match: str) -> None:
    img, good, _ = _region_image()
    args = {"forward": RegionModel(), "image": img, "cam": good, "target": 0, "steps": 2, "batch_size": 4} | kwargs
    with pytest.raises(ValueError, match=match):
        deletion_insertion(**args)


def test_rows_validate_lengths() -> None:
    with pytest.raises(ValueError, match=r"cams must be \(N, H, W\)"):
        faithfulness_rows(RegionModel(), np.zeros((2, 1, 8, 8)), np.zeros((3, 8, 8)), [0, 0])
    with pytest.raises(ValueError, match="targets must be a sequence of 2"):
        faithfulness_rows(RegionModel(), np.zeros((2, 1, 8, 8)), np.zeros((2, 8, 8)), [0])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 9), size=st.integers(2, 7), batch_size=st.integers(1, 40))
def test_property_aucs_in_unit_interval_and_curve_endpoints_shared(seed: int, steps: int, size: int, batch_size: int) -> None:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(3, 2 * size * size))

    def linear(x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1).astype(np.float64) @ w.T

    imgs = rng.normal(size=(2, 2, size, size)).astype(np.float32)
    cams = rng.integers(0, 3, size=(2, size, size)).astype(np.float64)  # many ties
    rows = faithfulness_rows(linear, imgs, cams, [0, 2], steps=steps, batch_size=batch_size)
    for r in rows:
        assert 0 <= r["deletion_auc"] <= 1 and 0 <= r["insertion_auc"] <= 1
        assert r["deletion_curve"][0] == pytest.approx(r["insertion_curve"][-1], rel=1e-9)  # both the original image
        assert r["fractions"][0] == 0 and r["fractions"][-1] == 1 and len(r["deletion_curve"]) == steps + 1
