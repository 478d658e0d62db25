"""The device as a function for the explain stage: forward passes, masked-input logits and the perturbation
ops (Score-CAM, RISE, Deletion / Insertion) through one persistent agent per artifact.

`DeviceSession` satisfies `edgecam.explain.cams.ForwardSession` (structurally: explain/ never imports
devices/). It opens its `PersistentSession` (`Device.session`) on first use, so the runtime and the model
load once for all the explain stage's calls, and charges every call to the "device" stage tag. Close it (or
use it as a context manager) to end the agent and clear its folder on the device.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from edgecam.devices.answers import declared_shapes
from edgecam.stages import stage

if TYPE_CHECKING:
    from edgecam.devices.persistent import PersistentSession

#: bytes of inputs (or images + masks) per request: bounds what one frame moves and the agent holds at once
MAX_REQUEST_BYTES = 256 << 20


class DeviceSession:
    """`session(x) -> {"logits"}` (or every output with `outputs=None`) for any number of inputs, sent to the
    agent in "forward" requests of at most `max_inputs` inputs (and MAX_REQUEST_BYTES). Masked-input CAMs and
    the faithfulness curves need only the logits back; not shipping the features makes a request ~3x lighter.

    `calls` counts the requests sent, `inputs` the model inputs they stand for (masked inputs composed on
    the device included); `bytes_sent` / `bytes_received` are the frames on the wire."""

    def __init__(self, device: Any, artifact_dir: str | Path, job: dict[str, Any], timeout: float | None = 600, max_inputs: int = 16384,
                 outputs: Sequence[str] | None = ("logits",), batch_size: int = 16) -> None:
        self.device, self.artifact_dir, self.timeout, self.max_inputs = device, artifact_dir, timeout, max_inputs
        self.outputs = None if outputs is None else tuple(outputs)
        self.job = {**job, "output_batch_size": batch_size}
        self.calls = 0
        self.inputs = 0
        self._session: "PersistentSession | None" = None
        self._lock = threading.Lock()  # one request at a time: the explain stage's prefetch worker shares the session
        self._shapes: dict[str, tuple[int, ...]] = declared_shapes(artifact_dir)  # each output's per-item shape: the
        # artifact's own (its manifest), else the device's first answer

    @property
    def session(self) -> "PersistentSession":
        """The persistent session, opened on first use (the artifact is pushed once, the agent started lazily)."""
        if self._session is None:
            self._session = self.device.session(self.artifact_dir, self.job, self.timeout)
        return self._session

    def _request(self, op: str, inputs: int, *args: Any) -> Any:
        """`PersistentSession.<op>(*args)`, one request at a time on this session, counted (`calls`, `inputs`)."""
        with self._lock:
            out = getattr(self.session, op)(*args)
            self.calls += 1
            self.inputs += inputs
            return out

    @property
    def bytes_sent(self) -> int:
        return self._session.bytes_sent if self._session is not None else 0

    @property
    def bytes_received(self) -> int:
        return self._session.bytes_received if self._session is not None else 0

    def _checked(self, name: str, arr: Any, rows: int) -> np.ndarray:
        """A device's answer as the host will use it, or JobFailed: a numeric array of `rows` items whose shape
        per item is the one this output had in the device's first answer (a broken or hostile board answering
        another shape, an object array or a string fails its job here, not somewhere deep in a CAM)."""
        from edgecam.devices.errors import JobFailed

        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiub" or arr.ndim < 1:
            raise JobFailed(f"the device answered {name} as {type(arr).__name__} {getattr(arr, 'dtype', '')}, expected a numeric array")
        if arr.shape[0] != rows:
            raise JobFailed(f"the device answered {arr.shape[0]} rows of {name} for {rows} inputs")
        known = self._shapes.setdefault(name, tuple(arr.shape[1:]))
        if tuple(arr.shape[1:]) != known:
            raise JobFailed(f"the device answered {name} of shape {tuple(arr.shape[1:])} per input, expected {known}")
        return arr

    def _per_request(self, item_bytes: int, limit: int) -> int:
        return max(1, min(limit, MAX_REQUEST_BYTES // max(1, item_bytes)))

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The session's default outputs (`outputs` of the constructor) for inputs `x`."""
        return self.forward(x, self.outputs)

    def forward(self, x: np.ndarray, outputs: Sequence[str] | None = ("logits",)) -> dict[str, np.ndarray]:
        """The outputs named in `outputs` (all of them for None) for any number of inputs `x`."""
        parts: dict[str, list[np.ndarray]] = {}
        step = self._per_request(int(np.prod(x.shape[1:])) * 4, self.max_inputs)
        with stage("device"):
            for i in range(0, len(x), step):
                out = self._request("forward", len(x[i : i + step]), x[i : i + step], outputs)
                if outputs is not None and not set(outputs) <= set(out):
                    from edgecam.devices.errors import JobFailed

                    raise JobFailed(f"the device answered {sorted(out)}, expected {list(outputs)}")
                for k, v in out.items():
                    parts.setdefault(k, []).append(self._checked(k, v, len(x[i : i + step])))
        return {k: np.concatenate(v) for k, v in parts.items()}

    def masked(self, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """Logits of images[i] * masks[i, k] for every i, k, (N * K, classes), image-major; the device does
        the multiplication, so only the (N, K, H, W) masks travel, at most `max_inputs` products a request."""
        k = max(1, masks.shape[1])
        per_image = (int(np.prod(images.shape[1:])) + int(np.prod(masks.shape[1:]))) * 4
        step = self._per_request(per_image, max(1, self.max_inputs // k))
        out = []
        with stage("device"):
            for i in range(0, len(images), step):
                n = int(np.prod(masks[i : i + step].shape[:2]))
                out.append(self._checked("logits", self._request("masked", n, images[i : i + step], masks[i : i + step]), n))
        return np.concatenate(out)

    def scorecam(self, images: np.ndarray, maps: np.ndarray, max_inputs: int = 256) -> np.ndarray:
        """Score-CAM's masked logits (N * K, classes) from the (N, K, h, w) CAM-layer maps; the device
        upsamples and normalises them (see `PersistentSession.scorecam`)."""
        per_image = (int(np.prod(images.shape[1:])) + int(np.prod(maps.shape[1:]))) * 4
        step = self._per_request(per_image, len(images) or 1)
        out = []
        with stage("device"):
            for i in range(0, len(images), step):
                n = len(images[i : i + step]) * maps.shape[1]
                out.append(self._checked("logits", self._request("scorecam", n, images[i : i + step], maps[i : i + step], max_inputs), n))
        return np.concatenate(out)

    def rise(self, images: np.ndarray, targets: Sequence[int], n_masks: int, cells: int, p: float = 0.5, seed: int = 0, max_inputs: int = 256) -> np.ndarray:
        """RISE saliency (N, H, W) float32, masks generated on the device (see `PersistentSession.rise`)."""
        t = np.asarray(targets, dtype=np.int64).reshape(-1)
        step = self._per_request(int(np.prod(images.shape[1:])) * 4, len(images) or 1)
        out = []
        with stage("device"):
            for i in range(0, len(images), step):
                out.append(self._checked("rise", self._request("rise", len(images[i : i + step]) * n_masks, images[i : i + step], t[i : i + step], n_masks, cells, p, seed, max_inputs),
                                         len(images[i : i + step])))
        return np.concatenate(out)

    def perturb(self, images: np.ndarray, cams: np.ndarray, steps: int, kind: str = "both", baseline: Any = "zero", blur_sigma: float | None = None) -> np.ndarray:
        """Deletion / Insertion logits composed on the device (see `PersistentSession.perturb`)."""
        per_image = int(np.prod(images.shape[1:])) * 4 + int(np.prod(cams.shape[1:])) * 8
        step = self._per_request(per_image, len(images) or 1)
        per_series = (steps + 1) * (2 if kind == "both" else 1)
        out = []
        with stage("device"):
            for i in range(0, len(images), step):
                out.append(self._checked("logits", self._request("perturb", len(images[i : i + step]) * per_series, images[i : i + step], cams[i : i + step], steps, kind,
                                                       baseline, blur_sigma), len(images[i : i + step]) * per_series))
        return np.concatenate(out)

    def close(self) -> None:
        """End the agent and remove its folder on the device (idempotent; a later call opens a new session)."""
        with self._lock:  # after the request in flight, if any
            session, self._session = self._session, None
        if session is not None:
            session.close()

    def __enter__(self) -> "DeviceSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
