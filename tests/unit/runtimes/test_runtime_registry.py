"""The runtime registry: each runtime declares its artifact format and backend modules once, on its class,
and the host reads them from there without importing a backend."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgecam.errors import UnknownNameError
from edgecam.runtimes import RUNTIMES, runtime_class, runtime_format, runtime_modules
from edgecam.runtimes.base import ANY_FORMAT, Runtime
from edgecam.runtimes.litert import LiteRtRuntime

DECLARED = {  # name -> (format, modules)
    "onnxruntime": ("onnx", ("onnxruntime",)),
    "litert": ("tflite", ("ai_edge_litert", "tflite_runtime")),
    "tensorrt": ("tensorrt", ("tensorrt",)),
    "null": (ANY_FORMAT, ()),
    "fault": ("onnx", ("onnxruntime",)),
}


def test_every_runtime_declares_its_format_and_modules() -> None:
    assert RUNTIMES.names() == sorted(DECLARED)
    for name, (fmt, modules) in DECLARED.items():
        cls = runtime_class(name)
        assert issubclass(cls, Runtime) and cls.name == name
        assert runtime_format(name) == cls.format == fmt and cls.modules == modules
    assert ANY_FORMAT == "*"


def test_runtime_modules_lists_each_backend_once_in_registry_order() -> None:
    assert runtime_modules() == ("onnxruntime", "ai_edge_litert", "tflite_runtime", "tensorrt")  # fault's, litert's; null has none


def test_unknown_runtime_lists_the_known_ones() -> None:
    for lookup in (runtime_class, runtime_format):
        with pytest.raises(UnknownNameError, match=r"unknown runtime 'tensorflow'; known runtimes: fault, litert, null, onnxruntime, tensorrt$"):
            lookup("tensorflow")


def test_the_hand_written_format_and_module_lists_are_gone() -> None:
    """Formats and modules are read off the classes only (`runtime_format`, `runtime_modules`)."""
    import edgecam.runtimes

    for gone in ("RUNTIME_FORMATS", "RUNTIME_MODULES"):
        assert not hasattr(edgecam.runtimes, gone)
    assert {rt: runtime_format(rt) for rt in edgecam.runtimes.RUNTIMES} == {"fault": "onnx", "litert": "tflite", "null": "*", "onnxruntime": "onnx", "tensorrt": "tensorrt"}


def test_reading_capabilities_imports_no_backend() -> None:
    code = (
        "import sys; from edgecam.runtimes import RUNTIMES, runtime_format, runtime_modules, runtime_class;"
        "[runtime_format(n) for n in RUNTIMES]; runtime_modules(); [runtime_class(n) for n in RUNTIMES];"
        "print(sorted(m for m in ('onnxruntime', 'ai_edge_litert', 'tflite_runtime', 'tensorrt', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_is_available_accepts_any_declared_module(monkeypatch: pytest.MonkeyPatch) -> None:
    class Missing(Runtime):
        name, format, modules = "missing", "onnx", ("edgecam_no_such_backend",)

    assert Missing.is_available() is False
    assert runtime_class("null").is_available() is True  # no backend needed
    assert runtime_class("onnxruntime").is_available() is True  # installed in the dev environment
    monkeypatch.setattr(LiteRtRuntime, "modules", ("edgecam_no_such_backend", "ai_edge_litert"))
    assert LiteRtRuntime.is_available() is True  # the alternative suffices
    monkeypatch.setattr(LiteRtRuntime, "modules", ("edgecam_no_such_backend",))
    assert LiteRtRuntime.is_available() is False and LiteRtRuntime.version() == "not installed"
