"""Localisation from a CAM: WSOL boxes and MaxBoxAcc (Choe et al., "Evaluating Weakly Supervised Object
Localization Methods Right", CVPR 2020, Sec. 4.1) and the energy-based pointing game (Wang et al.,
Score-CAM, CVPRW 2020, Sec. 5.2). Boxes are (x0, y0, x1, y1) in inclusive pixel coordinates."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

Box = tuple[int, int, int, int]


def box_from_mask(mask: np.ndarray) -> Optional[Box]:
    """Tight box around the true pixels of a 2-D mask; None for an empty mask."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    ys, xs = np.nonzero(m)
    if ys.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def boxes_from_cam(cam: np.ndarray, thresholds: Sequence[float]) -> list[Optional[Box]]:
    """For each threshold t: the box around the largest 8-connected component of cam >= t * max(cam)
    (Choe et al. 2020 keep the largest component); None when nothing passes (an all-zero or NaN CAM)."""
    from scipy import ndimage

    c = np.nan_to_num(np.asarray(cam, dtype=np.float64), nan=0.0)
    if c.ndim != 2:
        raise ValueError(f"cam must be 2-D, got shape {c.shape}")
    top = float(c.max())
    out: list[Optional[Box]] = []
    for t in thresholds:
        if top <= 0:
            out.append(None)
            continue
        labels, n = ndimage.label(c >= t * top, structure=np.ones((3, 3)))
        if n == 0:
            out.append(None)
            continue
        sizes = np.bincount(labels.ravel())[1:]
        out.append(box_from_mask(labels == 1 + int(np.argmax(sizes))))
    return out


def box_iou(a: Optional[Box], b: Optional[Box]) -> float:
    """Intersection over union of two inclusive pixel boxes; 0 when either is None."""
    if a is None or b is None:
        return 0.0
    ix = min(a[2], b[2]) - max(a[0], b[0]) + 1
    iy = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = max(0, ix) * max(0, iy)
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return float(inter / (area(a) + area(b) - inter))


def max_box_acc(cams: Sequence[np.ndarray], gt_boxes: Sequence[Optional[Box]], thresholds: Sequence[float], iou_threshold: float = 0.5) -> dict[str, float]:
    """MaxBoxAcc (Choe et al. 2020, Eq. 1): the best over thresholds of the share of images whose CAM box
    has IoU >= `iou_threshold` with the ground-truth box."""
    if len(cams) != len(gt_boxes):
        raise ValueError(f"{len(cams)} CAMs but {len(gt_boxes)} ground-truth boxes")
    hits = np.zeros(len(thresholds))
    for cam, gt in zip(cams, gt_boxes):
        hits += np.array([box_iou(b, gt) >= iou_threshold for b in boxes_from_cam(cam, thresholds)])
    acc = hits / max(1, len(cams))
    best = int(np.argmax(acc))
    return {"max_box_acc": float(acc[best]), "best_threshold": float(thresholds[best])}


def energy_pointing_game(cam: np.ndarray, region: np.ndarray) -> float:
    """Share of the min-max normalised CAM's energy inside the object region (a boolean mask of the CAM's
    shape), Wang et al. 2020, Sec. 5.2: in [0, 1]; nan for an all-zero or non-finite CAM."""
    from edgecam.explain.metrics import normalize_map

    c = np.asarray(cam, dtype=np.float64)
    r = np.asarray(region, dtype=bool)
    if c.shape != r.shape:
        raise ValueError(f"cam and region must have the same shape, got {c.shape} and {r.shape}")
    if not np.isfinite(c).all():
        return float("nan")
    n = normalize_map(c)
    total = float(n.sum())
    if total == 0.0:
        return float("nan")
    return float(n[r].sum() / total)
