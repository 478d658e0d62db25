"""Faithfulness of a CAM, measured on the device: Deletion and Insertion (Petsiuk et al., RISE, BMVC 2018,
Sec. 4.1). Pixels are removed from the image (deletion: set to a baseline) or revealed on a blurred copy
(insertion) in decreasing CAM order, in equal steps from 0% to 100%; the score at each step is the softmax
probability of the target class; the metric is the area under that curve (trapezoidal rule over the
fraction of pixels). A faithful CAM makes the probability fall fast (low deletion AUC) and rise fast (high
insertion AUC). All perturbed images go through `forward` (the device session) in as few calls as possible.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

Forward = Callable[[np.ndarray], np.ndarray]  # (B, C, H, W) float32 -> (B, classes) logits


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-blurred copy per channel (the insertion canvas, RISE Sec. 4.1)."""
    import cv2

    return np.stack([cv2.GaussianBlur(np.ascontiguousarray(c, dtype=np.float32), (0, 0), sigma) for c in image])


def perturbation_series(image: np.ndarray, cam: np.ndarray, steps: int, baseline: float = 0.0, blur_sigma: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(deletion images, insertion images), each (steps + 1, C, H, W): step k removes / reveals the
    round(k / steps * H * W) highest-CAM pixels (stable order on ties)."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 3 or np.asarray(cam).shape != img.shape[1:]:
        raise ValueError(f"image must be (C, H, W) and cam (H, W) of the same size, got {img.shape} and {np.asarray(cam).shape}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    h, w = img.shape[1:]
    order = np.argsort(-np.nan_to_num(np.asarray(cam, dtype=np.float64), nan=-np.inf).ravel(), kind="stable")
    counts = np.round(np.linspace(0, h * w, steps + 1)).astype(int)
    rank = np.empty(h * w, dtype=np.int64)
    rank[order] = np.arange(h * w)
    chosen = rank[None, :] < counts[:, None]  # (steps + 1, H*W): pixel already removed / revealed at step k
    chosen = chosen.reshape(steps + 1, 1, h, w)
    blurred = _blur(img, blur_sigma if blur_sigma is not None else max(h, w) / 8)
    deletion = np.where(chosen, np.float32(baseline), img[None])
    insertion = np.where(chosen, img[None], blurred[None])
    return deletion.astype(np.float32), insertion.astype(np.float32)


def _auc(curve: np.ndarray) -> float:
    x = np.linspace(0.0, 1.0, len(curve))
    return float(np.sum((curve[1:] + curve[:-1]) * np.diff(x)) / 2)


def faithfulness_rows(
    forward: Forward, images: np.ndarray, cams: np.ndarray, targets: Sequence[int], steps: int = 16, batch_size: int = 4096,
    baseline: float = 0.0, blur_sigma: float | None = None,
) -> list[dict[str, Any]]:
    """Deletion / Insertion for every image: `{"deletion_auc", "insertion_auc", "deletion_curve",
    "insertion_curve"}` each. The perturbed images of several images are sent together, at most
    `batch_size` per `forward` call. `baseline` 0 is the dataset mean in normalised input space."""
    images = np.asarray(images, dtype=np.float32)
    if len(images) != len(cams) or len(images) != len(targets):
        raise ValueError(f"images, cams and targets must have the same length, got {len(images)}, {len(cams)}, {len(targets)}")
    per_image = 2 * (steps + 1)
    group = max(1, batch_size // per_image)  # images whose perturbed copies fit one call (bounds memory too)
    probs_parts = []
    for g in range(0, len(images), group):
        series = [np.concatenate(perturbation_series(img, cam, steps, baseline, blur_sigma)) for img, cam in zip(images[g : g + group], cams[g : g + group])]
        stacked = np.concatenate(series)
        probs_parts += [_softmax(forward(stacked[i : i + batch_size])) for i in range(0, len(stacked), batch_size)]
    if not probs_parts:
        return []
    probs = np.concatenate(probs_parts)
    out = []
    for j, t in enumerate(targets):
        p = probs[j * per_image : (j + 1) * per_image, int(t)]
        dc, ic = p[: steps + 1], p[steps + 1 :]
        out.append({"deletion_auc": _auc(dc), "insertion_auc": _auc(ic), "deletion_curve": dc, "insertion_curve": ic})
    return out


def deletion_insertion(forward: Forward, image: np.ndarray, cam: np.ndarray, target: int, steps: int = 16, batch_size: int = 4096, baseline: float = 0.0, blur_sigma: float | None = None) -> dict[str, Any]:
    """Deletion / Insertion AUCs and curves of one image (see `faithfulness_rows`)."""
    return faithfulness_rows(forward, np.asarray(image)[None], np.asarray(cam)[None], [target], steps, batch_size, baseline, blur_sigma)[0]
