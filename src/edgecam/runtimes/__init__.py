"""Runtime registry. Entries are "module:Class" strings, imported on first use so that neither the host
nor the device agent imports a backend it does not run (onnxruntime, ai_edge_litert, tensorrt, ...).

What a runtime can do is declared once, on its class (`format`, `modules`), and read from there through
`runtime_format` and `runtime_modules`: importing a runtime module imports numpy and edgecam.runtimes.base,
never the backend (see runtimes/base.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Tuple, Type

from edgecam.registry import Registry

if TYPE_CHECKING:
    from edgecam.runtimes.base import Runtime

RUNTIMES: Registry[str] = Registry("runtime")
RUNTIMES.add_lazy("onnxruntime", "edgecam.runtimes.onnxruntime:OnnxRuntime")
RUNTIMES.add_lazy("litert", "edgecam.runtimes.litert:LiteRtRuntime")
RUNTIMES.add_lazy("tensorrt", "edgecam.runtimes.tensorrt:TensorRtRuntime")  # on the board: builds the engine there
RUNTIMES.add_lazy("null", "edgecam.runtimes.null:NullRuntime")
RUNTIMES.add_lazy("fault", "edgecam.runtimes.fault:FaultRuntime")  # onnxruntime with injected faults (harness tests)


def runtime_class(name: str) -> "Type[Runtime]":
    """Import and return the Runtime class registered as `name` (unknown names list the known ones)."""
    return RUNTIMES.load(name)


def runtime_format(name: str) -> str:
    """The artifact format the runtime `name` loads ("onnx", "tflite", ... or "*" for any)."""
    return runtime_class(name).format


def runtime_modules() -> Tuple[str, ...]:
    """Every backend module some registered runtime can use, once each, in registry order: what the agent
    probes a device for."""
    seen: List[str] = []
    for name in RUNTIMES:
        seen.extend(m for m in runtime_class(name).modules if m not in seen)
    return tuple(seen)
