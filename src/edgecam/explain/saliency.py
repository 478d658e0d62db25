"""Visual-saliency providers for the "v. saliency" columns (arXiv 2403.09939 compares CAMs with a visual-
saliency model's maps). A provider turns a batch of images into maps, and its ``name`` is recorded per
result row:

    provider.maps(images (N, 3, H, W) float in [0, 1], un-normalised RGB; ids: N strings;
                  masks: (N, H, W) ground-truth masks or None) -> (N, H, W) float32 in [0, 1]

Every map is min-max normalised per image (a constant map becomes all zeros, the convention of
``edgecam.explain.metrics``). Providers, by registry name (`SALIENCY_PROVIDERS`):

- ``spectral_residual``: OpenCV contrib's ``StaticSaliencySpectralResidual`` (Hou & Zhang, "Saliency
  detection: a spectral residual approach", CVPR 2007);
- ``fine_grained``: OpenCV contrib's ``StaticSaliencyFineGrained`` (Montabone & Soto, "Human detection
  using a mobile platform and novel features derived from a visual saliency mechanism", Image and Vision
  Computing 2010);
- ``directory``: precomputed maps ``<directory>/<id>.npy`` or ``<id>.png`` (e.g. a deep saliency model's
  outputs, or fixation density maps), resized bilinearly to the image;
- ``gt_mask``: the dataset's ground-truth object mask.

OpenCV is imported inside the providers, so importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgecam.errors import ArtifactError, ConfigError, EdgecamError
from edgecam.registry import Registry

__all__ = ["SALIENCY_PROVIDERS", "DirectoryMaps", "FineGrained", "GroundTruthMask", "SaliencyProvider", "SpectralResidual"]


class SaliencyProvider:
    """Base class: subclasses set ``name`` and implement `_maps` (called with validated inputs)."""

    name: ClassVar[str]

    def maps(self, images: np.ndarray, ids: Sequence[str], masks: np.ndarray | None = None) -> np.ndarray:
        """(N, H, W) float32 maps in [0, 1] for (N, 3, H, W) images in [0, 1] (grayscale (N, 1, H, W) is read
        as RGB with three equal channels); inputs are not modified."""
        x = np.asarray(images)
        if x.ndim == 4 and x.shape[1] == 1:
            x = np.repeat(x, 3, axis=1)
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] == 0 or x.shape[3] == 0:
            raise ValueError(f"{self.name}: images must be (N, 3, H, W) RGB or (N, 1, H, W) grayscale in [0, 1], got shape {x.shape}")
        if isinstance(ids, (str, bytes)) or len(ids) != x.shape[0]:
            raise ValueError(f"{self.name}: need one id per image ({x.shape[0]}), got {ids!r:.200}")
        m = None
        if masks is not None:
            m = np.asarray(masks)
            if m.shape != (x.shape[0], *x.shape[2:]):
                raise ValueError(f"{self.name}: masks must be (N, H, W) = {(x.shape[0], *x.shape[2:])}, got {m.shape}")
        if x.shape[0] == 0:
            return np.zeros((0, *x.shape[2:]), dtype=np.float32)
        return self._maps(x, [str(i) for i in ids], m)

    def _maps(self, images: np.ndarray, ids: list[str], masks: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError


SALIENCY_PROVIDERS: Registry[type[SaliencyProvider]] = Registry("saliency provider")


def _minmax(m: np.ndarray) -> np.ndarray:
    """Min-max normalise a 2-D map to float32 [0, 1]; NaN / Inf count as 0; a constant map gives zeros."""
    a = np.nan_to_num(np.asarray(m, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.float32)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _resize(m: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize (cv2.INTER_LINEAR) of a 2-D float map to (height, width)."""
    import cv2

    a = np.ascontiguousarray(m, dtype=np.float32)
    if a.shape == (height, width):
        return a
    return cv2.resize(a, (width, height), interpolation=cv2.INTER_LINEAR)


def _opencv_distribution() -> str:
    """``name==version`` of the installed OpenCV wheel, for the reinstall hint."""
    import importlib.metadata as md

    for dist in ("opencv-contrib-python-headless", "opencv-python-headless", "opencv-contrib-python", "opencv-python"):
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            continue
    return ""


def _cv2_saliency() -> Any:
    """``cv2.saliency``, or an error that says the contrib build is missing and how to install it."""
    try:
        import cv2
    except ImportError as exc:
        raise EdgecamError(
            f"OpenCV is not importable ({exc}); the saliency providers need the contrib build. "
            "Fix: pip install opencv-contrib-python-headless"
        ) from None
    if not hasattr(cv2, "saliency"):
        version = _opencv_distribution() or cv2.__version__.split("-")[0]
        raise EdgecamError(
            "cv2.saliency is missing: the plain OpenCV build is installed (or shadows the contrib one, e.g. "
            "pulled in by grad-cam), not opencv-contrib. Fix: pip install --force-reinstall --no-deps "
            f"opencv-contrib-python-headless=={version}"
        )
    return cv2.saliency


def _to_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """(3, H, W) RGB float in [0, 1] -> (H, W, 3) BGR uint8, rounded; a new contiguous array."""
    rgb = np.clip(np.nan_to_num(np.asarray(image, dtype=np.float32)), 0.0, 1.0)
    return np.ascontiguousarray(np.rint(rgb * 255.0).astype(np.uint8).transpose(1, 2, 0)[:, :, ::-1])


class _OpenCvStatic(SaliencyProvider):
    """A ``cv2.saliency`` static saliency algorithm run on each image's uint8 BGR version."""

    factory: ClassVar[str]

    def _maps(self, images: np.ndarray, ids: list[str], masks: np.ndarray | None) -> np.ndarray:
        algo = getattr(_cv2_saliency(), self.factory)()
        h, w = images.shape[2:]
        out = np.empty((images.shape[0], h, w), dtype=np.float32)
        for i in range(images.shape[0]):
            ok, sal = algo.computeSaliency(_to_bgr_uint8(images[i]))
            if not ok or sal is None:
                raise EdgecamError(f"{self.name}: OpenCV could not compute a saliency map for image {ids[i]!r}")
            out[i] = _minmax(_resize(np.asarray(sal, dtype=np.float32), h, w))
        return out


@SALIENCY_PROVIDERS.register("spectral_residual")
class SpectralResidual(_OpenCvStatic):
    """Spectral residual of the log amplitude spectrum (Hou & Zhang 2007, Eq. 5-8), OpenCV contrib."""

    name = "spectral_residual"
    factory = "StaticSaliencySpectralResidual_create"


@SALIENCY_PROVIDERS.register("fine_grained")
class FineGrained(_OpenCvStatic):
    """Centre-surround differences on integral images (Montabone & Soto 2010), OpenCV contrib."""

    name = "fine_grained"
    factory = "StaticSaliencyFineGrained_create"


@SALIENCY_PROVIDERS.register("directory")
class DirectoryMaps(SaliencyProvider):
    """Precomputed maps ``<directory>/<id>.npy`` (2-D array) or ``<id>.png`` (read as grayscale, 8 or 16
    bit), any size, resized bilinearly to the image and min-max normalised. ``.npy`` wins if both exist."""

    name = "directory"
    extensions: ClassVar[tuple[str, ...]] = (".npy", ".png")

    def __init__(self, directory: str | Path | None = None) -> None:
        if directory is None or str(directory) == "":
            raise ConfigError("the 'directory' saliency provider needs a directory (explain.saliency_dir) of <image id>.npy / .png maps")
        path = Path(directory).expanduser()
        if not path.is_dir():
            raise ConfigError(f"saliency directory {str(path)!r} does not exist or is not a directory (explain.saliency_dir: a folder of <image id>.npy / .png maps)")
        self.directory = path

    def _load(self, image_id: str) -> np.ndarray:
        import cv2

        for ext in self.extensions:
            path = self.directory / f"{image_id}{ext}"
            if not path.is_file():
                continue
            if ext == ".npy":
                try:
                    m = np.load(path, allow_pickle=False)
                except (OSError, ValueError) as exc:
                    raise ArtifactError(f"saliency map {path} for image id {image_id!r} is not a readable .npy array: {exc}") from None
            else:
                m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
                if m is None:
                    raise ArtifactError(f"saliency map {path} for image id {image_id!r} does not decode as an image")
            m = np.asarray(m)
            if m.ndim == 3 and 1 in (m.shape[0], m.shape[-1]):
                m = m.reshape(m.shape[1:] if m.shape[0] == 1 else m.shape[:-1])
            if m.ndim != 2 or m.size == 0 or not (np.issubdtype(m.dtype, np.number) or m.dtype == np.bool_):
                raise ArtifactError(f"saliency map {path} for image id {image_id!r} must be a non-empty numeric 2-D (H, W) map, got shape {m.shape}, dtype {m.dtype}")
            return m.astype(np.float32)
        tried = ", ".join(f"{image_id}{e}" for e in self.extensions)
        raise ArtifactError(f"no saliency map for image id {image_id!r} in {self.directory} (tried {tried})")

    def _maps(self, images: np.ndarray, ids: list[str], masks: np.ndarray | None) -> np.ndarray:
        h, w = images.shape[2:]
        return np.stack([_minmax(_resize(self._load(i), h, w)) for i in ids])


@SALIENCY_PROVIDERS.register("gt_mask")
class GroundTruthMask(SaliencyProvider):
    """The dataset's ground-truth object mask, min-max normalised, as the map."""

    name = "gt_mask"

    def _maps(self, images: np.ndarray, ids: list[str], masks: np.ndarray | None) -> np.ndarray:
        if masks is None:
            raise EdgecamError("saliency provider 'gt_mask' needs a dataset with ground-truth masks; this one has none (masks is None)")
        return np.stack([_minmax(m) for m in masks])
