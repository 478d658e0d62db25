"""Visual-saliency providers: OpenCV contrib on real photographs (scikit-image's bundled ones), precomputed
maps from a directory, the ground-truth mask, and the errors users see."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from edgecam.errors import ArtifactError, ConfigError, EdgecamError, UnknownNameError
from edgecam.explain.saliency import SALIENCY_PROVIDERS, SaliencyProvider


def _photos() -> np.ndarray:
    """(2, 3, 48, 64) float32 in [0, 1]: scikit-image's cat and astronaut, resized small (no download)."""
    import cv2
    from skimage import data

    imgs = [cv2.resize(p, (64, 48), interpolation=cv2.INTER_AREA) for p in (data.chelsea(), data.astronaut())]
    return (np.stack(imgs).transpose(0, 3, 1, 2) / 255.0).astype(np.float32)


def test_registry_names_and_recorded_name() -> None:
    assert SALIENCY_PROVIDERS.names() == ["directory", "fine_grained", "gt_mask", "spectral_residual"]
    for name in SALIENCY_PROVIDERS:
        cls = SALIENCY_PROVIDERS.get(name)
        assert issubclass(cls, SaliencyProvider) and cls.name == name
    with pytest.raises(UnknownNameError, match="unknown saliency provider 'itti'; known saliency providers: directory, fine_grained"):
        SALIENCY_PROVIDERS.get("itti")


@pytest.mark.parametrize("name", ["spectral_residual", "fine_grained"])
def test_opencv_providers_on_real_photos(name: str) -> None:
    x = _photos()
    x0 = x.copy()
    m = SALIENCY_PROVIDERS.get(name)().maps(x, ["cat", "astronaut"], None)
    assert m.shape == (2, 48, 64) and m.dtype == np.float32
    for i in range(2):
        assert m[i].min() == 0.0 and m[i].max() == 1.0 and m[i].std() > 0.05  # normalised, not constant
    assert not np.allclose(m[0], m[1], atol=0.05)  # the map depends on the image
    np.testing.assert_array_equal(x, x0)  # input untouched


def test_spectral_residual_finds_an_odd_patch_on_a_flat_background() -> None:
    x = np.full((1, 3, 64, 64), 0.3, np.float32)
    x[0, :, 40:48, 10:18] = 0.9  # one bright square: the only "residual" in the spectrum
    m = SALIENCY_PROVIDERS.get("spectral_residual")().maps(x, ["square"], None)[0]
    inside, outside = m[40:48, 10:18].mean(), np.delete(m.ravel(), np.ravel_multi_index(np.mgrid[40:48, 10:18].reshape(2, -1), m.shape)).mean()
    assert inside > 3 * outside


def test_a_flat_image_has_no_fine_grained_saliency() -> None:
    # No centre-surround difference anywhere: OpenCV's map is constant, which normalises to all zeros.
    m = SALIENCY_PROVIDERS.get("fine_grained")().maps(np.full((1, 3, 16, 16), 0.5), ["flat"])
    assert m.shape == (1, 16, 16) and (m == 0).all()


def test_directory_provider_round_trips_npy_and_png(tmp_path: Path) -> None:
    import cv2

    a = np.zeros((8, 8), np.float32)
    a[2:4, 2:4] = 5.0
    np.save(tmp_path / "img-a.npy", a)
    b = np.zeros((16, 16), np.uint8)  # a larger map: resized bilinearly to 8x8
    b[8:, 8:] = 255
    cv2.imwrite(str(tmp_path / "img-b.png"), b)
    c = np.zeros((8, 8), np.uint16)  # 16-bit PNG keeps its depth
    c[0, 0], c[7, 7] = 1000, 60000
    cv2.imwrite(str(tmp_path / "img-c.png"), c)
    np.save(tmp_path / "img-d.npy", a[None])  # (1, H, W) is squeezed
    provider = SALIENCY_PROVIDERS.get("directory")(tmp_path)
    maps = provider.maps(np.zeros((4, 3, 8, 8), np.float32), ["img-a", "img-b", "img-c", "img-d"], None)
    assert maps.shape == (4, 8, 8) and maps.dtype == np.float32
    np.testing.assert_array_equal(maps[0], a / 5.0)  # same size: exact, min-max normalised
    np.testing.assert_array_equal(maps[3], a / 5.0)
    assert maps[1][7, 7] == 1.0 and maps[1][0, 0] == 0.0 and maps[1][:3, :3].max() == 0.0
    assert maps[2][7, 7] == 1.0 and maps[2][0, 0] == pytest.approx(1000 / 60000) and maps[2][3, 3] == 0.0


def test_directory_provider_errors_name_the_id_dir_and_extensions(tmp_path: Path) -> None:
    provider = SALIENCY_PROVIDERS.get("directory")(str(tmp_path))
    with pytest.raises(ArtifactError, match=rf"'img-z' in {tmp_path}.*img-z\.npy, img-z\.png"):
        provider.maps(np.zeros((1, 3, 8, 8), np.float32), ["img-z"], None)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ArtifactError, match="broken.png.*does not decode"):
        provider.maps(np.zeros((1, 3, 8, 8), np.float32), ["broken"], None)
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 3)))
    with pytest.raises(ArtifactError, match=r"cube.npy.*2-D \(H, W\)"):
        provider.maps(np.zeros((1, 3, 8, 8), np.float32), ["cube"], None)
    with pytest.raises(ConfigError, match=rf"'{tmp_path / 'nope'}' does not exist"):
        SALIENCY_PROVIDERS.get("directory")(tmp_path / "nope")
    with pytest.raises(ConfigError, match="needs a directory"):
        SALIENCY_PROVIDERS.get("directory")()


def test_gt_mask_provider() -> None:
    masks = np.zeros((2, 4, 4))
    masks[0, 1, 1] = 0.5
    masks[0, 2, 2] = 0.25
    maps = SALIENCY_PROVIDERS.get("gt_mask")().maps(np.zeros((2, 3, 4, 4)), ["x", "y"], masks)
    assert maps[0, 1, 1] == 1.0 and maps[0, 2, 2] == 0.5 and maps.dtype == np.float32
    assert (maps[1] == 0).all()  # an empty mask stays all zero
    with pytest.raises(EdgecamError, match="ground-truth masks"):
        SALIENCY_PROVIDERS.get("gt_mask")().maps(np.zeros((1, 3, 4, 4)), ["x"], None)


def test_shape_validation() -> None:
    p = SALIENCY_PROVIDERS.get("gt_mask")()
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        p.maps(np.zeros((1, 4, 4)), ["x"], np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="one id per image"):
        p.maps(np.zeros((2, 3, 4, 4)), ["x"], np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match=r"masks must be \(N, H, W\)"):
        p.maps(np.zeros((1, 3, 4, 4)), ["x"], np.zeros((1, 5, 4)))
    assert p.maps(np.zeros((0, 3, 4, 4)), [], np.zeros((0, 4, 4))).shape == (0, 4, 4)


def test_grayscale_images_are_read_as_three_equal_channels() -> None:
    """MNIST-like (N, 1, H, W) inputs: the map is the one of the same image with its channel repeated, and
    other channel counts are still refused."""
    rng = np.random.default_rng(0)
    gray = rng.random((2, 1, 28, 28)).astype(np.float32)
    p = SALIENCY_PROVIDERS.get("spectral_residual")()
    np.testing.assert_array_equal(p.maps(gray, ["a", "b"]), p.maps(np.repeat(gray, 3, axis=1), ["a", "b"]))
    assert gray.shape == (2, 1, 28, 28)  # the input is not modified
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\) RGB or \(N, 1, H, W\) grayscale"):
        p.maps(np.zeros((1, 2, 4, 4)), ["x"])


def test_missing_contrib_build_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata as md

    plain = types.ModuleType("cv2")
    plain.__version__ = "4.10.0"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cv2", plain)  # a cv2 without the saliency module
    monkeypatch.setattr(md, "version", lambda dist: "4.10.0.84")
    with pytest.raises(EdgecamError, match=r"cv2\.saliency is missing.*pip install --force-reinstall --no-deps opencv-contrib-python-headless==4\.10\.0\.84"):
        SALIENCY_PROVIDERS.get("fine_grained")().maps(np.zeros((1, 3, 8, 8)), ["x"])
