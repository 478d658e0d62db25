"""The device-side perturbation maths (perturb.py, pure numpy) against what the host computes today
with cv2 and torch: INTER_LINEAR resize, RISE masks, align-corners upsampling, Score-CAM masks, Gaussian
blur, and the Deletion / Insertion inputs of explain/faithfulness.py."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgecam import perturb as P


@pytest.mark.parametrize(("src", "dst"), [((8, 8), (72, 72)), ((8, 8), (252, 252)), ((7, 7), (224, 224)), ((5, 9), (17, 40)), ((10, 10), (3, 4)), ((6, 6), (6, 6)), ((1, 5), (4, 9))])
def test_resize_linear_matches_cv2_inter_linear(src: tuple[int, int], dst: tuple[int, int]) -> None:
    img = np.random.default_rng(0).random(src).astype(np.float32)
    ref = cv2.resize(img, (dst[1], dst[0]), interpolation=cv2.INTER_LINEAR)
    ours = P.resize_linear(img, dst[1], dst[0])
    assert ours.shape == ref.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize(("size", "cells"), [((64, 64), 8), ((224, 224), 7), ((224, 224), 8), ((28, 28), 8), ((50, 30), 7)])
def test_rise_masks_match_the_host_cv2_masks(size: tuple[int, int], cells: int) -> None:
    from edgecam.explain.cams import rise_masks

    ref = rise_masks(60, cells, size, 0.5, seed=3)
    ours = P.rise_masks(60, cells, size, 0.5, seed=3)
    assert ours.shape == ref.shape == (60, size[1], size[0])
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    grid, dy, dx = P.rise_grid(60, cells, size, 0.5, 3)
    chunks = np.concatenate([P.rise_masks_from_grid(grid, dy, dx, size, a, a + 25) for a in range(0, 60, 25)])
    assert np.array_equal(chunks, ours)  # chunks of one grid are the whole, bit for bit


def test_upsample_and_scorecam_masks_match_torch_and_the_host_formula() -> None:
    import torch

    maps = np.random.default_rng(1).normal(size=(2, 5, 7, 7)).astype(np.float32)
    maps[1, 2] = 0.25  # a constant map: the eps keeps it finite (all zeros)
    ref = torch.nn.UpsamplingBilinear2d(size=(224, 224))(torch.from_numpy(maps)).numpy()
    up = P.upsample_align_corners(maps, 224, 224)
    np.testing.assert_allclose(up, ref, atol=1e-5)
    lo, hi = ref.min(axis=(2, 3), keepdims=True), ref.max(axis=(2, 3), keepdims=True)
    host = ((ref - lo) / (hi - lo + np.float32(1e-8))).astype(np.float32)  # torch's upsampling, Score-CAM's normalisation
    np.testing.assert_allclose(P.scorecam_masks(maps, 224, 224), host, atol=1e-5)
    host = P.scorecam_masks(maps, 224, 224)
    assert np.array_equal(P.scorecam_masks(maps[0, 1:3], 224, 224), host[0, 1:3])  # a chunk of maps: the same bits
    assert not P.scorecam_masks(maps, 224, 224)[1, 2].any()


@pytest.mark.parametrize(("shape", "sigma"), [((3, 224, 224), 28.0), ((1, 28, 28), 3.5), ((3, 64, 64), 8.0), ((3, 20, 50), 6.25), ((2, 9, 9), 1.3), ((1, 5, 40), 4.0)])
def test_gaussian_blur_matches_cv2(shape: tuple[int, int, int], sigma: float) -> None:
    img = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    ref = np.stack([cv2.GaussianBlur(np.ascontiguousarray(c), (0, 0), sigmaX=sigma, sigmaY=sigma) for c in img])
    np.testing.assert_allclose(P.gaussian_blur(img, sigma), ref, atol=1e-6)


@pytest.mark.parametrize("baseline", ["zero", "blur", 0.3, "array"])
def test_perturbation_inputs_are_the_faithfulness_inputs(baseline: object) -> None:
    from edgecam.explain.faithfulness import perturbation_series

    rng = np.random.default_rng(3)
    img = rng.normal(size=(3, 32, 24)).astype(np.float32)
    cam = rng.random((32, 24))
    cam[3:9, 3:9] = 0.5  # ties: row-major order
    cam[20, 5] = np.nan  # NaN ranks last
    base = rng.normal(size=(3, 1, 1)).astype(np.float32) if baseline == "array" else baseline
    deletion, insertion = perturbation_series(img, cam, 7, base)  # type: ignore[arg-type]
    both = P.perturbation_inputs(img, cam, 7, "both", base)  # type: ignore[arg-type]
    np.testing.assert_allclose(both, np.concatenate([deletion, insertion]), atol=1e-6)
    np.testing.assert_allclose(P.perturbation_inputs(img, cam, 7, "deletion", base), deletion, atol=1e-6)  # type: ignore[arg-type]
    np.testing.assert_allclose(P.perturbation_inputs(img, cam, 7, "insertion", base), insertion, atol=1e-6)  # type: ignore[arg-type]
    assert P.series_items("insertion", 7) == list(range(8, 16))


def test_maths_never_writes_into_its_inputs() -> None:
    rng = np.random.default_rng(4)
    img, cam, maps = rng.normal(size=(3, 16, 16)).astype(np.float32), rng.random((16, 16)), rng.random((4, 3, 3)).astype(np.float32)
    copies = [a.copy() for a in (img, cam, maps)]
    P.perturbation_inputs(img, cam, 4, "both", "blur")
    P.scorecam_masks(maps, 16, 16)
    P.resize_linear(maps, 9, 9)
    P.gaussian_blur(img, 2.0)
    for a, b in zip((img, cam, maps), copies):
        assert np.array_equal(a, b)


def test_bad_arguments_are_refused() -> None:
    img = np.zeros((1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="kind must be one of"):
        P.series_items("both-ways", 3)
    with pytest.raises(ValueError, match="blur_sigma"):
        P.PerturbationSeries(img, np.zeros((4, 4)), 2, blur_sigma=-1.0)
    with pytest.raises(ValueError, match="baseline must be"):
        P.PerturbationSeries(img, np.zeros((4, 4)), 2, baseline="mean")
    with pytest.raises(ValueError, match="does not broadcast"):
        P.PerturbationSeries(img, np.zeros((4, 4)), 2, baseline=np.zeros((2, 3)))
