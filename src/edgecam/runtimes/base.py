"""The Runtime interface: load an artifact, run a batch, return {"logits", "features"}.

Device-side code: imports only the standard library and numpy, runs on Python >= 3.8 (boards ship their own
Python), so no PEP 604 unions at runtime and no torch.
"""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar, Dict, Optional

import numpy as np


class Runtime:
    """One loaded model. Subclasses set `name`, implement `_load`, `run` and `is_available`."""

    name: ClassVar[str] = "runtime"

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

    def close(self) -> None:
        """Release the session (idempotent)."""

    def describe(self) -> Dict[str, Any]:
        """What actually ran (version, providers, threads), recorded in the results."""
        return {"runtime": self.name, "version": self.version(), "threads": self.threads}

    @classmethod
    def is_available(cls) -> bool:
        return True

    @classmethod
    def version(cls) -> str:
        return "n/a"

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
