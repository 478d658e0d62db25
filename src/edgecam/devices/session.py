"""The device as a function for the explain stage: forward passes and masked-input logits through the agent.

`DeviceSession` satisfies `edgecam.explain.cams.ForwardSession` (structurally: explain/ never imports
devices/). Its calls are charged to the "device" stage tag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgecam.stages import stage


class DeviceSession:
    """`session(x) -> {"logits"}` (or every output with `outputs=None`) for any number of inputs, sent to the
    agent in "forward" jobs of at most `max_inputs` (bounds what one job ships and holds). Masked-input CAMs
    and the faithfulness curves need only the logits back; not shipping the features makes a Score-CAM job
    ~3x lighter."""

    def __init__(self, device: Any, artifact_dir: str | Path, job: dict[str, Any], timeout: float | None = 600, max_inputs: int = 16384,
                 outputs: Sequence[str] | None = ("logits",), batch_size: int = 16) -> None:
        self.device, self.artifact_dir, self.timeout, self.max_inputs = device, artifact_dir, timeout, max_inputs
        self.job = {**job, "mode": "forward", "output_batch_size": batch_size, **({"outputs": list(outputs)} if outputs is not None else {})}
        self.calls = 0
        self.inputs = 0

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        parts: dict[str, list[np.ndarray]] = {}
        with stage("device"):
            for i in range(0, len(x), self.max_inputs):
                _, out = self.device.run_job(self.artifact_dir, x[i : i + self.max_inputs], self.job, timeout=self.timeout)
                self.calls += 1
                self.inputs += len(x[i : i + self.max_inputs])
                for k, v in out.items():
                    parts.setdefault(k, []).append(v)
        return {k: np.concatenate(v) for k, v in parts.items()}

    def masked(self, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """Logits of images[i] * masks[i, k] for every i, k, (N * K, classes), image-major; the device does
        the multiplication, so only the (N, K, H, W) masks travel, in jobs of at most `max_inputs` products."""
        per_job = max(1, self.max_inputs // max(1, masks.shape[1]))
        out = []
        with stage("device"):
            for i in range(0, len(images), per_job):
                job = {**self.job, "mode": "masked"}
                _, res = self.device.run_job(self.artifact_dir, images[i : i + per_job], job, timeout=self.timeout, extra={"masks": masks[i : i + per_job]})
                self.calls += 1
                self.inputs += int(np.prod(masks[i : i + per_job].shape[:2]))
                out.append(res["logits"])
        return np.concatenate(out)
