"""The device-side agent: runs one job (load an artifact, time it, run the inputs) and writes the results.

Torch-free and Python >= 3.8: it imports the standard library, numpy and the one runtime the job names.
Invoked as `python -m edgecam.devices.agent JOB_DIR`; JOB_DIR holds `job.json` (and `inputs.npy`), and
receives `result.json` (+ `outputs.npz` for mode "run"). Two modes, always in separate processes:

- "run":    init (session creation), first inference, `warmup` runs, `iterations` timed runs at
            `batch_size` (raw samples kept), then every input in batches -> logits / features.
- "memory": peak resident set size of a process that imports the runtime, loads the model and runs a few
            inferences (kernel-tracked peak, `resource.getrusage`), apart from the timing pass so that
            memory accounting never perturbs latency samples.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any, Dict, List

AGENT_PROTOCOL = 1


def _peak_rss_bytes() -> int:
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
        return _peak_rss_bytes()


def _load_runtime(job: Dict[str, Any]) -> Any:
    from edgecam.runtimes import runtime_class

    cls = runtime_class(job["runtime"])
    opts = dict(job.get("runtime_options") or {})
    return cls(job["artifact"], **opts)


def _batches(x: Any, size: int) -> List[Any]:
    return [x[i : i + size] for i in range(0, len(x), size)]


def run_job(job_dir: str) -> Dict[str, Any]:
    """Execute `job_dir/job.json`; returns the result dict (also written to `job_dir/result.json`)."""
    import numpy as np

    with open(os.path.join(job_dir, "job.json")) as f:
        job = json.load(f)
    mode = job.get("mode", "run")
    inputs = np.load(os.path.join(job_dir, "inputs.npy"), allow_pickle=False)
    input_name = job.get("input_name", "input")
    result: Dict[str, Any] = {"protocol": AGENT_PROTOCOL, "mode": mode, "python": sys.version.split()[0]}
    if mode == "memory":
        result["rss_before_load_bytes"] = _current_rss_bytes()
        rt = _load_runtime(job)
        for batch in _batches(inputs[: max(1, int(job.get("batch_size", 1))) * 3], int(job.get("batch_size", 1))):
            rt.run({input_name: batch})
        result["rss_after_run_bytes"] = _current_rss_bytes()
        result["peak_rss_bytes"] = _peak_rss_bytes()
        result["runtime"] = rt.describe()
        rt.close()
    elif mode == "run":
        bs = int(job.get("batch_size", 1))
        sample = np.ascontiguousarray(inputs[:bs])
        t0 = time.perf_counter()
        rt = _load_runtime(job)
        t1 = time.perf_counter()
        rt.run({input_name: sample})
        t2 = time.perf_counter()
        for _ in range(int(job.get("warmup", 5))):
            rt.run({input_name: sample})
        samples = []
        for _ in range(int(job.get("iterations", 50))):
            s = time.perf_counter()
            rt.run({input_name: sample})
            samples.append(time.perf_counter() - s)
        result.update({"init_s": t1 - t0, "first_s": t2 - t1, "samples_s": samples, "batch_size": bs})
        outs: Dict[str, List[Any]] = {}
        for batch in _batches(inputs, int(job.get("output_batch_size", 32))):
            for k, v in rt.run({input_name: np.ascontiguousarray(batch)}).items():
                outs.setdefault(k, []).append(np.asarray(v))
        np.savez(os.path.join(job_dir, "outputs.npz"), **{k: np.concatenate(v) for k, v in outs.items()})
        result["runtime"] = rt.describe()
        rt.close()
    else:
        raise ValueError("unknown job mode %r; expected 'run' or 'memory'" % mode)
    result["ok"] = True
    return result


def main(argv: List[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m edgecam.devices.agent JOB_DIR\n")
        return 2
    job_dir = argv[0]
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
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
