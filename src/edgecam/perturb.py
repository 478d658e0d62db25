"""Perturbation maths of the gradient-free CAMs and the faithfulness curves, in pure numpy (no torch, no cv2,
Python >= 3.8), so that the agent composes the masked inputs on the device and the host's fallback uses the
very same functions.

- Score-CAM (Wang et al., CVPRW 2020, Eq. 6-8): each CAM-layer channel upsampled bilinearly with
  align_corners=True (torch's `UpsamplingBilinear2d`) by separable matrix products, then min-max normalised
  per map: `scorecam_masks`.
- RISE (Petsiuk et al., BMVC 2018, Sec. 3.2): binary cells x cells grids with keep probability p, upsampled
  bilinearly (cv2.INTER_LINEAR arithmetic: half-pixel centres, edge clamp) to (cells + 1) x the cell size and
  cropped at a random offset: `rise_masks`, or in chunks from one `rise_grid`.
- Deletion / Insertion (RISE, Sec. 4.1): pixels ranked by decreasing CAM (stable: ties row-major, NaN last),
  deletion replaces the top-ranked pixels by a baseline, insertion reveals them on a Gaussian-blurred canvas
  (cv2.GaussianBlur arithmetic: float32 kernel of size round(8 sigma + 1) | 1, reflect-101 border):
  `PerturbationSeries`, `perturbation_inputs`.

Every function returns new arrays and never writes into its inputs.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

#: what deleted pixels become: "zero" (0.0, the dataset mean after normalisation), "blur" (the insertion
#: canvas), a number, or an array broadcastable to (C, H, W)
Baseline = Union[str, float, np.ndarray]

KINDS = ("deletion", "insertion", "both")
SCORECAM_EPS = 1e-8  # on the min-max range, as the grad-cam package's ScoreCAM


# -- Score-CAM -------------------------------------------------------------------------------------------
def align_corners_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 bilinear weights with align_corners=True: output i samples input position
    i * (n_in - 1) / (n_out - 1) (torch's UpsamplingBilinear2d)."""
    pos = np.arange(n_out) * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(1)
    lo = np.clip(np.floor(pos).astype(int), 0, n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (pos - lo).astype(np.float32)
    m = np.zeros((n_out, n_in), dtype=np.float32)
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m


def upsample_align_corners(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """(..., h, w) maps -> (..., height, width) float32, bilinear with align_corners=True, computed as
    Wy @ maps @ Wx^T (separable, float32)."""
    a = np.asarray(maps, dtype=np.float32)
    wy, wx = align_corners_matrix(a.shape[-2], height), align_corners_matrix(a.shape[-1], width)
    return wy @ a @ wx.T


def scorecam_masks(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Score-CAM masks: each (h, w) map upsampled to (height, width) (`upsample_align_corners`) and min-max
    normalised over its own pixels, (a - min) / (max - min + 1e-8), float32."""
    a = upsample_align_corners(maps, height, width)  # a fresh array: normalised in place, no full-size temporaries
    lo, hi = a.min(axis=(-2, -1), keepdims=True), a.max(axis=(-2, -1), keepdims=True)
    a -= lo
    a /= hi - lo + np.float32(SCORECAM_EPS)
    return a


# -- cv2.INTER_LINEAR in numpy ---------------------------------------------------------------------------
def linear_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 weights of cv2.INTER_LINEAR along one axis: output i samples input position
    (i + 0.5) * n_in / n_out - 0.5 (half-pixel centres), clamped to the edge pixels as OpenCV does."""
    scale = 1.0 / (float(n_out) / n_in)  # cv2: scale_x = 1 / inv_scale_x
    pos = ((np.arange(n_out) + 0.5) * scale - 0.5).astype(np.float32)
    lo = np.floor(pos).astype(np.int64)
    frac = (pos - lo).astype(np.float32)
    low = lo < 0
    frac[low], lo[low] = 0, 0
    high = lo >= n_in - 1
    frac[high], lo[high] = 0, n_in - 1
    m = np.zeros((n_out, n_in), dtype=np.float32)
    rows = np.arange(n_out)
    m[rows, lo] += np.float32(1) - frac
    m[rows, np.minimum(lo + 1, n_in - 1)] += frac
    return m


def resize_linear(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """`cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)` for a (..., H, W) float array
    (every leading index resized alike): horizontal pass, then vertical, in float32."""
    a = np.asarray(img, dtype=np.float32)
    ry, rx = linear_resize_matrix(a.shape[-2], height), linear_resize_matrix(a.shape[-1], width)
    return ry @ (a @ rx.T)


# -- RISE ------------------------------------------------------------------------------------------------
def rise_grid(n: int, cells: int, size: Tuple[int, int], p: float = 0.5, seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The random part of `n` RISE masks: (grid (n, cells, cells) float32 in {0, 1}, dy (n,), dx (n,)),
    drawn from `np.random.default_rng(seed)` in this order (grid, then y offsets, then x offsets). Small
    (n * cells^2 floats): a device holds it whole and builds the masks from it in chunks."""
    w, h = size
    rng = np.random.default_rng(seed)
    ch, cw = int(math.ceil(h / cells)), int(math.ceil(w / cells))
    grid = (rng.random((n, cells, cells)) < p).astype(np.float32)
    dy, dx = rng.integers(0, ch, n), rng.integers(0, cw, n)
    return grid, dy, dx


def rise_masks_from_grid(grid: np.ndarray, dy: np.ndarray, dx: np.ndarray, size: Tuple[int, int], start: int = 0, stop: Optional[int] = None) -> np.ndarray:
    """Masks start..stop-1 of a `rise_grid`: each grid upsampled with cv2.INTER_LINEAR arithmetic to
    ((cells + 1) * cell height, (cells + 1) * cell width) and cropped to `size` = (width, height) at its
    offset; (stop - start, height, width) float32."""
    w, h = size
    cells = grid.shape[1]
    ch, cw = int(math.ceil(h / cells)), int(math.ceil(w / cells))
    ry, rx = linear_resize_matrix(cells, (cells + 1) * ch), linear_resize_matrix(cells, (cells + 1) * cw)
    stop = len(grid) if stop is None else min(stop, len(grid))
    out = np.empty((max(0, stop - start), h, w), dtype=np.float32)
    for j, i in enumerate(range(start, stop)):
        y, x = int(dy[i]), int(dx[i])
        out[j] = ry[y : y + h] @ (grid[i] @ rx[x : x + w].T)  # the crop of the full resize, rows and columns
    return out


def rise_masks(n: int, cells: int, size: Tuple[int, int], p: float = 0.5, seed: int = 0) -> np.ndarray:
    """RISE masks (Petsiuk et al., BMVC 2018, Sec. 3.2): (n, height, width) float32 for `size` = (width,
    height); the same masks as explain/cams.py's cv2-based `rise_masks` (to float32 rounding)."""
    grid, dy, dx = rise_grid(n, cells, size, p, seed)
    return rise_masks_from_grid(grid, dy, dx, size)


# -- Gaussian blur (cv2.GaussianBlur in numpy) -----------------------------------------------------------
def gaussian_kernel(sigma: float) -> np.ndarray:
    """cv2.getGaussianKernel(round(8 sigma + 1) | 1, sigma, CV_32F): the kernel cv2.GaussianBlur uses on a
    float image for ksize (0, 0) (weights rounded to float32, then normalised in double, then float32)."""
    n = int(np.floor(sigma * 8 + 1 + 0.5)) | 1  # cvRound(sigma * 4 * 2 + 1) | 1
    x = np.arange(n, dtype=np.float64) - (n - 1) * 0.5
    t = np.exp((-0.5 / (sigma * sigma)) * x * x).astype(np.float32)
    return (t.astype(np.float64) * (1.0 / float(np.sum(t.astype(np.float64))))).astype(np.float32)


def reflect101(index: np.ndarray, n: int) -> np.ndarray:
    """OpenCV's borderInterpolate for BORDER_REFLECT_101 (gfedcb|abcdefgh|gfedcba), any distance."""
    if n == 1:
        return np.zeros_like(index)
    p = np.array(index, dtype=np.int64)
    while True:
        out = (p < 0) | (p >= n)
        if not out.any():
            return p
        p = np.where(p < 0, -p, np.where(p >= n, 2 * n - p - 2, p))


def blur_matrix(n: int, kernel: np.ndarray) -> np.ndarray:
    """(n, n) float64 matrix of a 1-D convolution with `kernel` under reflect-101 borders."""
    r = len(kernel) // 2
    m = np.zeros((n, n), dtype=np.float64)
    rows = np.arange(n)
    for t, k in enumerate(kernel.astype(np.float64)):
        np.add.at(m, (rows, reflect101(rows + t - r, n)), k)
    return m


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Channel-wise Gaussian blur of a (C, H, W) image, as cv2.GaussianBlur(ch, (0, 0), sigma, sigma) on
    each float32 channel (rows first, then columns; reflect-101 border); float32."""
    x = np.asarray(image, dtype=np.float64)
    k = gaussian_kernel(sigma)
    by, bx = blur_matrix(x.shape[-2], k), blur_matrix(x.shape[-1], k)
    return (by @ (x @ bx.T)).astype(np.float32)


# -- Deletion / Insertion --------------------------------------------------------------------------------
_BLUR_FRACTION = 1.0 / 8.0  # see explain/faithfulness.py: sigma = max(H, W) / 8 removes object-scale structure


def default_blur_sigma(height: int, width: int) -> float:
    """Gaussian sigma of the insertion canvas: max(H, W) / 8."""
    return _BLUR_FRACTION * max(height, width)


def check_blur_sigma(blur_sigma: Optional[float], height: int, width: int) -> float:
    """The sigma in force (`default_blur_sigma` for None); ValueError for anything but a positive number."""
    if blur_sigma is None:
        return default_blur_sigma(height, width)
    if isinstance(blur_sigma, (bool, np.bool_)) or not isinstance(blur_sigma, (int, float, np.integer, np.floating)):
        raise ValueError("blur_sigma must be None or a positive number, got %r" % (blur_sigma,))
    if not (math.isfinite(float(blur_sigma)) and blur_sigma > 0):
        raise ValueError("blur_sigma must be None or a positive number, got %r" % (blur_sigma,))
    return float(blur_sigma)


def baseline_image(baseline: Baseline, image: np.ndarray, blurred: Optional[np.ndarray]) -> np.ndarray:
    """The (C, H, W) float32 image deleted pixels are taken from ("blur" needs `blurred`)."""
    if isinstance(baseline, str):
        if baseline == "zero":
            return np.zeros_like(image)
        if baseline == "blur":
            if blurred is None:
                raise ValueError("baseline 'blur' needs the blurred image")
            return blurred
        raise ValueError("baseline must be 'zero', 'blur', a number or an array, got %r" % (baseline,))
    try:
        return np.broadcast_to(np.asarray(baseline, dtype=np.float32), image.shape)
    except ValueError:
        raise ValueError("baseline array of shape %s does not broadcast to the image shape %s" % (np.shape(baseline), image.shape)) from None


def pixel_counts(n_pixels: int, steps: int) -> np.ndarray:
    """Pixels removed / revealed after step k = 0..steps: round(k * n_pixels / steps), exact integers."""
    k = np.arange(steps + 1, dtype=np.int64)
    return (2 * k * n_pixels + steps) // (2 * steps)


def pixel_ranks(cam: np.ndarray) -> np.ndarray:
    """(H, W) rank of each pixel in decreasing-CAM order; stable, so ties go row-major; NaN ranks last."""
    flat = np.asarray(cam, dtype=np.float64).ravel()
    key = np.where(np.isnan(flat), np.inf, -flat)  # ascending key = descending CAM, NaN after everything
    order = np.argsort(key, kind="stable")
    ranks = np.empty(flat.size, dtype=np.int64)
    ranks[order] = np.arange(flat.size)
    return ranks.reshape(np.shape(cam))


class PerturbationSeries:
    """The perturbed copies of one (C, H, W) image under its (H, W) CAM, built one at a time: item k of
    0..steps is deletion step k, item steps + 1 + k insertion step k (RISE, Sec. 4.1). Step k removes /
    reveals the round(k * H * W / steps) highest-CAM pixels. The blurred canvas is computed only when
    insertion or a "blur" baseline needs it."""

    def __init__(self, image: np.ndarray, cam: np.ndarray, steps: int, baseline: Baseline = "zero", blur_sigma: Optional[float] = None, blur: bool = True) -> None:
        h, w = image.shape[1:]
        self.image = np.asarray(image, dtype=np.float32)
        self.ranks = pixel_ranks(cam)
        self.counts = pixel_counts(h * w, steps)
        sigma = check_blur_sigma(blur_sigma, h, w)
        need_blur = blur or (isinstance(baseline, str) and baseline == "blur")
        self.blurred = gaussian_blur(self.image, sigma) if need_blur else None
        self.baseline = baseline_image(baseline, self.image, self.blurred)
        self.steps = steps

    def __len__(self) -> int:
        return 2 * (self.steps + 1)

    def item(self, i: int, out: np.ndarray) -> None:
        """Write perturbed image `i` (deletion 0..steps, then insertion 0..steps) into `out`."""
        insertion, k = divmod(i, self.steps + 1)
        chosen = self.ranks < self.counts[k]  # (H, W): pixels removed (deletion) / revealed (insertion)
        if insertion:
            if self.blurred is None:
                raise ValueError("this series was built without the blurred canvas (blur=False): no insertion items")
            np.copyto(out, np.where(chosen, self.image, self.blurred))
        else:
            np.copyto(out, np.where(chosen, self.baseline, self.image))


def series_items(kind: str, steps: int) -> List[int]:
    """The `PerturbationSeries` items of `kind`: "deletion" 0..steps, "insertion" steps+1..2 steps+1, "both"."""
    if kind not in KINDS:
        raise ValueError("kind must be one of %s, got %r" % (", ".join(KINDS), kind))
    first = 0 if kind in ("deletion", "both") else steps + 1
    last = 2 * (steps + 1) if kind in ("insertion", "both") else steps + 1
    return list(range(first, last))


def perturbation_inputs(image: np.ndarray, cam: np.ndarray, steps: int, kind: str = "both", baseline: Baseline = "zero", blur_sigma: Optional[float] = None) -> np.ndarray:
    """The model inputs Deletion / Insertion send for one image: (len(series_items(kind)), C, H, W)
    float32, deletion steps 0..steps then insertion steps 0..steps for "both"."""
    items = series_items(kind, steps)
    s = PerturbationSeries(image, cam, steps, baseline, blur_sigma, blur=kind != "deletion")
    out = np.empty((len(items), *np.shape(image)), dtype=np.float32)
    for j, i in enumerate(items):
        s.item(i, out[j])
    return out


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (max-shifted); a row with a non-finite logit gives NaN probabilities."""
    z = np.asarray(logits, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def batched(n: int, size: int) -> Sequence[Tuple[int, int]]:
    """(start, stop) of consecutive runs of at most `size` out of n."""
    size = max(1, int(size))
    return [(i, min(n, i + size)) for i in range(0, n, size)]


__all__ = [
    "Baseline", "KINDS", "PerturbationSeries", "align_corners_matrix", "baseline_image", "batched", "blur_matrix", "check_blur_sigma",
    "default_blur_sigma", "gaussian_blur", "gaussian_kernel", "linear_resize_matrix", "perturbation_inputs", "pixel_counts", "pixel_ranks",
    "reflect101", "resize_linear", "rise_grid", "rise_masks", "rise_masks_from_grid", "scorecam_masks", "series_items", "softmax_rows",
    "upsample_align_corners",
]
