"""Runtime registry. Entries are "module:Class" strings, imported on first use so that neither the host
nor the device agent imports a backend it does not run (onnxruntime, ai_edge_litert, tensorrt, ...)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Type

from edgecam.registry import Registry

if TYPE_CHECKING:
    from edgecam.runtimes.base import Runtime

RUNTIMES: Registry[str] = Registry("runtime")
RUNTIMES.add("onnxruntime", "edgecam.runtimes.onnxruntime:OnnxRuntime")
RUNTIMES.add("litert", "edgecam.runtimes.litert:LiteRtRuntime")
RUNTIMES.add("null", "edgecam.runtimes.null:NullRuntime")
RUNTIMES.add("fault", "edgecam.runtimes.fault:FaultRuntime")  # onnxruntime with injected faults (harness tests)

# which artifact format each runtime loads
RUNTIME_FORMATS = {"onnxruntime": "onnx", "litert": "tflite", "null": "*", "fault": "onnx"}


def runtime_class(name: str) -> "Type[Runtime]":
    """Import and return the Runtime class registered as `name` (unknown names list the known ones)."""
    module, _, attr = RUNTIMES.get(name).partition(":")
    return getattr(importlib.import_module(module), attr)
