"""The `fault` runtime: ONNX Runtime with a fault injected on purpose, to prove that a harness (edgecam's, and
the user's device set-up) survives what real boards do: a runtime that segfaults, is OOM-killed, runs out
of memory, hangs, exits, raises, or returns NaN. Chaos testing in the spirit of Netflix's Chaos Monkey;
edgecam's own fault tests run sweeps on it.

Options (from `[[runtimes]] name = "fault"`, `fault = "..."`, `fault_precisions = [...]`): the fault fires in
the first `run` call of an artifact whose precision is listed (every precision when the list is empty).
Device-side code: standard library and numpy only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any, Dict

import numpy as np

from edgecam.runtimes.onnxruntime import OnnxRuntime

#: in the command line of the "hang-child" fault's helper process, for tests to find it
HELPER_MARK = "edgecam-fault-helper"

#: kind -> what the runtime does
FAULTS: Dict[str, str] = {
    "segfault": "dereference a null pointer (SIGSEGV), as a buggy delegate does",
    "kill": "SIGKILL itself, as the kernel's OOM killer does",
    "oom": "allocate past a lowered address-space limit (MemoryError)",
    "hang": "sleep forever (the job's timeout must end it)",
    "hang-child": "start a helper process, then sleep forever (the timeout must end both: a runtime's server or "
                  "sampler outliving its agent keeps loading the board)",
    "exit": "exit the process with status 3 and no result",
    "raise": "raise RuntimeError",
    "nan": "return NaN logits and features",
}


#: the precisions edgecam exports (exporters/base.PRECISIONS; the device side cannot import it, a test keeps them equal)
PRECISIONS = ("fp32", "int16", "int8")


class FaultRuntime(OnnxRuntime):
    name = "fault"
    option_help = {"fault": "which fault to inject (FAULTS)", "fault_precisions": "into these precisions' artifacts (empty: all)"}

    @classmethod
    def check_options(cls, options: Dict[str, Any]) -> Dict[str, Any]:
        kind = options.get("fault")
        if kind is None:
            raise ValueError("fault: set it exactly when name = 'fault' (one of %s); got name 'fault' and no fault" % ", ".join(FAULTS))
        if kind not in FAULTS:
            raise ValueError("fault: expected one of %s, got %r" % (", ".join(FAULTS), kind))
        precisions = options.get("fault_precisions") or []
        if not isinstance(precisions, (list, tuple)) or any(p not in PRECISIONS for p in precisions):
            raise ValueError("fault_precisions: expected values from %s, got %r" % (", ".join(PRECISIONS), precisions))
        return {"fault": kind, "fault_precisions": list(precisions)}

    def _load(self) -> None:
        super()._load()
        kind = self.options.get("fault")
        if kind not in FAULTS:
            raise ValueError("fault runtime: option fault must be one of %s, got %r" % (", ".join(FAULTS), kind))
        precisions = list(self.options.get("fault_precisions") or [])
        self.fault = kind if not precisions or self.manifest.get("precision_requested") in precisions else None

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if self.fault == "segfault":
            import ctypes

            ctypes.string_at(0)  # reads address 0: SIGSEGV
        elif self.fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif self.fault == "oom":
            import resource

            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            resource.setrlimit(resource.RLIMIT_AS, (2 << 30, hard))  # 2 GiB of address space
            try:
                np.ones(1 << 31, dtype=np.float64)  # 16 GiB
            finally:
                resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        elif self.fault in ("hang", "hang-child"):
            if self.fault == "hang-child":  # the helper prints nothing: only a process-group kill can end it
                subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)", HELPER_MARK], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while True:
                time.sleep(60)
        elif self.fault == "exit":
            os._exit(3)
        elif self.fault == "raise":
            raise RuntimeError("fault runtime: injected failure")
        out = super().run(feeds)
        if self.fault == "nan":
            return {k: np.full_like(v, np.nan) for k, v in out.items()}
        return out
