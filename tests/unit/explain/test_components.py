"""The one-pass union-find WSOL boxes (`explain.components`) against the per-threshold OpenCV labelling it
replaces (`localisation._largest_component_boxes_cv2`, itself checked against scipy in test_localisation_fast):
the same box at every threshold, on smooth CAMs at 224 px, noise, ties, plateaus and one-row maps, thresholds in
any order."""

from __future__ import annotations

import numpy as np
import pytest

from edgecam.explain import components
from edgecam.explain.localisation import WSOL_THRESHOLDS, _largest_component_boxes_cv2


def _norm(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    return (c - c.min()) / (c.max() - c.min()) if c.max() > c.min() else np.zeros_like(c)


def _maps(seed: int) -> list[np.ndarray]:
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for i in range(40):
        h, w = (224, 224) if i < 4 else (int(rng.integers(1, 50)), int(rng.integers(1, 50)))
        kind = i % 4
        if kind == 0:  # a real CAM's shape: ReLU'd 7 x 7 map, bilinear upsampling
            out.append(cv2.resize(np.maximum(rng.standard_normal((7, 7)), 0).astype(np.float32), (w, h)))
        elif kind == 1:
            out.append(rng.random((h, w)))  # noise: many components per threshold
        elif kind == 2:
            out.append(rng.integers(0, 3, (h, w)) / 2.0)  # three levels: equal-size components everywhere
        else:
            out.append((rng.random((h, w)) > 0.5).astype(float))
    return [_norm(m) for m in out]


@pytest.mark.parametrize("seed", [0, 1])
def test_one_pass_equals_per_threshold_labelling(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    for m in _maps(seed):
        for t in (WSOL_THRESHOLDS, rng.random(13), np.array([0.5, 0.0, 1.0, 0.5])):
            before = m.copy()
            assert components.largest_component_boxes(m, t) == _largest_component_boxes_cv2(m, np.asarray(t))
            np.testing.assert_array_equal(m, before)


def test_ties_and_diagonal_contact() -> None:
    cam = np.zeros((6, 10))
    cam[1:3, 0:2] = 1.0  # A: first pixel at row 1
    cam[0:2, 5:7] = 1.0  # B: first pixel at row 0, as large as A: B wins
    assert components.largest_component_boxes(cam, np.array([0.5])) == [(5, 0, 6, 1)]
    diag = np.zeros((6, 6))
    diag[0:2, 0:2] = diag[2:4, 2:4] = 1.0  # 8-connected through a corner: one component
    assert components.largest_component_boxes(diag, np.array([0.5, 1.0, 0.0])) == [(0, 0, 3, 3), (0, 0, 3, 3), (0, 0, 5, 5)]


def test_a_threshold_above_the_map_has_no_box() -> None:
    assert components.largest_component_boxes(np.full((3, 3), 0.4), np.array([0.5, 0.4])) == [None, (0, 0, 2, 2)]


def test_compiled_where_numba_is_installed() -> None:
    """numba is a dependency (pyproject.toml): the WSOL step must not silently fall back to OpenCV labelling."""
    assert components.HAVE_NUMBA and hasattr(components.level_boxes, "py_func")
