"""Visual-saliency providers for the "v. saliency" columns (2403.09939 compared CAMs with a visual-saliency
model's maps). A provider turns a batch of images into (N, H, W) maps in [0, 1]; its name is recorded per
result row.

- `spectral_residual`: OpenCV contrib, Hou & Zhang, "Saliency detection: a spectral residual approach",
  CVPR 2007;
- `fine_grained`: OpenCV contrib, Montabone & Soto, "Human detection using a mobile platform and novel
  features derived from a visual saliency mechanism", IVC 2010;
- `directory`: precomputed maps by image id (`<id>.npy` or `<id>.png`), e.g. SATSal outputs or fixation maps;
- `gt_mask`: the dataset's ground-truth object mask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Optional, Sequence

import numpy as np

from edgecam.errors import ConfigError, EdgecamError
from edgecam.registry import Registry


class SaliencyProvider:
    """`maps(images (N, 3, H, W) in [0, 1], ids, masks) -> (N, H, W) float32 in [0, 1]`."""

    name: ClassVar[str]

    def maps(self, images: np.ndarray, ids: Sequence[str], masks: Optional[np.ndarray]) -> np.ndarray:
        raise NotImplementedError


SALIENCY_PROVIDERS: Registry[type[SaliencyProvider]] = Registry("saliency provider")


def _minmax(m: np.ndarray) -> np.ndarray:
    m = np.nan_to_num(np.asarray(m, dtype=np.float32))
    lo, hi = float(m.min()), float(m.max())
    return ((m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)).astype(np.float32)


def _cv2_saliency() -> Any:
    import cv2

    if not hasattr(cv2, "saliency"):
        raise EdgecamError(
            "cv2.saliency is missing: the plain OpenCV build is installed, not the contrib one. Fix: pip install "
            f"--force-reinstall --no-deps opencv-contrib-python-headless=={cv2.__version__.split('-')[0]}"
        )
    return cv2.saliency


class _OpenCvStatic(SaliencyProvider):
    factory: ClassVar[str]

    def maps(self, images: np.ndarray, ids: Sequence[str], masks: Optional[np.ndarray]) -> np.ndarray:
        import cv2

        algo = getattr(_cv2_saliency(), self.factory)()
        out = np.empty((len(images), *images.shape[2:]), dtype=np.float32)
        for i, img in enumerate(np.asarray(images)):
            bgr = np.ascontiguousarray((np.clip(img.transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)[:, :, ::-1])
            ok, sal = algo.computeSaliency(bgr)
            if not ok:
                raise EdgecamError(f"{self.name}: OpenCV could not compute a saliency map for image {ids[i]!r}")
            out[i] = _minmax(cv2.resize(np.asarray(sal, dtype=np.float32), (img.shape[2], img.shape[1]), interpolation=cv2.INTER_LINEAR))
        return out


@SALIENCY_PROVIDERS.register("spectral_residual")
class SpectralResidual(_OpenCvStatic):
    """Spectral residual of the log amplitude spectrum (Hou & Zhang 2007)."""

    name = "spectral_residual"
    factory = "StaticSaliencySpectralResidual_create"


@SALIENCY_PROVIDERS.register("fine_grained")
class FineGrained(_OpenCvStatic):
    """Centre-surround differences on an intensity pyramid (Montabone & Soto 2010)."""

    name = "fine_grained"
    factory = "StaticSaliencyFineGrained_create"


@SALIENCY_PROVIDERS.register("directory")
class DirectoryMaps(SaliencyProvider):
    """Precomputed maps `<directory>/<id>.npy` or `<id>.png` (grayscale), resized bilinearly to the image."""

    name = "directory"
    extensions = (".npy", ".png")

    def __init__(self, directory: str | Path | None = None) -> None:
        if directory is None or not Path(directory).is_dir():
            raise ConfigError(f"saliency directory {str(directory)!r} does not exist (explain.saliency_dir: a folder of <image id>.png / .npy maps)")
        self.directory = Path(directory)

    def _load(self, image_id: str) -> np.ndarray:
        import cv2

        for ext in self.extensions:
            path = self.directory / f"{image_id}{ext}"
            if path.is_file():
                if ext == ".npy":
                    m = np.load(path, allow_pickle=False)
                else:
                    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
                    if m is None:
                        raise EdgecamError(f"saliency map {path} does not decode as an image")
                m = np.asarray(m, dtype=np.float32)
                if m.ndim != 2:
                    raise EdgecamError(f"saliency map {path} must be 2-D (H, W), got shape {m.shape}")
                return m
        raise EdgecamError(f"no saliency map for image id {image_id!r} in {self.directory} (tried {', '.join(image_id + e for e in self.extensions)})")

    def maps(self, images: np.ndarray, ids: Sequence[str], masks: Optional[np.ndarray]) -> np.ndarray:
        import cv2

        h, w = images.shape[2:]
        return np.stack([_minmax(cv2.resize(self._load(str(i)), (w, h), interpolation=cv2.INTER_LINEAR)) for i in ids])


@SALIENCY_PROVIDERS.register("gt_mask")
class GroundTruthMask(SaliencyProvider):
    """The dataset's ground-truth object mask as the map."""

    name = "gt_mask"

    def maps(self, images: np.ndarray, ids: Sequence[str], masks: Optional[np.ndarray]) -> np.ndarray:
        if masks is None:
            raise EdgecamError("saliency = 'gt_mask' needs a dataset with ground-truth masks; this one has none")
        return np.stack([_minmax(m) for m in np.asarray(masks)])
