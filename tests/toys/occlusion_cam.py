"""A device-forward CAM method with one option in one file: occlusion (Zeiler & Fergus, ECCV 2014, Sec. 4.2).
Each cell of an `occlusion_grid` x `occlusion_grid` partition of the image is blanked in turn; the drop of the
target logit is the cell's saliency. The device runs the occluded images (`ForwardSession.masked`: only the masks
travel; the device multiplies)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from edgecam.explain.cams import CamContext, CamMethod

def occlusion_masks(height: int, width: int, grid: int) -> np.ndarray:
    """(grid * grid, height, width) masks: 1 everywhere but one cell, row-major."""
    ys, xs = np.linspace(0, height, grid + 1).astype(int), np.linspace(0, width, grid + 1).astype(int)
    masks = np.ones((grid * grid, height, width), np.float32)
    for k in range(grid * grid):
        r, c = divmod(k, grid)
        masks[k, ys[r] : ys[r + 1], xs[c] : xs[c + 1]] = 0.0
    return masks


class OcclusionCam(CamMethod):
    name = "occlusion"
    modes = ("surrogate",)
    needs_activations = False
    needs_forward = True
    option_help = {"occlusion_grid": "cells a side (default 4): grid x grid device forwards per image"}

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        grid = options.get("occlusion_grid", 4)
        if isinstance(grid, bool) or not isinstance(grid, int) or not 1 <= grid <= 64:
            raise ValueError(f"occlusion_grid: expected an integer from 1 to 64, got {grid!r}")
        return {"occlusion_grid": grid}

    @classmethod
    def device_work(cls, n_img: int, input_shape: tuple[int, ...], feature_shape: tuple[int, ...], options: Mapping[str, Any]) -> tuple[int, int]:
        """One forward per cell and image, plus the unoccluded one; the image and its masks travel."""
        cells = cls.check_options(options)["occlusion_grid"] ** 2
        return n_img * (cells + 1), n_img * (int(np.prod(input_shape)) + (cells + 1) * int(np.prod(input_shape[1:]))) * 4

    def __call__(self, ctx: CamContext, features: np.ndarray, targets: Sequence[int]) -> np.ndarray:
        if ctx.forward is None:
            raise ValueError("occlusion needs a device session (CamContext.forward)")
        images = np.asarray(ctx.images, dtype=np.float32)
        n, _, h, w = images.shape
        masks = occlusion_masks(h, w, self.check_options(ctx.options)["occlusion_grid"])
        k = len(masks)
        with_all = np.concatenate([masks, np.ones((1, h, w), np.float32)])  # the last "mask" keeps every pixel
        logits = ctx.forward.masked(images, np.broadcast_to(with_all, (n, k + 1, h, w))).reshape(n, k + 1, -1)
        idx = np.asarray(targets, dtype=np.int64)
        scores = logits[np.arange(n), :, idx]  # (n, k + 1)
        drop = np.maximum(scores[:, k:] - scores[:, :k], 0.0)  # how much hiding each cell costs the target
        return np.einsum("nk,khw->nhw", drop, 1.0 - masks).astype(np.float32)
