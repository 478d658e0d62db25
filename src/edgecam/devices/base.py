"""The Device interface: push files, run argv, pull files, describe itself. Local and remote devices share it
(TVM's rpc LocalSession / RPCSession is the model), so the bench code never knows where it runs."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgecam.errors import EdgecamError
from edgecam.registry import Registry


@dataclass(frozen=True)
class RunResult:
    """Exit status and captured output of a command run on a device."""

    returncode: int
    stdout: str
    stderr: str
    wall_s: float


class JobFailed(EdgecamError):
    """The agent ran but the job failed on the device (runtime crash, bad artifact, ...)."""


class Device:
    """Where artifacts run. Subclasses implement push / pull / run / info and name their Python."""

    kind: ClassVar[str] = "device"
    name: str = "device"

    def push(self, local: Path, remote: str) -> None:
        raise NotImplementedError

    def pull(self, remote: str, local: Path) -> None:
        raise NotImplementedError

    def run(self, argv: list[str], timeout: float | None = None) -> RunResult:
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        raise NotImplementedError

    def workdir(self) -> str:
        raise NotImplementedError

    def python(self) -> list[str]:
        raise NotImplementedError

    def run_job(self, artifact_dir: Path, inputs: np.ndarray, job: dict[str, Any], timeout: float | None = 600) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Ship an artifact + inputs, run the agent on them, bring back (result, outputs)."""
        job_id = uuid.uuid4().hex[:12]
        with tempfile.TemporaryDirectory(prefix="edgecam-job-") as tmp_s:
            tmp = Path(tmp_s)
            remote_art = f"{self.workdir()}/artifacts/{artifact_dir.name}"
            remote_job = f"{self.workdir()}/jobs/{job_id}"
            self.push(artifact_dir, remote_art)
            np.save(tmp / "inputs.npy", np.ascontiguousarray(inputs, dtype=np.float32), allow_pickle=False)
            manifest = json.loads((artifact_dir / "manifest.json").read_text())
            spec = {**job, "artifact": f"{remote_art}/{manifest['file']}"}
            (tmp / "job.json").write_text(json.dumps(spec))
            self.push(tmp, remote_job)
            res = self.run([*self.python(), "-m", "edgecam.devices.agent", remote_job], timeout=timeout)
            back = tmp / "back"
            self.pull(remote_job, back)
            result_path = back / "result.json"
            if not result_path.is_file():
                raise JobFailed(f"job {job_id} on {self.name}: agent exited {res.returncode} without a result; stderr:\n{res.stderr[-4000:]}")
            result = json.loads(result_path.read_text())
            if not result.get("ok"):
                raise JobFailed(f"job {job_id} on {self.name} failed: {result.get('error')}\n{result.get('traceback', '')[-4000:]}")
            outputs: dict[str, np.ndarray] = {}
            if (back / "outputs.npz").is_file():
                with np.load(back / "outputs.npz", allow_pickle=False) as z:
                    outputs = {k: z[k] for k in z.files}
            self.cleanup(remote_job)
            return result, outputs

    def cleanup(self, remote: str) -> None:
        """Remove a job directory on the device (best effort)."""


DEVICES: Registry[type[Device]] = Registry("device")


def copy_tree(src: Path, dst: Path) -> None:
    """Copy a file or directory, replacing what is at `dst`."""
    if src.is_dir():
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
