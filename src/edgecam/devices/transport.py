"""What a persistent session needs of a device (`Transport`), and what a command run on it returns
(`RunResult`): the contract between `devices/persistent.py` and the transports, below both, so that neither
imports the other (`base.Device` implements it; `persistent` types its device by it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class RunResult:
    """Exit status and captured output of a command run on a device."""

    returncode: int
    stdout: str
    stderr: str
    wall_s: float


class Transport(Protocol):
    """The device operations a session uses (`base.Device` documents each)."""

    name: str

    def push(self, local: Path, remote: str) -> None: ...

    def pull(self, remote: str, local: Path, max_bytes: int | None = None) -> None: ...

    def run(self, argv: list[str], timeout: float | None = None) -> RunResult: ...

    def exists(self, remote: str) -> bool: ...

    def workdir(self) -> str: ...

    def python(self) -> list[str]: ...

    def cleanup(self, remote: str) -> None: ...

    def agent(self) -> str: ...

    def kill_agents(self, marker: str, pgid: int | None = None, pid_file: str | None = None) -> None: ...

    def ensure_artifact(self, artifact_dir: Path) -> tuple[str, dict[str, Any]]: ...
