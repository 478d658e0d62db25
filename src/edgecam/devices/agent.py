"""The device-side agent: runs one job (load an artifact, time it, run the inputs) and writes the results.

Torch-free and Python >= 3.8: it imports the standard library, numpy and the one runtime the job names.
Shipped to devices as one zipapp (`edgecam.devices.archive`) and invoked as `python AGENT.pyz run JOB_DIR`
(or `python -m edgecam.devices.agent run JOB_DIR` where edgecam is installed); `python AGENT.pyz probe`
prints the device's facts as JSON. JOB_DIR holds `job.json` (and `inputs.npy`), and receives `result.json`
(+ `outputs.npz` for modes "run" and "forward"); `agent.pid` marks a job in progress so that a host which
lost its connection can stop a stale run before retrying. Four job modes, always in separate processes:

- "run":    init (session creation), first inference, `warmup` runs, `iterations` timed runs at
            `batch_size` (raw samples kept), then every input in batches -> logits / features.
- "forward": every input in batches -> logits / features, untimed (the device session that gradient-free
            CAMs and the faithfulness curves send their perturbed inputs through).
- "masked": every image times each of its masks (`masks.npy`, composed on the device) -> logits (Score-CAM).
- "memory": peak resident set size of a process that imports the runtime, loads the model and runs a few
            inferences (kernel-tracked peak, `resource.getrusage`), apart from the timing pass so that
            memory accounting never perturbs latency samples.

`python AGENT.pyz serve JOB.json` is the persistent mode (`edgecam.devices.serve`): one process loads the
runtime once and answers framed requests on stdin / stdout (forward, masked, scorecam, rise, perturb) until
closed; the explain stage's device session runs on it. The timing pass stays a "run" job of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from typing import Any, Dict, List, Optional, Tuple

AGENT_PROTOCOL = 1


def peak_rss_bytes() -> int:
    """Peak RSS of this process so far.

    Linux: VmHWM from /proc/self/status, the high-water mark of this process image. Not ru_maxrss: Linux
    carries ru_maxrss across execve, so a child forked from a 1 GB host would report the host's peak.
    Elsewhere: ru_maxrss (bytes on macOS), psutil's peak working set on Windows.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) if sys.platform == "darwin" else int(peak) * 1024
    except ImportError:  # Windows
        import psutil  # type: ignore[import-not-found]

        info = psutil.Process().memory_info()
        return int(getattr(info, "peak_wset", info.rss))


def _current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return peak_rss_bytes()


def apply_cpu_budget(cores: Optional[int]) -> Optional[List[int]]:
    """Pin this process to the first `cores` CPUs it may use (Linux `sched_setaffinity`), so a big machine
    can stand in for a smaller board; returns the CPU set in force (None where affinity is unsupported)."""
    if not hasattr(os, "sched_getaffinity"):
        if cores:
            raise RuntimeError("a CPU budget (cores = %d) needs Linux sched_setaffinity; this OS has none" % cores)
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if cores:
        if cores > len(allowed):
            raise RuntimeError("CPU budget of %d cores asked, but only %d CPUs are available: %s" % (cores, len(allowed), allowed))
        os.sched_setaffinity(0, allowed[:cores])
    return sorted(os.sched_getaffinity(0))


class ArtifactCorrupt(ValueError):
    """The model file on the device does not match the sha256 in its manifest.json (truncated, corrupt)."""


def verify_artifact(model_path: str) -> None:
    """Check the model file against its manifest's sha256 before a runtime parses it: a truncated copy on
    the board fails with this message, not a runtime's parse error (or a silent wrong answer). A marker
    beside the file (size, mtime, digest) spares re-hashing an unchanged file on every job."""
    import hashlib

    manifest_path = os.path.join(os.path.dirname(model_path), "manifest.json")
    if not os.path.isfile(manifest_path):
        return
    with open(manifest_path) as f:
        expected = json.load(f).get("sha256")
    if not expected:
        return
    st = os.stat(model_path)
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": expected}
    marker = model_path + ".verified"
    try:
        with open(marker) as f:
            if json.load(f) == stamp:
                return
    except (OSError, ValueError):
        pass
    h = hashlib.sha256()
    with open(model_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != expected:
        raise ArtifactCorrupt("artifact %s: sha256 %s does not match its manifest.json (%s): the copy on the device is corrupt or truncated"
                              % (model_path, h.hexdigest()[:16], expected[:16]))
    try:
        with open(marker, "w") as f:
            json.dump(stamp, f)
    except OSError:  # a read-only artifact directory: verify again next time
        pass


def load_runtime(job: Dict[str, Any]) -> Any:
    from edgecam.runtimes import RUNTIMES, runtime_class

    verify_artifact(job["artifact"])
    entry = job.get("runtime_entry")
    if entry is not None and job["runtime"] not in RUNTIMES:  # registered on the host from outside edgecam; shipped in the archive
        RUNTIMES.add_lazy(job["runtime"], str(entry))
    cls = runtime_class(job["runtime"])
    opts = dict(job.get("runtime_options") or {})
    return cls(job["artifact"], **opts)


def _batches(x: Any, size: int) -> List[Any]:
    return [x[i : i + size] for i in range(0, len(x), size)]


def _save_outputs(rt: Any, inputs: Any, job: Dict[str, Any], job_dir: str) -> None:
    """`forward_outputs` over all `inputs` (those named in the job's `outputs`) to `job_dir/outputs.npz`."""
    import numpy as np

    np.savez(os.path.join(job_dir, "outputs.npz"), **forward_outputs(rt, inputs, job, job.get("outputs")))


def forward_outputs(rt: Any, inputs: Any, job: Dict[str, Any], keep: Optional[List[str]] = None) -> Dict[str, Any]:
    """The outputs of `rt` over all `inputs`, in batches of `output_batch_size`; only those named in `keep`
    (e.g. ["logits"]: masked-input forwards need no features back), all of them for None."""
    import numpy as np

    outs: Dict[str, List[Any]] = {}
    for batch in _batches(inputs, int(job.get("output_batch_size", 32))):
        for k, v in rt.run({job.get("input_name", "input"): np.ascontiguousarray(batch, dtype=np.float32)}).items():
            if keep is None or k in keep:
                outs.setdefault(k, []).append(np.asarray(v))
    return {k: np.concatenate(v) for k, v in outs.items()}


def masked_logits(rt: Any, images: Any, masks: Any, job: Dict[str, Any]) -> Any:
    """Logits of every image times each of its masks, composed here on the device: `images` (N, C, H, W),
    `masks` (N, K, H, W) -> (N * K, classes), image-major, in batches of `output_batch_size` per image.
    Shipping 1-channel masks instead of the masked images cuts what a Score-CAM job moves by the channel count."""
    import numpy as np

    bs = int(job.get("output_batch_size", 32))
    out: List[Any] = []
    for i in range(len(images)):
        for j in range(0, masks.shape[1], bs):
            batch = np.ascontiguousarray(images[i][None] * masks[i, j : j + bs, None], dtype=np.float32)
            out.append(np.asarray(rt.run({job.get("input_name", "input"): batch})["logits"]))
    return np.concatenate(out)


def run_job(job_dir: str) -> Dict[str, Any]:
    """Execute `job_dir/job.json`; returns the result dict (also written to `job_dir/result.json`)."""
    import numpy as np

    with open(os.path.join(job_dir, "job.json")) as f:
        job = json.load(f)
    mode = job.get("mode", "run")
    inputs = np.load(os.path.join(job_dir, "inputs.npy"), allow_pickle=False)
    input_name = job.get("input_name", "input")
    result: Dict[str, Any] = {"protocol": AGENT_PROTOCOL, "mode": mode, "python": sys.version.split()[0]}
    result["cpu_budget"] = {"cores": job.get("cores"), "affinity": apply_cpu_budget(job.get("cores"))}
    if mode == "memory":
        result["rss_before_load_bytes"] = _current_rss_bytes()
        rt = load_runtime(job)
        for batch in _batches(inputs[: max(1, int(job.get("batch_size", 1))) * 3], int(job.get("batch_size", 1))):
            rt.run({input_name: batch})
        result["rss_after_run_bytes"] = _current_rss_bytes()
        result["peak_rss_bytes"] = peak_rss_bytes()
    elif mode == "run":
        bs = int(job.get("batch_size", 1))
        sample = np.ascontiguousarray(inputs[:bs])
        t0 = time.perf_counter()
        rt = load_runtime(job)
        t1 = time.perf_counter()
        rt.run({input_name: sample})
        t2 = time.perf_counter()
        for _ in range(int(job.get("warmup", 5))):
            rt.run({input_name: sample})
        sampler = _tegrastats_sampler(job)
        apart = rt.times_logits_apart  # a logits-only engine (runtimes/tensorrt.py)
        timed = rt.run_timed if apart else rt.run
        for _ in range(int(job.get("warmup", 5)) if apart else 0):
            timed({input_name: sample})
        with sampler if sampler is not None else contextlib.nullcontext():
            samples = _time(timed, {input_name: sample}, int(job.get("iterations", 50)))
        if sampler is not None:
            result["tegrastats"] = sampler.summary()
        result.update({"init_s": t1 - t0, "first_s": t2 - t1, "samples_s": samples, "batch_size": bs})
        if apart:  # the logits + features engine, timed apart
            result["samples_with_features_s"] = _time(rt.run, {input_name: sample}, int(job.get("iterations", 50)))
        profile = rt.profile() if hasattr(rt, "profile") else {}
        if profile:
            result["profile"] = profile
        _save_outputs(rt, inputs, job, job_dir)
    elif mode == "forward":
        rt = load_runtime(job)
        _save_outputs(rt, inputs, job, job_dir)
    elif mode == "masked":
        rt = load_runtime(job)
        masks = np.load(os.path.join(job_dir, "masks.npy"), allow_pickle=False)
        np.savez(os.path.join(job_dir, "outputs.npz"), logits=masked_logits(rt, inputs, masks, job))
    else:
        raise ValueError("unknown job mode %r; expected 'run', 'forward', 'masked' or 'memory'" % mode)
    result["runtime"] = rt.describe()
    rt.close()
    result["ok"] = True
    return result


def _time(forward: Any, feeds: Dict[str, Any], iterations: int) -> List[float]:
    """`iterations` wall-clock times of `forward(feeds)`, in seconds."""
    samples = []
    for _ in range(iterations):
        s = time.perf_counter()
        forward(feeds)
        samples.append(time.perf_counter() - s)
    return samples


def _tegrastats_sampler(job: Dict[str, Any]) -> Any:
    """A tegrastats sampler around the timed loop on Jetsons (job "tegrastats": true and the tool present)."""
    if not job.get("tegrastats"):
        return None
    from edgecam.devices.tegrastats import maybe_sampler

    return maybe_sampler(int(job.get("tegrastats_interval_ms", 100)), job.get("tegrastats_executable", "tegrastats"))


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


#: (implementer, part) of /proc/cpuinfo -> core name, for the ARM cores of the boards edgecam targets (an
#: aarch64 kernel prints no model name: a Raspberry Pi 5 says only "CPU part : 0xd0b")
ARM_CORES = {("0x41", "0xd03"): "Cortex-A53", ("0x41", "0xd04"): "Cortex-A35", ("0x41", "0xd05"): "Cortex-A55", ("0x41", "0xd07"): "Cortex-A57",
             ("0x41", "0xd08"): "Cortex-A72", ("0x41", "0xd09"): "Cortex-A73", ("0x41", "0xd0a"): "Cortex-A75", ("0x41", "0xd0b"): "Cortex-A76",
             ("0x41", "0xd0c"): "Neoverse-N1", ("0x41", "0xd0d"): "Cortex-A77", ("0x41", "0xd40"): "Neoverse-V1", ("0x41", "0xd41"): "Cortex-A78",
             ("0x41", "0xd42"): "Cortex-A78AE", ("0x41", "0xd44"): "Cortex-X1", ("0x41", "0xd46"): "Cortex-A510", ("0x41", "0xd47"): "Cortex-A710",
             ("0x41", "0xd49"): "Neoverse-N2", ("0x4e", "0x004"): "NVIDIA Carmel"}


def cpu_model(cpuinfo: Optional[str] = None) -> str:
    """CPU model name from /proc/cpuinfo ("model name" on x86, "Model"/"Hardware", else the ARM core named
    from its implementer and part numbers)."""
    fields: Dict[str, str] = {}
    for line in (_read("/proc/cpuinfo") if cpuinfo is None else cpuinfo).splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    for key in ("model name", "Model", "Hardware", "cpu model"):
        if fields.get(key):
            return fields[key]
    part = fields.get("CPU part", "").lower()
    if part:
        core = ARM_CORES.get((fields.get("CPU implementer", "").lower(), part))
        return "%s (%s)" % (core, part) if core else "ARM part %s" % part
    import platform

    return platform.processor() or platform.machine()


ARCH_FAMILIES = {"aarch64": "arm", "arm64": "arm", "armv7l": "arm", "armv8l": "arm", "armv6l": "arm", "x86_64": "x86", "amd64": "x86", "i686": "x86",
                 "i386": "x86", "riscv64": "riscv", "ppc64le": "ppc", "s390x": "s390"}


def emulation(arch: str, kernel_arch: str, cpuinfo: str) -> Optional[str]:
    """Why this device's CPU is emulated (its latency says nothing about real hardware), None when no sign is
    seen: a userland of another architecture family than the kernel's (qemu-user: uname says aarch64 while
    /proc/sys/kernel/arch says x86_64; a 32-bit ARM userland on an arm64 kernel is native), an ARM userland
    whose /proc/cpuinfo lists x86 CPUs, or an ARM CPU with implementer 0x00 ("reserved for software use":
    QEMU's `max` CPU in a full-system guest)."""
    fam, kfam = ARCH_FAMILIES.get(arch), ARCH_FAMILIES.get(kernel_arch.strip())
    if fam and kfam and fam != kfam:
        return "qemu-user: an %s userland on an %s kernel (/proc/sys/kernel/arch)" % (arch, kernel_arch.strip())
    fields = [line.partition(":")[0].strip() for line in cpuinfo.splitlines()]
    if fam == "arm" and ("vendor_id" in fields or "flags" in fields):
        return "qemu-user: an %s userland on a kernel whose /proc/cpuinfo lists x86 CPUs" % arch
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "CPU implementer" and value.strip().lower() in ("0x00", "0x0", "0"):
            return "CPU implementer 0x00 (reserved for software use: an emulated CPU such as QEMU's max)"
    return None


def ram_bytes() -> Optional[int]:
    """Total RAM (MemTotal of /proc/meminfo, else the physical page count); None where neither is known."""
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def os_name() -> str:
    """The OS's pretty name (/etc/os-release), else `platform.platform()`."""
    import platform

    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return platform.platform()


#: backends probed for although no runtime adapter declares them in its `modules`: none today (TensorRT's is
#: declared by runtimes/tensorrt.py); a backend seen on boards before its adapter exists goes here
UNADAPTED_MODULES: Tuple[str, ...] = ()


def probed_modules() -> List[str]:
    """The modules whose versions the probe reports: every registered runtime's, then UNADAPTED_MODULES."""
    from edgecam.runtimes import runtime_modules

    found = list(runtime_modules())
    return found + [m for m in UNADAPTED_MODULES if m not in found]


def _module_version(name: str) -> Optional[str]:
    """Version of an importable module, None when it is absent (or fails to import: the reason is kept)."""
    import importlib
    import importlib.util

    if importlib.util.find_spec(name) is None:
        return None
    try:
        import importlib.metadata as md

        dist = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}.get(name, name)
        return md.version(dist)
    except Exception:  # noqa: BLE001 - not a distribution (e.g. a system TensorRT); ask the module
        try:
            return str(getattr(importlib.import_module(name), "__version__", "unknown"))
        except Exception as exc:  # noqa: BLE001
            return "broken: %s: %s" % (type(exc).__name__, exc)


def parse_nv_tegra_release(text: str) -> Optional[Dict[str, str]]:
    """`/etc/nv_tegra_release` ("# R35 (release), REVISION: 4.1, GCID: ..., BOARD: ...") -> L4T release."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    if not first.startswith("# R"):
        return None
    major = first[3:].split()[0]
    out = {"l4t_major": major, "raw": first}
    for part in first.split(","):
        key, sep, value = part.partition(":")
        if sep:
            out[key.strip().lower()] = value.strip()
    if "revision" in out:
        out["l4t"] = "%s.%s" % (major, out["revision"])
    return out


def probe() -> Dict[str, Any]:
    """What this device is and which runtimes it can run: printed by `agent.pyz probe` as JSON."""
    import platform

    arch = platform.machine()
    why = emulation(arch, _read("/proc/sys/kernel/arch"), _read("/proc/cpuinfo"))
    facts: Dict[str, Any] = {
        "protocol": AGENT_PROTOCOL,
        "arch": arch,
        "emulated": why is not None,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_bytes": ram_bytes(),
        "os": os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": _module_version("numpy"),
        "runtimes": {name: _module_version(name) for name in probed_modules()},
    }
    if why is not None:
        facts["emulation"] = why
    board = _read("/proc/device-tree/model").strip("\x00\n ")
    if board:
        facts["board"] = board
    tegra = parse_nv_tegra_release(_read("/etc/nv_tegra_release"))
    if tegra is not None:
        import shutil

        facts["jetson"] = {**tegra, "tegrastats": shutil.which("tegrastats") is not None}
    return facts


def lead_process_group() -> None:
    """Make this agent the leader of its own process group (`setsid`), so that the host can stop it and all it
    started (a runtime's helper processes, the tegrastats sampler) with one `kill -9 -PID`. A process that
    already leads a group (sshd's exec of a simple command) keeps it."""
    if hasattr(os, "setsid"):
        try:
            os.setsid()
        except OSError:
            pass


def arm_watchdog(job_dir: str) -> None:
    """End this agent by itself at the job's `watchdog_s` (the host's timeout plus a grace): a job the host gave
    up on (a hung runtime, a lost connection, a killed CLI) never keeps running beside later timings, on any
    transport (a board over SSH or adb, or this machine). SIGALRM's default action kills the process."""
    try:
        with open(os.path.join(job_dir, "job.json")) as f:
            seconds = float(json.load(f).get("watchdog_s") or 0)
    except (OSError, ValueError, AttributeError):
        return  # run_job reports the unreadable job itself
    alarm(seconds)


def alarm(seconds: float) -> None:
    """SIGALRM (default action: the process ends, even inside a hung native call) after `seconds`; 0 or less
    cancels a pending one. A no-op where the platform has no SIGALRM."""
    import signal

    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(max(1, int(seconds + 0.999)) if seconds > 0 else 0)


USAGE = "usage: agent run JOB_DIR | agent probe | agent serve JOB.json [--frames-in REQUESTS --frames-out RESPONSES]\n"


def main(argv: List[str]) -> int:
    if argv == ["probe"]:
        json.dump(probe(), sys.stdout)
        sys.stdout.write("\n")
        return 0
    if argv[:1] == ["serve"]:  # the zipapp's __main__ sends "serve" to devices/serve.py before this runs
        sys.stderr.write("agent: 'serve' is run by the agent archive's entry point (edgecam.devices.serve)\n")
        return 2
    if len(argv) == 2 and argv[0] == "run":
        argv = argv[1:]
    if len(argv) != 1 or argv[0].startswith("-"):
        sys.stderr.write(USAGE)
        return 2
    job_dir = argv[0]
    lead_process_group()
    arm_watchdog(job_dir)
    pid_path = os.path.join(job_dir, "agent.pid")
    with open(pid_path, "w") as f:
        f.write(str(os.getpid()))
    try:
        result = run_job(job_dir)
        code = 0
    except Exception as exc:  # recorded as a failed job by the host, never a silent crash
        result = {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc), "traceback": traceback.format_exc()}
        code = 1
    tmp = os.path.join(job_dir, ".result.json.tmp")
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, os.path.join(job_dir, "result.json"))
    os.remove(pid_path)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
