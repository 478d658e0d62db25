"""Faithfulness of a CAM through the model itself: Deletion and Insertion (Petsiuk et al., "RISE:
Randomized Input Sampling for Explanation of Black-box Models", BMVC 2018, Sec. 4.1).

Pixels are ranked by decreasing CAM value (a stable sort, so ties go in row-major order). Deletion replaces
the top-ranked pixels by a baseline (default 0, i.e. the dataset mean in normalised input space); insertion
starts from a Gaussian-blurred copy of the image and reveals the top-ranked original pixels. Both run in
``steps`` equal steps from 0% to 100% of the pixels (``steps + 1`` images each). The score of each image
is the softmax probability of the target class, and each metric is the area under its curve by the
trapezoidal rule over the fraction of pixels in [0, 1]. A faithful CAM makes the probability fall fast
(low Deletion AUC) and rise fast (high Insertion AUC).

``forward`` is the device session: every perturbed image goes through it, packed ``batch_size`` at a time
across images, so N images cost ``ceil(N * 2 * (steps + 1) / batch_size)`` calls (the fewest possible).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["Baseline", "Forward", "default_blur_sigma", "deletion_insertion", "faithfulness_from_logits", "faithfulness_rows", "perturbation_series", "rows_from_scores"]

#: ``forward(x)``: (B, C, H, W) float32 model inputs -> (B, num_classes) logits.
Forward = Callable[[np.ndarray], np.ndarray]
#: What deleted pixels become: ``"zero"`` (0.0, the dataset mean after normalisation), ``"blur"`` (the
#: blurred image, as on the insertion canvas), a number, or an array broadcastable to (C, H, W).
Baseline = str | float | np.ndarray

# The perturbation maths (pixel ranks, step counts, the blurred insertion canvas at sigma = max(H, W) / 8
# rather than RISE's 5 px, the baselines) is `edgecam.perturb`: pure numpy, so the device composes
# exactly the inputs the host would (`DeviceSession.perturb`); this module scores them.
from edgecam.perturb import PerturbationSeries as _Series  # noqa: E402
from edgecam.perturb import baseline_image as _baseline_image  # noqa: E402
from edgecam.perturb import check_blur_sigma as _sigma  # noqa: E402
from edgecam.perturb import default_blur_sigma  # noqa: E402
from edgecam.perturb import pixel_counts as _pixel_counts  # noqa: E402
from edgecam.perturb import softmax_rows  # noqa: E402


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_inputs(images: np.ndarray, cams: np.ndarray, targets: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(images, dtype=np.float32)
    c = np.asarray(cams)
    if x.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {x.shape}")
    if c.ndim != 3 or c.shape[0] != x.shape[0] or c.shape[1:] != x.shape[2:]:
        raise ValueError(f"cams must be (N, H, W) = ({x.shape[0]}, {x.shape[2]}, {x.shape[3]}) to match images {x.shape}, got {c.shape}")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"images must have at least one pixel, got shape {x.shape}")
    if not (np.issubdtype(c.dtype, np.number) or c.dtype == np.bool_):
        raise ValueError(f"cams must be numeric, got dtype {c.dtype}")
    t = np.asarray(targets)
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"targets must be a sequence of {x.shape[0]} class indices (one per image), got shape {t.shape}")
    if t.size and (not np.issubdtype(t.dtype, np.integer) or t.min() < 0):
        raise ValueError(f"targets must be non-negative integer class indices, got {t.tolist()}")
    return x, c, t.astype(np.int64)


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """Area under y(x) by the trapezoidal rule."""
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def _batches(
    make: Callable[[int], _Series], n: int, per_image: int, shape: tuple[int, ...], batch_size: int
) -> Iterator[tuple[np.ndarray, list[tuple[int, int, int]]]]:
    """Pack the perturbed images of images 0..n-1 into batches of at most ``batch_size``, in order.

    Yields (batch, spans), span = (image j, first item, count). Only the series being packed is held in
    memory (``make(j)`` builds image j's), so memory is bounded by one image's series plus one batch.
    """
    total = n * per_image
    j, i = 0, 0
    current = make(0)
    for start in range(0, total, batch_size):
        size = min(batch_size, total - start)
        batch = np.empty((size, *shape), dtype=np.float32)  # fresh each call: forward may keep or alter it
        spans: list[tuple[int, int, int]] = []
        slot = 0
        while slot < size:
            take = min(size - slot, per_image - i)
            for q in range(take):
                current.item(i + q, batch[slot + q])
            spans.append((j, i, take))
            slot += take
            i += take
            if i == per_image and j + 1 < n:
                j, i = j + 1, 0
                current = make(j)
        yield batch, spans


def faithfulness_rows(
    forward: Forward,
    images: np.ndarray,
    cams: np.ndarray,
    targets: Sequence[int],
    steps: int = 16,
    batch_size: int = 32,
    baseline: Baseline = "zero",
    blur_sigma: float | None = None,
) -> list[dict[str, Any]]:
    """Deletion / Insertion (RISE, Sec. 4.1) of N images at once, in as few ``forward`` calls as possible.

    ``images`` (N, C, H, W) normalised model inputs, ``cams`` (N, H, W), ``targets`` N class indices.
    Returns one dict per image: ``deletion_auc``, ``insertion_auc`` (floats in [0, 1]; NaN when the model
    returned a non-finite logit), ``deletion_curve``, ``insertion_curve`` ((steps + 1,) float64 softmax
    probabilities of the target) and ``fractions`` ((steps + 1,) fraction of pixels removed / revealed at
    each point, the x axis of the AUCs: exactly k / steps when H * W is a multiple of ``steps``).
    """
    steps = _check_int("steps", steps, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    x, c, t = _check_inputs(images, cams, targets)
    n = x.shape[0]
    if n == 0:
        return []
    h, w = x.shape[2:]
    _sigma(blur_sigma, h, w)  # validate the options before the first forward call
    _baseline_image(baseline, x[0], x[0])
    per_image = 2 * (steps + 1)
    scores = np.empty((n, per_image), dtype=np.float64)

    def make(j: int) -> _Series:
        return _Series(x[j], c[j], steps, baseline, blur_sigma)

    for batch, spans in _batches(make, n, per_image, x.shape[1:], batch_size):
        logits = np.asarray(forward(batch))
        if logits.ndim != 2 or logits.shape[0] != batch.shape[0]:
            raise ValueError(f"forward must return (batch, num_classes) logits; for a batch of {batch.shape[0]} it returned shape {logits.shape}")
        if t.max() >= logits.shape[1]:
            raise ValueError(f"target class {int(t.max())} is out of range for {logits.shape[1]} logits")
        probs = softmax_rows(logits)
        row = 0
        for j, first, count in spans:
            scores[j, first : first + count] = probs[row : row + count, t[j]]
            row += count
    return rows_from_scores(scores, steps, h * w)


def rows_from_scores(scores: np.ndarray, steps: int, n_pixels: int) -> list[dict[str, Any]]:
    """Per image (row of `scores`: target probabilities of deletion steps 0..steps then insertion steps
    0..steps) the AUCs and curves `faithfulness_rows` returns."""
    fractions = _pixel_counts(n_pixels, steps) / float(n_pixels)
    out = []
    for j in range(len(scores)):
        deletion, insertion = scores[j, : steps + 1].copy(), scores[j, steps + 1 :].copy()
        out.append({
            "deletion_auc": _trapezoid(deletion, fractions),
            "insertion_auc": _trapezoid(insertion, fractions),
            "deletion_curve": deletion,
            "insertion_curve": insertion,
            "fractions": fractions.copy(),
        })
    return out


def faithfulness_from_logits(logits: np.ndarray, targets: Sequence[int], steps: int, n_pixels: int) -> list[dict[str, Any]]:
    """`faithfulness_rows`' result from the logits of the perturbed inputs, (N * 2 * (steps + 1), classes)
    image-major, deletion then insertion: what a device session's "perturb" request returns."""
    t = np.asarray(targets, dtype=np.int64)
    probs = softmax_rows(np.asarray(logits)).reshape(len(t), 2 * (steps + 1), -1)
    return rows_from_scores(probs[np.arange(len(t)), :, t], steps, n_pixels)


def deletion_insertion(
    forward: Forward,
    image: np.ndarray,
    cam: np.ndarray,
    target: int,
    steps: int = 16,
    batch_size: int = 32,
    baseline: Baseline = "zero",
    blur_sigma: float | None = None,
) -> dict[str, Any]:
    """Deletion / Insertion AUCs and curves of one (C, H, W) image and its (H, W) CAM (RISE, Sec. 4.1).

    Lower ``deletion_auc`` and higher ``insertion_auc`` mean a more faithful CAM; see `faithfulness_rows`.
    """
    x = np.asarray(image)
    m = np.asarray(cam)
    if x.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {x.shape}")
    if m.shape != x.shape[1:]:
        raise ValueError(f"cam must be (H, W) = {x.shape[1:]} to match the image, got {m.shape}")
    return faithfulness_rows(forward, x[None], m[None], [target], steps, batch_size, baseline, blur_sigma)[0]


def perturbation_series(
    image: np.ndarray, cam: np.ndarray, steps: int = 16, baseline: Baseline = "zero", blur_sigma: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(deletion images, insertion images) of one image, each (steps + 1, C, H, W) float32: what
    `deletion_insertion` sends to the model, for inspection and plots. Step k removes / reveals the
    round(k * H * W / steps) highest-CAM pixels."""
    steps = _check_int("steps", steps, 1)
    x = np.asarray(image, dtype=np.float32)
    m = np.asarray(cam)
    if x.ndim != 3 or m.shape != x.shape[1:]:
        raise ValueError(f"image must be (C, H, W) and cam (H, W) of the same size, got {x.shape} and {m.shape}")
    s = _Series(x, m, steps, baseline, blur_sigma)
    out = np.empty((len(s), *x.shape), dtype=np.float32)
    for i in range(len(s)):
        s.item(i, out[i])
    return out[: steps + 1], out[steps + 1 :]
