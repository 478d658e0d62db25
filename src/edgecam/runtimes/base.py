"""The Runtime interface: load an artifact, run a batch, return {"logits", "features"}.

Device-side code: imports only the standard library and numpy, runs on Python >= 3.8 (boards ship their own
Python), so no PEP 604 unions at runtime and no torch. A runtime module imports its backend lazily (in `_load`
and the class methods), never at module level: the host reads `format` and `modules` from the class, and the
agent's probe imports every runtime module, without either importing a backend.
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any, ClassVar, Dict, Optional, Tuple

import numpy as np


#: the `format` of a runtime that loads any artifact (the null runtime)
ANY_FORMAT = "*"


class Runtime:
    """One loaded model. Subclasses set `name`, `format` and `modules`, and implement `_load` and `run`."""

    name: ClassVar[str] = "runtime"
    #: the artifact format it loads ("onnx", "tflite", ...; ANY_FORMAT for every one): the sweep pairs
    #: runtimes with artifacts by it
    format: ClassVar[str]
    #: the backend's importable modules, preferred first, any one of which suffices (what the agent's probe
    #: looks for on a device); empty for a runtime that needs no backend
    modules: ClassVar[Tuple[str, ...]] = ()
    #: the settings a `[[runtimes]]` entry may give this runtime besides name / threads / providers, each with
    #: what it does: `check_options` validates them, and an entry naming another runtime's option is told whose
    #: it is (config.RuntimeSpec)
    option_help: ClassVar[Dict[str, str]] = {}
    #: the options whose value names a program the device runs (`edgecam run` asks for --allow-code)
    program_options: ClassVar[Tuple[str, ...]] = ()

    def __init__(self, model_path: str, threads: Optional[int] = None, **options: Any) -> None:
        self.model_path = str(model_path)
        self.threads = threads
        self.options = options
        manifest_path = os.path.join(os.path.dirname(self.model_path), "manifest.json")
        self.manifest: Dict[str, Any] = {}
        if os.path.isfile(manifest_path):
            with open(manifest_path) as f:
                self.manifest = json.load(f)
        self._load()

    def _load(self) -> None:
        raise NotImplementedError

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run one batch; `feeds` maps input name -> array; returns {"logits", "features"} as numpy."""
        raise NotImplementedError

    #: whether `run_timed` runs another engine than `run` (the agent then times both)
    times_logits_apart: ClassVar[bool] = False

    def run_timed(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The forward the latency columns time: `run`, unless the backend has a logits-only engine (TensorRT,
        where marking the CAM layer as an output can stop fusion)."""
        return self.run(feeds)

    def profile(self) -> Dict[str, Any]:
        """The backend's own profiler output for the timed forward (TensorRT's trtexec), {} where there is none."""
        return {}

    def close(self) -> None:
        """Release the session (idempotent)."""

    def describe(self) -> Dict[str, Any]:
        """What actually ran (version, providers, threads), recorded in the results."""
        return {"runtime": self.name, "version": self.version(), "threads": self.threads}

    @classmethod
    def check_options(cls, options: Dict[str, Any]) -> Dict[str, Any]:
        """`options` (keys from `option_help`) validated and normalised for a job; a bad value raises ValueError
        "key: what was expected, got what". The base accepts every declared key as it is."""
        return dict(options)

    @classmethod
    def backend_columns(cls, result: Dict[str, Any]) -> Dict[str, float]:
        """The latency row's columns that only this backend measures, read from a job's result (a device's
        answer: keep only finite numbers of the right shape); none by default."""
        return {}

    @classmethod
    def is_available(cls) -> bool:
        """Whether one of `modules` imports here (always, for a runtime without a backend)."""
        for module in cls.modules:
            try:
                importlib.import_module(module)
            except ImportError:
                continue
            return True
        return not cls.modules

    @classmethod
    def version(cls) -> str:
        return "n/a"

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def contract_input(x: np.ndarray, contract: Dict[str, Any], quantize: bool) -> np.ndarray:
    """edgecam's NCHW float32 batch as a model file takes it (its manifest's `contract`, issue 34): in the file's
    layout, and, with `quantize`, as its integer type with the input's own scale and zero point (real = scale x
    (q - zero point)), for backends that do not quantize an integer input themselves."""
    x = np.asarray(x, dtype=np.float32)
    if contract.get("layout") == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    dtype = np.dtype(contract.get("dtype") or "float32")
    if quantize and dtype.kind in "iu":
        info = np.iinfo(dtype)
        x = np.clip(np.round(x / float(contract["scale"])) + int(contract["zero_point"]), info.min, info.max).astype(dtype)
    return x


def contract_outputs(outs: Dict[str, np.ndarray], contract: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """A model file's `logits` and `features` as edgecam's: features NCHW, the class offset (a background class
    first) dropped from the logits, nothing else."""
    logits = np.asarray(outs["logits"], dtype=np.float32).reshape(len(outs["logits"]), -1)
    offset = int(contract.get("label_offset") or 0)
    features = np.asarray(outs["features"], dtype=np.float32)
    if contract.get("features_layout") == "NHWC":
        features = np.ascontiguousarray(features.transpose(0, 3, 1, 2))
    return {"logits": np.ascontiguousarray(logits[:, offset:]), "features": features}
