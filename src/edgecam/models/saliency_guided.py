"""Saliency-guided training (Ismail, Corrada Bravo and Feizi, "Improving Deep Learning Interpretability by
Saliency Guided Training", NeurIPS 2021, Algorithm 1), the training-phase explanations arXiv 2411.05858 builds on.

At every step, for a batch X with labels y:
    S    = |d f_y(X) / d X|                       input-gradient saliency of the labelled class (Alg. 1, line 4; the magnitude: below)
    X~   = X with its k lowest-S features replaced by random values            (Alg. 1, lines 5-6)
    loss = CE(f(X), y) + lambda * KL(f(X) || f(X~))                            (Alg. 1, line 7; Eq. 3)
so the model learns to ignore the features its own gradient calls irrelevant, which sharpens its saliency
maps. Choices the papers leave open, and what edgecam does:
- "features" are input elements (pixels x channels); k = `mask_fraction` of them per image, the lowest by
  |gradient| (ties by position);
- the random values are uniform over the image's own value range [min X, max X] (Ismail et al. mask "with
  random values"; 2411.05858's abstract gives no detail), drawn from a seeded generator;
- the saliency is |gradient| (Algorithm 1 sorts the gradient; edgecam ranks by magnitude, so a strongly
  negative feature counts as salient), computed on the batch as it is (train mode: through BatchNorm's batch
  statistics, so an image's gradient carries a small term from the rest of its batch) and detached: it only
  picks the mask;
- both forwards run in train mode, so BatchNorm statistics see the masked batch too (as in Algorithm 1,
  where f is evaluated on X~ inside the training step); they are re-estimated on clean data after training
  (`models.train.recalibrate_batchnorm`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from edgecam.errors import ConfigError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class SaliencyGuidance:
    """k (`mask_fraction`, of the input features masked) and lambda (`kl_weight`) of Algorithm 1."""

    mask_fraction: float = 0.5
    kl_weight: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.mask_fraction < 1:
            raise ConfigError(f"saliency-guided training: mask_fraction (k) must be in (0, 1), got {self.mask_fraction}")
        if not 0 <= self.kl_weight < math.inf:
            raise ConfigError(f"saliency-guided training: kl_weight (lambda) must be a finite number >= 0, got {self.kl_weight}")


@dataclass
class GuidanceLog:
    """What the guided loss did, step by step: the KL term and the fraction of input features masked."""

    kl: list[float]
    masked_fraction: list[float]

    def summary(self) -> dict[str, float | int]:
        n = len(self.kl)
        tenth = max(1, n // 10)
        return {"sg_steps": n, "sg_kl_first": float(sum(self.kl[:tenth]) / tenth) if n else float("nan"),
                "sg_kl_last": float(sum(self.kl[-tenth:]) / tenth) if n else float("nan"),
                "sg_masked_fraction": float(sum(self.masked_fraction) / n) if n else float("nan")}


def masked_input(x: "torch.Tensor", saliency: "torch.Tensor", fraction: float, gen: "torch.Generator") -> tuple["torch.Tensor", float]:
    """X~ of Algorithm 1: the `fraction` least salient elements of each image replaced by uniform random
    values in that image's [min, max]; returns (X~, the fraction of elements that changed: below `fraction`
    only where an image is constant, whose range leaves nothing to draw)."""
    import torch

    flat = x.detach().flatten(1)
    k = int(round(fraction * flat.shape[1]))
    low = torch.argsort(saliency.detach().flatten(1), dim=1, stable=True)[:, :k]
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    noise = lo + (hi - lo) * torch.rand(flat.shape, generator=gen, dtype=flat.dtype)
    out = flat.clone()
    out.scatter_(1, low, noise.gather(1, low))
    return out.view_as(x), float((out != flat).double().mean())


def guided_loss(logits_of: Callable[["torch.Tensor"], "torch.Tensor"], x: "torch.Tensor", y: "torch.Tensor", guidance: SaliencyGuidance,
                gen: "torch.Generator", log: GuidanceLog | None = None, label_smoothing: float = 0.0) -> "torch.Tensor":
    """CE(f(X), y) + lambda KL(f(X) || f(X~)) (Algorithm 1, line 7), the KL term and masked fraction logged."""
    import torch
    import torch.nn.functional as F

    x = x.detach().requires_grad_(True)
    logits = logits_of(x)
    ce = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    (grad,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), x, retain_graph=True)
    masked, fraction = masked_input(x, grad.abs(), guidance.mask_fraction, gen)
    logits_masked = logits_of(masked)
    # F.kl_div(log q, log p, log_target=True) = sum p (log p - log q) = KL(p || q), p = f(X), q = f(X~)
    kl = F.kl_div(F.log_softmax(logits_masked, 1), F.log_softmax(logits, 1), log_target=True, reduction="batchmean")
    if log is not None:
        log.kl.append(float(kl.detach()))
        log.masked_fraction.append(fraction)
    return ce + guidance.kl_weight * kl
