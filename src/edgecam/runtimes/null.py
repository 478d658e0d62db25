"""The `null` runtime: returns zeros of the artifact's output shapes, to measure the harness's own overhead
(MLPerf LoadGen's and timm benchmark.py's practice: know what the measurement itself costs)."""

from __future__ import annotations

from typing import Dict

import numpy as np

from edgecam.runtimes.base import ANY_FORMAT, Runtime


class NullRuntime(Runtime):
    name = "null"
    format = ANY_FORMAT  # reads only the manifest's output shapes, never the model file

    def _load(self) -> None:
        shapes = self.manifest.get("output_shapes")
        if not shapes:
            raise ValueError("null runtime: %s has no manifest.json with output_shapes" % self.model_path)
        self.shapes = {k: [int(d) for d in v[1:]] for k, v in shapes.items()}

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        n = int(next(iter(feeds.values())).shape[0])
        return {k: np.zeros([n] + s, dtype=np.float32) for k, s in self.shapes.items()}
