"""edgecam: latency, memory and CAM fidelity of quantized vision models, measured on the device that runs them.

Importing the package is cheap: torch, onnxruntime and the other backends are imported inside the
functions that need them (a test guards this).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
