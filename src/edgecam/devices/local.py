"""The local device: the agent runs in a fresh subprocess of this machine's Python (process isolation keeps
the host's torch and caches out of the measured process). Its persistent session (`LocalSession`) is one
`agent serve` subprocess in its own process group, spoken to over its stdin / stdout pipes (POSIX)."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from edgecam.cache import cache_dir
from edgecam.devices.answers import check_pulled
from edgecam.devices.base import Device, DeviceTimeout, RunResult, exit_reason, copy_tree
from edgecam.devices.persistent import STDERR_TAIL, PersistentSession

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

    def pull(self, remote: str, local: Path, max_bytes: int | None = None) -> None:
        if max_bytes is not None:  # measured before the copy: a sparse or huge answer is refused, not copied
            check_pulled(Path(remote), max_bytes, f"{self.name}: {Path(remote).name}")
        copy_tree(Path(remote), Path(local))

    def run(self, argv: list[str], timeout: float | None = None) -> RunResult:
        start = time.perf_counter()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # Its own session: a timeout (or an interrupted host) kills the command with everything it started.
        with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              start_new_session=True) as proc:
            try:
                stdout, stderr = proc.communicate(timeout=timeout)
            except BaseException as exc:
                _kill_group(proc)
                stdout, stderr = proc.communicate()
                if isinstance(exc, subprocess.TimeoutExpired):
                    raise DeviceTimeout(f"{self.name}: {argv[-1]} timed out after {timeout} s and was killed; stderr:\n{stderr[-2000:]}") from None
                raise
        return RunResult(proc.returncode, stdout, stderr, time.perf_counter() - start)

    def exists(self, remote: str) -> bool:
        return Path(remote).exists()

    def cleanup(self, remote: str) -> None:
        shutil.rmtree(remote, ignore_errors=True)

    def session(self, artifact_dir: str | Path, job: dict[str, Any], timeout: float | None = 600) -> "LocalSession":
        """One `agent serve` subprocess for `artifact_dir` (see `LocalSession`)."""
        return LocalSession(self, artifact_dir, job, timeout)


_IO_CHUNK = 1 << 20


def _kill_group(proc: "subprocess.Popen[Any]") -> None:
    """SIGKILL the process group of `proc`, started with `start_new_session`: the agent and any child of it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _wait(deadline: float | None) -> float | None:
    """Seconds left before `deadline` (None: no limit); DeviceTimeout once it has passed."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeviceTimeout("deadline passed")
    return left


class LocalSession(PersistentSession):
    """The agent as a subprocess of this machine: requests on its stdin, answers on its stdout (select()
    with the request's deadline on both, so a hung agent cannot hang the host), stderr to a temporary file
    whose tail explains a failure; killed as a process group."""

    def __init__(self, device: LocalDevice, artifact_dir: str | Path, job: dict[str, Any], timeout: float | None = 600) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None
        super().__init__(device, artifact_dir, job, timeout)

    def _command(self) -> list[str]:
        """The process whose stdin / stdout carry the frames: the agent itself here (adb: its client's shell)."""
        dev = self.device
        return [*dev.python(), dev.agent(), "serve", self.job_path]

    def _spawn(self) -> None:
        self._terminate()  # a replaced process (it died or timed out) is never left running
        argv = self._command()
        self._stderr = tempfile.TemporaryFile(prefix="edgecam-agent-stderr-")
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0, start_new_session=True)
        os.set_blocking(self._proc.stdin.fileno(), False)  # type: ignore[union-attr]

    def _send(self, chunks: Sequence[Any], deadline: float | None) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        fd = self._proc.stdin.fileno()
        for chunk in chunks:
            view = memoryview(chunk).cast("B")
            off = 0
            while off < len(view):
                if not select.select([], [fd], [], _wait(deadline))[1]:
                    raise DeviceTimeout("send")
                try:
                    off += os.write(fd, view[off : off + _IO_CHUNK])
                except BlockingIOError:
                    continue
                except BrokenPipeError:
                    raise EOFError("the agent closed its input") from None

    def _readinto(self, view: memoryview, deadline: float | None) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        got = 0
        while got < len(view):
            if not select.select([fd], [], [], _wait(deadline))[0]:
                raise DeviceTimeout("receive")
            n = os.readv(fd, [view[got : got + _IO_CHUNK]])
            if n == 0:
                raise EOFError("the agent's output ended")
            got += n

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _release(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            _kill_group(self._proc)
            self._proc.wait()

    def _terminate(self, grace: float = 0.0) -> str:
        proc, self._proc = self._proc, None
        if proc is None:
            return ""
        if proc.poll() is None:
            try:
                proc.wait(timeout=grace)  # a process that is exiting on its own
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass
        tail = ""
        if self._stderr is not None:
            self._stderr.seek(0, os.SEEK_END)
            self._stderr.seek(max(0, self._stderr.tell() - STDERR_TAIL))
            tail = self._stderr.read().decode(errors="replace")
            self._stderr.close()
            self._stderr = None
        return f" (agent {exit_reason(proc.returncode)}; stderr:\n{tail})"
