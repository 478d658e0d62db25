"""Android devices over adb (`adb://SERIAL`): phones, Android boards and the emulator.

Driven with the `adb` client (Debian: `apt-get install adb`; or Android SDK platform-tools) through
`subprocess` with argv lists, never a host shell. adb joins the words after `adb shell` with spaces and hands
the line to the device's `sh -c`, so every remote command is built here as one string in which each argument
is `shlex.quote`d; push and pull name device paths through adb's sync protocol, which takes them verbatim.

Exit status: with adb's shell protocol (the `shell_v2` feature: Android >= 7.0 and any current adb client),
`adb shell CMD` exits with CMD's own exit status and keeps its stdout and stderr apart; `run()` returns that
status as `RunResult.returncode`. Without it `adb shell` exits 0 whatever the command did, so before the first
command the device's state (`adb get-state`) and features (`adb features`) are checked, and a device without
`shell_v2` is refused rather than trusted. adb's own failures after that (device unplugged mid-run) also show
up as a non-zero status, with adb's message on stderr.

There is usually no Python on Android, so `info()` reads `getprop`, /proc/meminfo and /proc/cpuinfo (and adds
the agent's probe where `python` is set), and `benchmark()` times a .tflite with the user's LiteRT
`benchmark_model` binary (path on the device, `benchmark_model = "..."` in devices.toml) and parses its output
with `edgecam.devices.benchmark_model`. `run_job` and the persistent session (the edgecam agent) work where
`python` names an interpreter on the device (e.g. Termux's).

The persistent session (`AdbSession`) is one `adb shell -T 'exec python agent serve JOB'` per artifact: with
shell_v2 and no PTY, adb's stream carries stdin and stdout byte for byte (stderr apart), measured against a real
adbd (Debian's 34.0.5, tests/adb_board.py): 5 MB of random bytes round-trip with the same sha256. `adb exec-out`
carries no stdin, so it cannot.

A device that drops off (adbd killed, cable pulled, Wi-Fi lost) fails the command in flight with adb's own
message; the next command checks the device again and, for a network serial (HOST:PORT), runs `adb connect`
once before giving up, so a run goes on when the device comes back.
"""

from __future__ import annotations

import json
import os
import posixpath
import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from edgecam.devices.base import FACT_MAX_CHARS, Device, DeviceError, DeviceTimeout, JobFailed, RunResult, shell_command
from edgecam.devices.benchmark_model import BenchmarkModelResult, benchmark_argv, parse_benchmark_output
from edgecam.devices.local import LocalSession
from edgecam.cache import sha256_file
from edgecam.errors import ArtifactError

if TYPE_CHECKING:
    from edgecam.devices.inventory import DeviceSpec

DEFAULT_WORKDIR = "/data/local/tmp/edgecam"
ABI_ARCH = {"arm64-v8a": "aarch64", "armeabi-v7a": "armv7l", "armeabi": "armv5tel", "x86_64": "x86_64", "x86": "i686", "riscv64": "riscv64"}
_SECTION = "@@edgecam:{}@@"
#: how the adb client says the device itself is gone (not the command's own failure): the next command re-checks it
_ADB_LOST = ("error: device offline", "error: closed", "error: no devices", "error: protocol fault", "not found", "error: device unauthorized",
             "error: connect", "failed to connect")
#: probe facts the agent knows better than getprop (the interpreter and runtimes it found)
_AGENT_FACTS = ("protocol", "python", "numpy", "runtimes", "emulation", "cores_available")


class AdbNotFound(DeviceError):
    """The `adb` client is not installed (or not at the configured path)."""


def _q(path: str) -> str:
    return shlex.quote(path)


def _tail(text: str, lines: int = 20) -> str:
    kept = [ln for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return "\n".join(kept) if kept else "(no output)"


class AdbDevice(Device):
    """An Android device reached with `adb -s SERIAL`; files live under `workdir` (default /data/local/tmp/edgecam)."""

    kind = "adb"
    settings_help = {
        "benchmark_model": "LiteRT's benchmark_model binary on the device (an absolute path): times .tflite artifacts with it",
        "adb": "the adb client on this machine (a path or a name on PATH; default adb): e.g. platform-tools' own, or a wrapper",
    }

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> dict[str, Any]:
        path = settings.get("benchmark_model")
        if path is not None and not isinstance(path, str):
            raise ValueError(f"benchmark_model: expected a path on the device, got {type(path).__name__} {path!r}")
        client = settings.get("adb", "adb")
        if not isinstance(client, str) or not client.strip():
            raise ValueError(f"adb: expected the adb client's path or name, got {type(client).__name__} {client!r}")
        return {"benchmark_model": path, "adb": client}

    def __init__(
        self,
        serial: str,
        benchmark_model: str | None = None,
        workdir: str | None = None,
        adb: str = "adb",
        python: str | None = None,
        name: str | None = None,
        command_timeout: float = 60.0,
        transfer_timeout: float = 600.0,
    ) -> None:
        serial = serial.strip()
        if serial.startswith("adb://"):
            serial = serial[len("adb://"):]
        if not serial or serial.startswith("-") or any(c.isspace() for c in serial):
            raise DeviceError(f"adb serial {serial!r}: expected a serial as `adb devices` lists it, e.g. adb://emulator-5554 or adb://192.168.1.20:5555")
        exe = shutil.which(adb)
        if exe is None:
            where = f"at {adb}" if os.sep in adb else "on PATH"
            raise AdbNotFound(
                f"the adb client is not installed ({adb!r} not found {where}); install it with `sudo apt-get install adb` "
                "(Debian/Ubuntu) or Android SDK platform-tools, then check the device with `adb devices`"
            )
        workdir = (workdir or DEFAULT_WORKDIR).rstrip("/") or "/"
        if not workdir.startswith("/"):
            raise DeviceError(f"adb device {serial}: workdir {workdir!r} must be an absolute path on the device (default {DEFAULT_WORKDIR})")
        if benchmark_model is not None and not benchmark_model.startswith("/"):
            raise DeviceError(f"adb device {serial}: benchmark_model {benchmark_model!r} must be an absolute path on the device, e.g. /data/local/tmp/benchmark_model")
        self.serial = serial
        self.name = name or f"adb:{serial}"
        self.adb = exe
        self.benchmark_model = benchmark_model
        self._workdir = workdir
        self._python = python
        self.command_timeout = command_timeout
        self.transfer_timeout = transfer_timeout
        self._ready = False

    @classmethod
    def from_spec(cls, spec: "DeviceSpec", local_workdir: str | None = None) -> "AdbDevice":
        return cls(spec.url, benchmark_model=spec.benchmark_model, workdir=spec.workdir, python=spec.python, name=spec.name, adb=spec.adb)

    # -- adb plumbing -----------------------------------------------------------------------------------
    def _adb(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """`adb -s SERIAL ARGS...` as a subprocess (argv list, stdin closed), output captured as text.

        Past `timeout` the adb client is killed and DeviceTimeout raised, naming the command (its tail: the
        job directory of an agent run); the remote process may outlive the client.
        """
        try:
            return subprocess.run(
                [self.adb, "-s", self.serial, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                errors="replace", timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired:
            command = " ".join(args)
            command = command if len(command) <= 300 else "..." + command[-300:]
            raise DeviceTimeout(
                f"{self.name}: `adb {command}` timed out after {timeout:g} s; the adb client was killed (the command may still run on the device)"
            ) from None

    def _reconnect(self) -> subprocess.CompletedProcess[str]:
        """`adb connect SERIAL` for a network device that dropped off (its old connection stays offline), then
        its state again."""
        self._adb("disconnect", self.serial, timeout=self.command_timeout)
        self._adb("connect", self.serial, timeout=self.command_timeout)
        return self._adb("get-state", timeout=self.command_timeout)

    def _lost(self, proc: "subprocess.CompletedProcess[str] | RunResult") -> None:
        """After a failed adb command: if adb said the device is gone, check it again before the next command."""
        if proc.returncode != 0 and any(s in (proc.stderr or "")[-500:] for s in _ADB_LOST):
            self._ready = False

    def _ensure(self) -> None:
        """Check that the device is attached, authorized and speaks the shell protocol (real exit codes): once, and
        again after adb said the device was gone (a network device is reconnected then)."""
        if self._ready:
            return
        state = self._adb("get-state", timeout=self.command_timeout)
        if (state.returncode != 0 or state.stdout.strip() != "device") and ":" in self.serial:
            state = self._reconnect()
        if state.returncode != 0 or state.stdout.strip() != "device":
            text = state.stderr.strip() or state.stdout.strip()
            lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("* ")]  # skip "* daemon started"
            said = lines[0] if lines else f"exit {state.returncode}"
            hint = "check `adb devices`; a network device needs `adb connect HOST:PORT` first"
            if "unauthorized" in text:
                hint = "unlock the device and accept the 'Allow USB debugging' prompt"
            elif "offline" in text:
                hint = "reconnect the cable or restart adb (`adb kill-server`)"
            raise DeviceError(f"{self.name}: adb cannot use device {self.serial!r}: {said} ({hint})")
        features = self._adb("features", timeout=self.command_timeout)
        if "shell_v2" not in features.stdout.split():
            raise DeviceError(
                f"{self.name}: the device does not offer adb's shell protocol (feature shell_v2: Android >= 7.0 and a "
                f"current adb); without it `adb shell` reports exit status 0 for failed commands, so edgecam will not "
                f"use it. `adb features` said: {(features.stdout.strip() or features.stderr.strip() or '(nothing)')[:300]!r}"
            )
        self._ready = True

    def shell(self, command: str, timeout: float | None = None) -> RunResult:
        """Run one remote shell line (the caller quotes it; see `shell_command`) and return its exit status."""
        self._ensure()
        start = time.perf_counter()
        proc = self._adb("shell", command, timeout=timeout)
        self._lost(proc)
        return RunResult(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start)

    def _check(self, res: RunResult, what: str) -> RunResult:
        if res.returncode != 0:
            raise DeviceError(f"{self.name}: {what} failed (exit {res.returncode}): {_tail(res.stderr or res.stdout, 5)}")
        return res

    @staticmethod
    def _absolute(remote: str) -> str:
        if not remote.startswith("/"):
            raise ValueError(f"device path {remote!r} must be absolute")
        return remote.rstrip("/") or "/"

    # -- Device primitives ------------------------------------------------------------------------------
    def workdir(self) -> str:
        return self._workdir

    def python(self) -> list[str]:
        if not self._python:
            raise DeviceError(
                f"{self.name}: no Python is configured for this Android device; set python = \"/path/to/python\" in "
                "devices.toml (e.g. Termux's) to run the edgecam agent there. benchmark() needs no Python."
            )
        return [self._python]

    def run(self, argv: list[str], timeout: float | None = None) -> RunResult:
        """`adb -s SERIAL shell 'ARG0' 'ARG1' ...` as one quoted line; returncode is the remote exit status.

        A timeout raises DeviceTimeout (as the local and SSH devices do); the remote process may outlive it.
        """
        if not argv:
            raise ValueError("run() needs a non-empty argv")
        if str(argv[0]).startswith("-"):
            raise ValueError(f"argv[0] {argv[0]!r} starts with '-': adb would read it as an `adb shell` option")
        return self.shell(shell_command(argv), timeout=timeout)

    def exists(self, remote: str) -> bool:
        res = self.shell(f"test -e {_q(self._absolute(remote))}", timeout=self.command_timeout)
        if res.returncode == 0:
            return True
        if res.returncode == 1 and not res.stderr.strip():
            return False
        raise DeviceError(f"{self.name}: checking {remote!r} failed (exit {res.returncode}): {_tail(res.stderr, 5)}")

    def push(self, local: Path, remote: str) -> None:
        """Copy a file or directory to `remote`: `adb push` to a fresh sibling, then `mv` into place."""
        local = Path(local)
        if not local.exists():
            raise FileNotFoundError(f"push: {local} does not exist")
        remote = self._absolute(remote)
        tmp = f"{remote}.edgecam-part-{uuid.uuid4().hex[:12]}"
        self._check(self.shell(f"mkdir -p {_q(posixpath.dirname(remote) or '/')}", timeout=self.command_timeout), f"creating the parent of {remote!r}")
        self._ensure()
        try:
            proc = self._adb("push", str(local.resolve()), tmp, timeout=self.transfer_timeout)
        except DeviceTimeout:
            self.cleanup(tmp)  # a push cut off by its timeout leaves no partial copy on the device
            raise
        if proc.returncode != 0:
            self._lost(proc)
            self.cleanup(tmp)
            raise DeviceError(f"{self.name}: adb push {local} -> {tmp!r} failed (exit {proc.returncode}): {_tail(proc.stderr or proc.stdout, 5)}")
        self._check(self.shell(f"rm -rf {_q(remote)} && mv {_q(tmp)} {_q(remote)}", timeout=self.command_timeout), f"moving the pushed copy to {remote!r}")

    def pull(self, remote: str, local: Path, max_bytes: int | None = None) -> None:
        """Copy a remote file or directory to `local` (replaced whole): `adb pull` to a fresh sibling, then rename
        (`max_bytes` is enforced by `pull_checked` on what landed: adb's sync protocol cannot be stopped midway)."""
        remote = self._absolute(remote)
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
        self._ensure()
        try:
            proc = self._adb("pull", remote, str(tmp), timeout=self.transfer_timeout)
        except DeviceTimeout:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            raise
        if proc.returncode != 0 or not tmp.exists():
            self._lost(proc)
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            elif tmp.exists():
                tmp.unlink()
            raise DeviceError(f"{self.name}: adb pull {remote!r} failed (exit {proc.returncode}): {_tail(proc.stderr or proc.stdout, 5)}")
        if local.is_dir() and not local.is_symlink():
            shutil.rmtree(local)
        elif local.exists() or local.is_symlink():
            local.unlink()
        os.replace(tmp, local)

    def cleanup(self, remote: str) -> None:
        """`rm -rf` a remote path (best effort: errors are ignored)."""
        try:
            self.shell(f"rm -rf {_q(self._absolute(remote))}", timeout=self.command_timeout)
        except (DeviceError, ValueError, OSError):
            pass

    # -- facts --------------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Model, ABI, Android release, CPU, cores, RAM and kernel from `getprop` and /proc (no Python needed)."""
        if getattr(self, "_info", None) is None:
            parts = ["getprop"]
            for section, cmd in (("meminfo", "cat /proc/meminfo"), ("cpuinfo", "cat /proc/cpuinfo"), ("possible", "cat /sys/devices/system/cpu/possible"), ("uname", "uname -r")):
                parts += [f"echo {_SECTION.format(section)}", f"{cmd} 2>/dev/null"]
            res = self.shell("; ".join(parts), timeout=self.command_timeout)
            sections = _split_sections(res.stdout)
            props = parse_getprop(sections.get("", ""))
            if not props:
                raise DeviceError(f"{self.name}: getprop printed nothing (exit {res.returncode}): {_tail(res.stderr or res.stdout, 5)}")
            facts = {k: (v[:FACT_MAX_CHARS] if isinstance(v, str) else v) for k, v in android_facts(props, sections).items()}  # the device's text, capped
            if self._python:  # the agent runs here: its interpreter and runtimes are facts of the device too
                agent = super().info()
                facts.update({k: agent[k] for k in _AGENT_FACTS if k in agent})
                facts["emulated"] = bool(facts["emulated"] or agent.get("emulated"))
                if agent.get("probe_rejected"):
                    facts["probe_rejected"] = agent["probe_rejected"]
            else:
                facts["python"] = None
            self._info = {**facts, "name": self.name, "kind": self.kind, "serial": self.serial}
            self._info["benchmark_model"] = self.benchmark_model
        return dict(self._info)

    # -- persistent session ---------------------------------------------------------------------------------
    def session(self, artifact_dir: str | Path, job: dict[str, Any], timeout: float | None = 600) -> "AdbSession":
        """One `agent serve` behind one `adb shell -T` for `artifact_dir` (see `AdbSession`)."""
        return AdbSession(self, artifact_dir, job, timeout)

    # -- benchmark_model -----------------------------------------------------------------------------------
    def benchmark(
        self,
        artifact_path: str | os.PathLike[str],
        threads: int | None,
        runs: int,
        warmup: int,
        use_xnnpack: bool | None = True,
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        timeout: float | None = 600.0,
    ) -> BenchmarkModelResult:
        """Push a .tflite (a file, or an artifact directory with manifest.json) and time it with `benchmark_model`.

        The model goes to `WORKDIR/models/<sha256[:16]>/<name>`, pushed only when absent. The binary runs as
        `benchmark_model --graph=... --num_threads=... --num_runs=... --warmup_runs=... --use_xnnpack=...`
        (see `benchmark_argv`; `use_xnnpack=None` for LiteRT's CompiledModel binary), with `env` set through
        `env K=V`, stderr folded into stdout. Raises JobFailed with the output's tail when it exits non-zero or
        prints no timings.
        """
        if not self.benchmark_model:
            raise DeviceError(
                f"{self.name}: no benchmark_model binary configured: push LiteRT's benchmark_model to the device "
                "(`adb push benchmark_model /data/local/tmp/ && adb shell chmod +x /data/local/tmp/benchmark_model`) and "
                "set benchmark_model = \"/data/local/tmp/benchmark_model\" for this device in devices.toml"
            )
        local = _tflite_file(Path(artifact_path))
        digest = sha256_file(local)
        remote = f"{self._workdir}/models/{digest[:16]}/{local.name}"
        if not self.exists(remote):
            self.push(local, remote)
        probe = self.shell(f"test -x {_q(self.benchmark_model)}", timeout=self.command_timeout)
        if probe.returncode != 0:
            raise DeviceError(
                f"{self.name}: benchmark_model {self.benchmark_model!r} is missing or not executable on the device "
                f"(push it, then `adb -s {self.serial} shell chmod +x {self.benchmark_model}`)"
            )
        argv = benchmark_argv(self.benchmark_model, remote, threads, runs, warmup, use_xnnpack=use_xnnpack, extra=extra)
        if env:
            argv = ["env", *(f"{k}={v}" for k, v in env.items()), *argv]
        try:
            res = self.shell(shell_command(argv) + " 2>&1", timeout=timeout)
        except DeviceTimeout as exc:
            raise DeviceTimeout(f"{self.name}: benchmark_model did not finish within {timeout:g} s ({local.name})") from exc
        if res.returncode != 0:
            raise JobFailed(f"{self.name}: benchmark_model exited {res.returncode} on {local.name}; last lines:\n{_tail(res.stdout + res.stderr)}")
        try:
            return parse_benchmark_output(res.stdout + res.stderr)
        except ValueError as exc:
            raise JobFailed(f"{self.name}: {exc}") from exc


class AdbSession(LocalSession):
    """The agent on the device behind one `adb -s SERIAL shell -T 'exec PYTHON agent serve JOB'`: the local adb
    client's stdin / stdout carry the frames (shell_v2 without a PTY is binary-clean both ways; stderr comes back
    apart, into the tail that explains a failure). Killing the client does not stop the command on the device,
    so a timeout or an abort first kills the agent there (`kill_agents` on the session's job path), then the
    client. A device that dropped off fails the request in flight (JobFailed); the next request starts a new
    agent after the device is checked again (`AdbDevice._ensure`, reconnecting a network serial)."""

    device: AdbDevice

    def _command(self) -> list[str]:
        dev = self.device
        dev._ensure()
        return [dev.adb, "-s", dev.serial, "shell", "-T", "exec " + shell_command([*dev.python(), dev.agent(), "serve", self.job_path])]

    def _terminate(self, grace: float = 0.0) -> str:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                proc.wait(timeout=grace)  # an agent that is exiting on its own ends its client
            except subprocess.TimeoutExpired:
                self.device.kill_agents(self.job_path)  # on the device, before its client goes
        elif proc is not None:  # the client ended: if adb said the device is gone, check it before the next agent
            self.device._ready = False
        return super()._terminate(grace)


def _split_sections(text: str) -> dict[str, str]:
    """Split `info()`'s combined output at the `@@edgecam:NAME@@` marker lines ("" = before the first)."""
    sections: dict[str, list[str]] = {"": []}
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("@@edgecam:") and stripped.endswith("@@"):
            current = stripped[len("@@edgecam:"):-2]
            sections[current] = []
        else:
            sections[current].append(line)
    return {k: "\n".join(v) for k, v in sections.items()}


def parse_getprop(text: str) -> dict[str, str]:
    """`getprop` output (`[key]: [value]` per line) as a dict."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and "]: [" in line and line.endswith("]"):
            key, _, value = line[1:-1].partition("]: [")
            props[key] = value
    return props


def _cpuinfo_fields(text: str) -> tuple[str | None, int]:
    """CPU model (first of "model name", "Hardware", "Processor", "CPU part") and processor count."""
    fields: dict[str, str] = {}
    count = 0
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key == "processor":
            count += 1
        if key not in fields and value.strip():
            fields[key] = value.strip()
    for key in ("model name", "Hardware", "Processor", "CPU part"):
        if fields.get(key):
            return fields[key], count
    return None, count


def _possible_cpus(text: str) -> int | None:
    """CPU count from /sys/devices/system/cpu/possible ("0-7", "0,2-3")."""
    total = 0
    try:
        for part in text.strip().split(","):
            lo, _, hi = part.partition("-")
            total += int(hi or lo) - int(lo) + 1
    except ValueError:
        return None
    return total or None


def android_facts(props: Mapping[str, str], sections: Mapping[str, str]) -> dict[str, Any]:
    """The facts `info()` reports, from getprop properties and the /proc sections."""
    abi = props.get("ro.product.cpu.abi", "")
    release = props.get("ro.build.version.release", "")
    sdk = props.get("ro.build.version.sdk", "")
    ram = None
    for line in sections.get("meminfo", "").splitlines():
        if line.startswith("MemTotal:"):
            try:
                ram = int(line.split()[1]) * 1024
            except (IndexError, ValueError):
                pass
    cpu, processors = _cpuinfo_fields(sections.get("cpuinfo", ""))
    soc = " ".join(v for v in (props.get("ro.soc.manufacturer"), props.get("ro.soc.model")) if v)
    emulator = props.get("ro.kernel.qemu") == "1" or props.get("ro.boot.qemu") == "1"
    return {
        "model": props.get("ro.product.model"),
        "manufacturer": props.get("ro.product.manufacturer"),
        "abi": abi or None,
        "arch": ABI_ARCH.get(abi, abi or None),
        "os": f"Android {release}" + (f" (API {sdk})" if sdk else "") if release else None,
        "android_release": release or None,
        "sdk": int(sdk) if sdk.isdigit() else None,
        "cpu": cpu or soc or props.get("ro.board.platform") or props.get("ro.hardware"),
        "soc": soc or props.get("ro.board.platform") or None,
        "cores": _possible_cpus(sections.get("possible", "")) or processors or None,
        "ram_bytes": ram,
        "kernel": sections.get("uname", "").strip() or None,
        "emulator": emulator,
        "emulated": emulator,  # its latency is the emulator's, not a phone's (`DeviceSpec.is_emulated`)
    }


def _tflite_file(path: Path) -> Path:
    """The .tflite to benchmark: `path` itself, or the model file an artifact directory's manifest names."""
    if path.is_dir():
        mpath = path / "manifest.json"
        try:
            manifest = json.loads(mpath.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"artifact {path}: cannot read manifest.json ({exc})") from exc
        path = path / str(manifest.get("file", ""))
    if not path.is_file():
        raise ArtifactError(f"model file {path} not found")
    if path.suffix != ".tflite":
        raise ArtifactError(f"benchmark_model runs .tflite models; {path.name} is not one")
    return path
