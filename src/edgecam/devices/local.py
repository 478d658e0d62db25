"""The local device: the agent runs in a fresh subprocess of this machine's Python (process isolation keeps
the host's torch and caches out of the measured process)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from edgecam.cache import cache_dir
from edgecam.devices.base import Device, DeviceTimeout, RunResult, copy_tree

if TYPE_CHECKING:
    from edgecam.devices.inventory import DeviceSpec


class LocalDevice(Device):
    kind = "local"

    def __init__(self, workdir: str | None = None, python: str | None = None, name: str = "local") -> None:
        self.name = name
        self._workdir = Path(workdir) if workdir else cache_dir() / "local-device"
        self._python = python or sys.executable

    @classmethod
    def from_spec(cls, spec: "DeviceSpec", local_workdir: str | None = None) -> "LocalDevice":
        return cls(workdir=spec.workdir or local_workdir, python=spec.python, name=spec.name)

    def workdir(self) -> str:
        return str(self._workdir)

    def python(self) -> list[str]:
        return [self._python]

    def push(self, local: Path, remote: str) -> None:
        if Path(local).resolve() != Path(remote).resolve():
            copy_tree(Path(local), Path(remote))

    def pull(self, remote: str, local: Path) -> None:
        copy_tree(Path(remote), Path(local))

    def run(self, argv: list[str], timeout: float | None = None) -> RunResult:
        start = time.perf_counter()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        except subprocess.TimeoutExpired as exc:  # subprocess.run has killed the child
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            raise DeviceTimeout(f"{self.name}: {argv[-1]} timed out after {timeout} s and was killed; stderr:\n{stderr[-2000:]}") from None
        return RunResult(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start)

    def exists(self, remote: str) -> bool:
        return Path(remote).exists()

    def cleanup(self, remote: str) -> None:
        shutil.rmtree(remote, ignore_errors=True)
