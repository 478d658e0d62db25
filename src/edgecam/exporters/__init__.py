"""Exporter registry: format name -> "module:Class", imported on first use (the formats' converters are heavy).

An exporter declares what it can do on its class (`supported` precisions, `host_simulation`, its fp32
tolerance); `exporter_class` is how the rest of edgecam reaches it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from edgecam.registry import Registry

if TYPE_CHECKING:
    from edgecam.exporters.base import Exporter

EXPORTERS: Registry[str] = Registry("export format")
EXPORTERS.add("onnx", "edgecam.exporters.onnx:OnnxExporter")
EXPORTERS.add("tflite", "edgecam.exporters.tflite:TfliteExporter")
EXPORTERS.add("tensorrt", "edgecam.exporters.tensorrt:TensorRTExporter")


def exporter_class(name: str) -> "type[Exporter]":
    """The Exporter class registered as `name` (unknown names list the known ones)."""
    module, _, attr = EXPORTERS.get(name).partition(":")
    return getattr(importlib.import_module(module), attr)
