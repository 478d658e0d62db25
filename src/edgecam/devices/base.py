"""The Device interface: push files, run argv, pull files, describe itself. Local and remote devices share it
(TVM's rpc LocalSession / RPCSession is the model), so the bench code never knows where it runs."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from edgecam.cache import stable_hash
from edgecam.devices.answers import MAX_PROBE_BYTES, MAX_RESULT_BYTES, SLACK_BYTES, answer_bound, check_pulled, load_npz, output_row_bytes, parse_json, read_json_file
from edgecam.devices.errors import DeviceError, DeviceTimeout, JobFailed
from edgecam.devices.protocol import WATCHDOG_GRACE_S
from edgecam.devices.spec import DEVICES
from edgecam.devices.transport import RunResult
from edgecam.textsafe import clean_text

log = logging.getLogger(__name__)

# Used by Device.kill_agents: $1 marker, $2 pgid ("" for none), $3 pid file ("" for none). Only digits become a
# pid; a group is killed only when its leader's command line holds the marker (`kill -9 -Q` of a live process Q
# succeeds only when Q leads a group: pgid = leader's pid), else the process alone; the script skips itself and
# its parent. `kill -9 -PGID`, not `kill -9 -- -PGID`: dash (Debian's sh) reads `--` as a pid.
_KILL_AGENTS = (
    'm="$1"; g="$2"\n'
    'if [ -z "$g" ] && [ -n "$3" ] && [ -r "$3" ]; then g=$(cat -- "$3" 2>/dev/null); fi\n'
    'case "$g" in ""|*[!0-9]*) g="" ;; esac\n'
    'if [ -n "$g" ] && grep -qF -- "$m" "/proc/$g/cmdline" 2>/dev/null; then kill -9 "-$g" 2>/dev/null || kill -9 "$g" 2>/dev/null; fi\n'
    'for p in /proc/[0-9]*; do q="${p#/proc/}"; case "$q" in "$$"|"$PPID") continue ;; esac; '
    'grep -qF -- "$m" "$p/cmdline" 2>/dev/null && { kill -9 "-$q" 2>/dev/null || kill -9 "$q" 2>/dev/null; }; done; true'
)

__all__ = ["DEVICES", "Device", "DeviceError", "DeviceTimeout", "JobFailed", "RunResult", "device_class", "remote_job_name"]

if TYPE_CHECKING:
    from edgecam.devices.spec import DeviceSpec
    from edgecam.devices.persistent import PersistentSession


def _digest(a: np.ndarray) -> list[Any]:
    a = np.ascontiguousarray(a)
    return [hashlib.sha256(memoryview(a).cast("B")).hexdigest(), list(a.shape), str(a.dtype)]  # no copy of the bytes


def remote_job_name(artifact_sha256: str, inputs: np.ndarray, job: dict[str, Any], extra: dict[str, np.ndarray] | None = None) -> str:
    """Stable name of a job: same artifact, inputs (and extra arrays) and settings -> same remote job
    directory, so a job that finished on the device while the host lost contact is pulled, not run again."""
    key: dict[str, Any] = {"artifact": artifact_sha256, "inputs": _digest(inputs), "job": job}
    if extra:
        key["extra"] = {k: _digest(v) for k, v in sorted(extra.items())}
    return stable_hash(key)



def shell_command(argv: Sequence[str]) -> str:
    """One remote shell line running `argv` exactly: every element `shlex.quote`d, joined by spaces, so
    nothing in a file name runs as shell (SSH's exec and adb's shell both take one line)."""
    return " ".join(shlex.quote(str(a)) for a in argv)


class Device:
    """Where artifacts run. Subclasses implement the file and process primitives; `run_job` (one agent
    process per job: the timing pass) and `session` (one agent serving many requests: the explain stage)
    are shared, `session` overridden by transports that can stream."""

    kind: ClassVar[str] = "device"
    name: str = "device"
    #: the settings an inventory entry may give this transport besides the common ones (`DeviceSpec`), each with
    #: what it does; `check_settings` validates them
    settings_help: ClassVar[dict[str, str]] = {}
    #: settings a run manifest must not record (where a key lives)
    secret_settings: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> dict[str, Any]:
        """`settings` (keys from `settings_help`) validated, with the transport's defaults filled in; a bad value
        raises ValueError "key: what was expected, got what"."""
        return dict(settings)

    @classmethod
    def from_spec(cls, spec: "DeviceSpec", local_workdir: str | None = None) -> "Device":
        """The device an inventory entry describes, not yet connected (`local_workdir`: where a local device
        keeps its files when the entry sets no workdir)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection, if any (idempotent; a later call reconnects where the transport can)."""

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- primitives (per transport) -------------------------------------------------------------------
    def push(self, local: Path, remote: str) -> None:
        """Copy a file or directory to `remote`, atomically: a reader never sees a half-copied tree."""
        raise NotImplementedError

    def pull(self, remote: str, local: Path, max_bytes: int | None = None) -> None:
        """Copy a remote file or directory to `local`. `max_bytes`: the most the host will take (its own bound,
        never the board's word): a transport stops a transfer past it where it can, and `pull_checked` measures
        what landed."""
        raise NotImplementedError

    def pull_checked(self, remote: str, local: Path, max_bytes: int, what: str) -> int:
        """`pull` of a device's answer within `max_bytes`, then what landed measured (`check_pulled`: regular
        files only, apparent sizes, sparse files counted whole); BadAnswer (the job fails) past the bound."""
        try:
            self.pull(remote, local, max_bytes)
            return check_pulled(Path(local), max_bytes, what)
        except JobFailed:  # nothing refused is left on the host's disk
            if Path(local).is_dir() and not Path(local).is_symlink():
                shutil.rmtree(local, ignore_errors=True)
            else:
                Path(local).unlink(missing_ok=True)
            raise

    def run(self, argv: list[str], timeout: float | None = None) -> RunResult:
        """Run `argv` (a list, never a shell string: remote transports quote every element)."""
        raise NotImplementedError

    def exists(self, remote: str) -> bool:
        raise NotImplementedError

    def workdir(self) -> str:
        raise NotImplementedError

    def python(self) -> list[str]:
        raise NotImplementedError

    def cleanup(self, remote: str) -> None:
        """Remove a job directory on the device (best effort)."""

    # -- shared --------------------------------------------------------------------------------------
    def agent(self) -> str:
        """Path of the agent zipapp on the device, pushed once per content hash."""
        if getattr(self, "_agent_path", None) is None:
            from edgecam.devices.archive import build_agent_archive

            local = build_agent_archive()
            remote = f"{self.workdir()}/agent/{local.name}"
            if not self.exists(remote):
                self.push(local, remote)
            self._agent_path = remote
        return self._agent_path

    def info(self) -> dict[str, Any]:
        """The device's facts (arch, CPU, cores, RAM, OS, Python, runtimes found, Jetson release), probed
        by the agent on the device itself and kept for the session."""
        if getattr(self, "_info", None) is None:
            res = self.run([*self.python(), self.agent(), "probe"], timeout=120)
            if res.returncode != 0:
                raise DeviceError(f"probing {self.name} failed (exit {res.returncode}); stderr:\n{res.stderr[-2000:]}")
            lines = res.stdout.strip().splitlines()
            try:
                facts = parse_json(lines[-1] if lines else "", f"{self.name}'s probe answer", MAX_PROBE_BYTES)
            except JobFailed as exc:
                raise DeviceError(f"probing {self.name}: the agent printed no usable JSON ({exc}); stdout: {res.stdout[-500:]!r}") from None
            self._info = {**checked_facts(facts), "name": self.name, "kind": self.kind}  # the inventory names the device, not the device
        return dict(self._info)

    def run_agent(self, remote_job: str, timeout: float | None) -> RunResult:
        """Run the agent on one job directory (SSH overrides this to survive a dropped connection)."""
        return self.run([*self.python(), self.agent(), "run", remote_job], timeout=timeout)

    def stop_job(self, remote_job: str) -> None:
        """Stop the agent still running on `remote_job` after the host gave up on it (a timeout, or a host that
        died mid-job), with everything it started: the agent leads its own process group and writes its pid
        to `agent.pid`; the group is killed only if that pid still runs a command naming this job directory
        (a recycled pid is never hit). SSH and adb close the channel without signalling the remote command,
        and a local subprocess timeout kills the agent alone. Best effort."""
        self.kill_agents(remote_job, pid_file=f"{remote_job}/agent.pid")

    def kill_agents(self, marker: str, pgid: int | None = None, pid_file: str | None = None) -> None:
        """`kill -9 -PGID` (PGID given, or read from `pid_file`) if that group's leader still runs a command
        line containing `marker` (a job directory or a session's job.json path, unique per job), then any other
        process whose command line contains `marker` (an agent that died before saying its pgid). One shell
        script through `run`, so every transport with a POSIX shell and /proc does it. Best effort."""
        try:
            self.run(["sh", "-c", _KILL_AGENTS, "sh", marker, "" if pgid is None else str(int(pgid)), pid_file or ""], timeout=60)
        except (DeviceError, OSError) as exc:
            log.warning("%s: could not stop the agent of %s: %s", self.name, marker, exc)

    def ensure_artifact(self, artifact_dir: Path) -> tuple[str, dict[str, Any]]:
        """(remote artifact directory, manifest): the artifact is pushed once, atomically, and stays on the
        device (named by the artifact directory, which the host names by content)."""
        manifest = json.loads((Path(artifact_dir) / "manifest.json").read_text())
        remote_art = f"{self.workdir()}/artifacts/{Path(artifact_dir).name}"
        if not self.exists(f"{remote_art}/manifest.json"):  # pushed atomically: present = complete
            self.push(Path(artifact_dir), remote_art)
        return remote_art, manifest

    def session(self, artifact_dir: str | Path, job: dict[str, Any], timeout: float | None = 600) -> "PersistentSession":
        """A persistent session for one artifact (`edgecam.devices.persistent`): the agent loads the runtime
        and the model once and serves framed requests until closed. This default runs one agent process per
        request through push / run / pull; streaming transports (local, SSH, adb) override it."""
        from edgecam.devices.persistent import PerRequestSession

        return PerRequestSession(self, artifact_dir, job, timeout)

    def run_job(self, artifact_dir: Path, inputs: np.ndarray, job: dict[str, Any], timeout: float | None = 600, extra: dict[str, np.ndarray] | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Ship an artifact + inputs (+ `extra` arrays, e.g. the masks of a "masked" job, as `<name>.npy`),
        run the agent on them, bring back (result, outputs).

        The remote job directory is named by `remote_job_name`; one that already holds a result (the host lost
        contact after the device finished) is pulled rather than run again. It is removed from the device
        after success and after failure (a crash, a timeout, no result, a failed result); only a lost
        connection or an interrupted host leaves it, for the resumed attempt to find.
        """
        inputs = np.ascontiguousarray(inputs, dtype=np.float32)
        extra = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in (extra or {}).items()}
        manifest = json.loads((artifact_dir / "manifest.json").read_text())
        key = remote_job_name(str(manifest.get("sha256", artifact_dir.name)), inputs, job, extra)
        remote_job = f"{self.workdir()}/jobs/{key}"
        try:
            return self._run_job(artifact_dir, inputs, job, timeout, extra, key, remote_job)
        except DeviceTimeout:
            self.stop_job(remote_job)
            self.cleanup(remote_job)
            raise
        except JobFailed:
            self.cleanup(remote_job)
            raise

    def _run_job(self, artifact_dir: Path, inputs: np.ndarray, job: dict[str, Any], timeout: float | None, extra: dict[str, np.ndarray], key: str,
                 remote_job: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        with tempfile.TemporaryDirectory(prefix="edgecam-job-") as tmp_s:
            tmp = Path(tmp_s)
            res: RunResult | None = None
            if not self.exists(f"{remote_job}/result.json"):
                if self.exists(f"{remote_job}/agent.pid"):  # a host that died mid-job left its agent: never time beside it
                    self.stop_job(remote_job)
                remote_art, manifest = self.ensure_artifact(artifact_dir)
                send = tmp / "send"
                send.mkdir()
                np.save(send / "inputs.npy", inputs, allow_pickle=False)
                for name, arr in extra.items():
                    np.save(send / f"{name}.npy", arr, allow_pickle=False)
                watchdog = {"watchdog_s": float(timeout) + WATCHDOG_GRACE_S} if timeout else {}  # the agent ends itself if the host is gone
                (send / "job.json").write_text(json.dumps({**job, **watchdog, "artifact": f"{remote_art}/{manifest['file']}"}))
                self.push(send, remote_job)
                res = self.run_agent(remote_job, timeout)
            if res is not None and not self.exists(f"{remote_job}/result.json"):
                raise JobFailed(f"job {key} on {self.name}: agent {exit_reason(res.returncode)}; stderr:\n{res.stderr[-4000:]}")
            back = tmp / "back"  # only the results come back, never the inputs the job was sent
            back.mkdir()
            what = f"job {key} on {self.name}"
            self.pull_checked(f"{remote_job}/result.json", back / "result.json", MAX_RESULT_BYTES, f"{what}: result.json")
            result = read_json_file(back / "result.json", f"{what}: result.json")
            if not isinstance(result, dict):
                raise JobFailed(f"job {key} on {self.name}: result.json holds a {type(result).__name__}, not an object")
            if not result.get("ok"):
                if str(result.get("error", "")).startswith("ArtifactCorrupt"):
                    self.cleanup(f"{self.workdir()}/artifacts/{artifact_dir.name}")  # the next job pushes a fresh copy
                raise JobFailed(f"job {key} on {self.name} failed: {result.get('error')}\n{result.get('traceback', '')[-4000:]}")
            outputs: dict[str, np.ndarray] = {}
            if self.exists(f"{remote_job}/outputs.npz"):
                cap = _outputs_cap(artifact_dir, inputs, job, extra)
                self.pull_checked(f"{remote_job}/outputs.npz", back / "outputs.npz", cap + SLACK_BYTES, f"{what}: outputs.npz")
                outputs = load_npz(back / "outputs.npz", f"{what}: outputs.npz", cap)  # never unpickled, never past the host's bound
            result["remote_job_name"] = key
            result["resumed"] = res is None
            self.cleanup(remote_job)
            return result, outputs


def _outputs_cap(artifact_dir: Path, inputs: np.ndarray, job: dict[str, Any], extra: dict[str, np.ndarray]) -> int:
    """The most bytes of arrays a job's outputs.npz can need: its rows (inputs; inputs x masks for "masked") x
    the artifact's declared output sizes; with no declared sizes, 64 MiB plus what the host sent."""
    rows = len(inputs)
    masks = extra.get("masks")
    if job.get("mode") == "masked" and masks is not None and masks.ndim >= 2:
        rows = int(masks.shape[0]) * int(masks.shape[1])
        names: list[str] | None = ["logits"]
    else:
        names = None if job.get("outputs") is None else list(job["outputs"])
    fallback = (64 << 20) + inputs.nbytes + sum(a.nbytes for a in extra.values())
    return answer_bound(output_row_bytes(artifact_dir), rows, names, fallback)


# URL scheme -> "module:Class", imported on first use (paramiko only for ssh, the adb client only for adb)


def device_class(scheme: str) -> type[Device]:
    """Import and return the Device class registered for `scheme` (unknown schemes list the known ones)."""
    return DEVICES.load(scheme)


def exit_reason(code: int) -> str:
    """'exited 3', or 'killed by SIGSEGV (exit -11)' (a POSIX child's negative code is its signal; ssh
    reports a remote signal as 128 + N)."""
    import signal

    for signo in (-code, code - 128):
        if 0 < signo < 65:
            try:
                return f"killed by {signal.Signals(signo).name} (exit {code})"
            except ValueError:
                pass
    return f"exited {code}"


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link (free: job inputs and outputs are never modified in place), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def copy_tree(src: Path, dst: Path) -> None:
    """Copy a file or directory to `dst` through a temporary sibling and a rename (atomic on one filesystem).
    Files are hard-linked where the filesystem allows: a local device's multi-MB job arrays cost nothing."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.part")
    if tmp.exists():
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    if src.is_dir():
        shutil.copytree(src, tmp, copy_function=_link_or_copy)
        if dst.exists():
            shutil.rmtree(dst)
    else:
        _link_or_copy(str(src), str(tmp))
    os.replace(tmp, dst)


#: what a probe may report, by type: anything else a device answers is dropped (and listed in `probe_rejected`)
FACT_TYPES: dict[str, tuple[type, ...]] = {
    "protocol": (int,), "arch": (str,), "emulated": (bool,), "emulation": (str,), "cpu": (str,), "cores": (int,), "cores_available": (int,),
    "ram_bytes": (int, type(None)), "os": (str,), "kernel": (str,), "python": (str,), "numpy": (str, type(None)), "runtimes": (dict,), "board": (str,),
    "jetson": (dict,),
}
FACT_MAX_CHARS = 300


def _cleaned(value: Any) -> Any:
    """A fact with every string in it made printable (`clean_text`): a probe cannot drive the terminal."""
    if isinstance(value, str):
        return clean_text(value, FACT_MAX_CHARS)
    if isinstance(value, dict):
        return {clean_text(k, FACT_MAX_CHARS): _cleaned(v) for k, v in value.items()}
    return value


def checked_facts(facts: Any) -> dict[str, Any]:
    """A device's probe answer reduced to the facts edgecam knows, each of its declared type (bool is not
    an int here; integers within 0..2**62; strings at most FACT_MAX_CHARS; `runtimes` a name -> version
    string or null map; `jetson` a map of short strings): a hostile or broken board can put neither markup,
    nor huge numbers, nor another device's identity into a run. Dropped keys are listed in `probe_rejected`."""
    if not isinstance(facts, dict):
        raise DeviceError(f"the probe answered a {type(facts).__name__}, not a JSON object")
    out: dict[str, Any] = {}
    rejected: list[str] = []

    def short(v: Any) -> bool:
        return isinstance(v, str) and len(v) <= FACT_MAX_CHARS

    for key, value in facts.items():
        types = FACT_TYPES.get(key)
        ok = types is not None and isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if ok and isinstance(value, int) and not isinstance(value, bool):
            ok = 0 <= value < 2**62
        if ok and isinstance(value, str):
            ok = short(value)
        if ok and key == "runtimes":
            ok = all(short(k) and (v is None or short(v)) for k, v in value.items())
        if ok and key == "jetson":
            ok = all(short(k) and (isinstance(v, bool) or short(v)) for k, v in value.items())
        if ok:
            out[key] = _cleaned(value)
        else:
            rejected.append(clean_text(str(key)[:60]))
    if rejected:
        out["probe_rejected"] = rejected
    return out
