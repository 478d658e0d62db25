"""A runtime with one option in one file: ONNX Runtime whose logits are divided by a temperature (`temperature`,
default 1), validated by the runtime itself, recorded in its description and read back as a latency column."""

from __future__ import annotations

import math
from typing import Any, Dict

import numpy as np

from edgecam.runtimes.onnxruntime import OnnxRuntime


class ScaledRuntime(OnnxRuntime):
    name = "scaled"
    option_help = {"temperature": "divide the logits by this positive number (default 1)"}

    @classmethod
    def check_options(cls, options: Dict[str, Any]) -> Dict[str, Any]:
        t = options.get("temperature", 1.0)
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not (math.isfinite(t) and t > 0):
            raise ValueError("temperature: expected a positive number, got %r" % (t,))
        return {"temperature": float(t)}

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out = dict(super().run(feeds))
        out["logits"] = out["logits"] / float(self.options.get("temperature", 1.0))
        return out

    def describe(self) -> Dict[str, Any]:
        return {**super().describe(), "temperature": float(self.options.get("temperature", 1.0))}

    @classmethod
    def backend_columns(cls, result: Dict[str, Any]) -> Dict[str, float]:
        described = result.get("runtime")
        t = described.get("temperature") if isinstance(described, dict) else None
        return {"temperature": float(t)} if isinstance(t, (int, float)) and math.isfinite(t) else {}
