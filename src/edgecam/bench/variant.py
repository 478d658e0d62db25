"""A deployed variant: model x format x precision x runtime, and what its device run produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


#: `Variant.reference` of a model that has no float reference (TFLite files only): "v. fp32" is not measured (NaN)
NO_REFERENCE = "(no float reference)"


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
    preds: np.ndarray | None = None  # top-1 per test image (-1: not predicted), filled shard by shard
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
