"""A deployed variant: model x format x precision x runtime, and what its device run produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


#: `Variant.reference` of a model that has no float reference (TFLite files only): "v. fp32" is not measured (NaN)
NO_REFERENCE = "(no float reference)"

#: `Variant.preds` / a shard's stored top-1 where there is no prediction: the image was not predicted (its shard
#: failed), or the device's outputs for it were not finite (NaN / Inf: an argmax of them is garbage, not class 0).
#: Accuracy and agreement count only predictions >= 0; `NONFINITE` ones are counted apart (`nonfinite_outputs`).
NOT_PREDICTED = -1
NONFINITE = -2


def finite_top1(logits: np.ndarray, *others: np.ndarray) -> np.ndarray:
    """Top-1 per row of `logits`, `NONFINITE` where that row (or the same row of any of `others`, e.g. the
    features the CAMs are made from) holds a NaN or Inf: never a class read off garbage."""
    logits = np.asarray(logits)
    finite = np.isfinite(logits).reshape(len(logits), -1).all(1)
    for o in others:
        o = np.asarray(o)
        finite &= np.isfinite(o).reshape(len(o), -1).all(1)
    return np.where(finite, logits.reshape(len(logits), -1).argmax(1), NONFINITE).astype(np.int64)


@dataclass
class Variant:
    """One deployed model: model x format x precision x runtime, and what running it produced."""

    model: str
    format: str
    precision: str
    runtime: str
    artifact_dir: Path
    manifest: dict[str, Any]
    result: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    preds: np.ndarray | None = None  # top-1 per test image (NOT_PREDICTED, NONFINITE: none), filled shard by shard
    error: str | None = None
    #: the key of the variant "v. fp32" compares against when it is not the fp32 sibling: a model given by its files
    #: (issue 34) has one float reference (its fp32 ONNX, or one dequantized from its QDQ ONNX) for every file
    reference: str | None = None

    @property
    def key(self) -> str:
        return f"{self.model}-{self.format}-{self.precision}-{self.runtime}"

    @property
    def fp32_key(self) -> str:
        """The key of what "v. fp32" compares against: the fp32 sibling (same model, format and runtime), or the
        model's float reference (`reference`)."""
        return self.reference or f"{self.model}-{self.format}-fp32-{self.runtime}"

    @property
    def family(self) -> str:
        """Model, format and runtime: variants of one family differ only in precision."""
        return f"{self.model}-{self.format}-{self.runtime}"

    @property
    def precision_effective(self) -> str:
        return str(self.manifest.get("precision_effective", self.precision))

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def nonfinite_outputs(self) -> int:
        """Test images whose outputs on the device were NaN / Inf (left out of accuracy and agreement)."""
        return int((self.preds == NONFINITE).sum()) if self.preds is not None else 0
