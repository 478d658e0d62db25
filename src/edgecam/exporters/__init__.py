"""Exporter registry: format name -> "module:Class", imported on first use (the formats' converters are heavy).

An exporter declares what it can do on its class (`supported` precisions, `host_simulation`, its fp32
tolerance); `exporter_class` is how the rest of edgecam reaches it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecam.registry import Registry

if TYPE_CHECKING:
    from edgecam.exporters.base import Exporter

EXPORTERS: Registry[str] = Registry("export format")
EXPORTERS.add_lazy("onnx", "edgecam.exporters.onnx:OnnxExporter")
EXPORTERS.add_lazy("tflite", "edgecam.exporters.tflite:TfliteExporter")
EXPORTERS.add_lazy("tensorrt", "edgecam.exporters.tensorrt:TensorRTExporter")


def exporter_class(name: str) -> "type[Exporter]":
    """The Exporter class registered as `name` (unknown names list the known ones)."""
    return EXPORTERS.load(name)
