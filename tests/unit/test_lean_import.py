"""`import edgecam` (and the device-side modules) must not import torch, onnxruntime or LiteRT."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "onnxruntime", "onnx", "ai_edge_litert", "tflite_runtime", "tensorrt", "cv2", "pandas")


@pytest.mark.parametrize("module", ["edgecam", "edgecam.config", "edgecam.cli", "edgecam.devices.agent", "edgecam.runtimes", "edgecam.runtimes.litert", "edgecam.exporters.tflite", "edgecam.explain.metrics", "edgecam.models"])
def test_import_is_lean(module: str) -> None:
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing {module} pulled in: {out}"
