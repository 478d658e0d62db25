"""Visual-saliency providers: OpenCV contrib on a real photograph, precomputed maps, ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecam.errors import ConfigError, EdgecamError, UnknownNameError
from edgecam.explain.saliency import SALIENCY_PROVIDERS


def _photo() -> np.ndarray:
    import cv2
    from skimage import data

    img = cv2.resize(data.chelsea(), (96, 64), interpolation=cv2.INTER_AREA)  # scikit-image's bundled cat
    return (img.transpose(2, 0, 1)[None] / 255.0).astype(np.float32)


@pytest.mark.parametrize("name", ["spectral_residual", "fine_grained"])
def test_opencv_providers_on_a_real_photo(name: str) -> None:
    x = _photo()
    x0 = x.copy()
    m = SALIENCY_PROVIDERS.get(name)().maps(x, ["cat"], None)
    assert m.shape == (1, 64, 96) and m.dtype == np.float32
    assert m.min() == 0.0 and m.max() == 1.0 and m.std() > 0.05
    np.testing.assert_array_equal(x, x0)


def test_directory_provider_round_trips_npy_and_png(tmp_path: Path) -> None:
    import cv2

    a = np.zeros((8, 8), np.float32)
    a[2:4, 2:4] = 5.0
    np.save(tmp_path / "img-a.npy", a)
    b = np.zeros((16, 16), np.uint8)
    b[8:, 8:] = 255
    cv2.imwrite(str(tmp_path / "img-b.png"), b)
    maps = SALIENCY_PROVIDERS.get("directory")(tmp_path).maps(np.zeros((2, 3, 8, 8), np.float32), ["img-a", "img-b"], None)
    assert maps.shape == (2, 8, 8) and maps[0].max() == 1.0 and maps[0][0, 0] == 0.0
    assert maps[1][7, 7] == pytest.approx(1.0) and maps[1][0, 0] == 0.0
    with pytest.raises(EdgecamError, match=r"'img-c'.*img-c\.npy, img-c\.png"):
        SALIENCY_PROVIDERS.get("directory")(tmp_path).maps(np.zeros((1, 3, 8, 8), np.float32), ["img-c"], None)
    with pytest.raises(ConfigError, match="does not exist"):
        SALIENCY_PROVIDERS.get("directory")(tmp_path / "nope")


def test_gt_mask_provider_and_unknown_name() -> None:
    masks = np.zeros((1, 4, 4))
    masks[0, 1, 1] = 1
    assert SALIENCY_PROVIDERS.get("gt_mask")().maps(np.zeros((1, 3, 4, 4)), ["x"], masks)[0, 1, 1] == 1.0
    with pytest.raises(EdgecamError, match="ground-truth masks"):
        SALIENCY_PROVIDERS.get("gt_mask")().maps(np.zeros((1, 3, 4, 4)), ["x"], None)
    with pytest.raises(UnknownNameError, match="spectral_residual"):
        SALIENCY_PROVIDERS.get("itti")
