"""A device type in one file: this machine, reached through its own URL scheme (`toy://NAME`), that logs what
it was asked to do (a real transport implements `run`, `push`, `pull`, `exists`, `cleanup` and `session`
instead of inheriting this machine's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecam.devices.base import RunResult
from edgecam.devices.local import LocalDevice, LocalSession

CALLS: list[str] = []


class ToyDevice(LocalDevice):
    kind = "toy"

    def run(self, argv: list[str], timeout: float | None = None) -> RunResult:
        CALLS.append("run")
        return super().run(argv, timeout)

    def session(self, artifact_dir: str | Path, job: dict[str, Any], timeout: float | None = 600) -> LocalSession:
        CALLS.append(f"session {job.get('runtime')}")
        return super().session(artifact_dir, job, timeout)
