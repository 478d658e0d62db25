"""Harness overhead (suite items 1 and 2), measured side by side in one run.

1. edgecam's timed loop (the agent's "run" mode, `edgecam.devices.agent.run_job`, executed here on an
   ONNX Runtime adapter loaded once) vs a bare `session.run` loop on the *same* `InferenceSession` and the
   same input, in alternating rounds so machine drift hits both alike: p50 ratio (target <= 1.02). Also the
   `null` runtime's p50 through the whole local-device path (agent subprocess): the harness's floor.
2. edgecam's p50 vs ONNX Runtime's own profiler (`SessionOptions.enable_profiling`; the "model_run" events
   of its JSON trace) for the very same runs: ratio within 3%.

    .venv/bin/python benchmarks/harness_overhead.py [--iterations 300] [--rounds 20] [--models tinycnn]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from _common import THREADS, Model, Row, check, p50_ms, print_rows, setup

WARMUP = 20


@contextlib.contextmanager
def agent_runtime(rt: Any) -> Iterator[None]:
    """Make `edgecam.devices.agent.run_job` use the already-loaded runtime `rt` (its loader,
    `load_runtime`, is swapped for the duration): edgecam's own timed loop, on a session we also hold.
    The agent closes its runtime after each job, so `rt.close` is a no-op meanwhile (no wrapper object:
    the agent calls the adapter's own `run`, as on a device)."""
    from edgecam.devices import agent

    real = agent.load_runtime
    agent.load_runtime = lambda job: rt  # type: ignore[assignment]
    rt.close = lambda: None  # instance attribute: shadows the class's close until deleted
    try:
        yield
    finally:
        agent.load_runtime = real  # type: ignore[assignment]
        del rt.close


def agent_samples(job_dir: Path, x: np.ndarray, iterations: int, warmup: int = WARMUP) -> list[float]:
    """One "run" job of the real agent code (timed loop + outputs) on one input; its raw samples (s)."""
    from edgecam.devices import agent

    job_dir.mkdir(parents=True, exist_ok=True)
    np.save(job_dir / "inputs.npy", np.ascontiguousarray(x[:1], dtype=np.float32))
    (job_dir / "job.json").write_text(json.dumps({"runtime": "onnxruntime", "artifact": "(preloaded)", "mode": "run", "warmup": warmup, "iterations": iterations, "batch_size": 1}))
    return list(agent.run_job(str(job_dir))["samples_s"])


def bare_samples(session: Any, feed: dict[str, np.ndarray], names: list[str], iterations: int, warmup: int = WARMUP) -> list[float]:
    """The reference: nothing but `InferenceSession.run` between two `perf_counter` calls."""
    for _ in range(warmup):
        session.run(names, feed)
    out = []
    for _ in range(iterations):
        s = time.perf_counter()
        session.run(names, feed)
        out.append(time.perf_counter() - s)
    return out


def load_ort(path: Path, profile_prefix: str | None = None) -> Any:
    """edgecam's ONNX Runtime adapter on `path` (2 threads, its own session options); with
    `profile_prefix`, ORT's profiler is switched on in those same options (`InferenceSession` is wrapped
    while the adapter builds its session, so nothing else about the session changes)."""
    import onnxruntime as ort

    from edgecam.runtimes import runtime_class

    real = ort.InferenceSession

    def profiled(model: str, sess_options: Any = None, **kw: Any) -> Any:
        sess_options.enable_profiling = True
        sess_options.profile_file_prefix = profile_prefix
        return real(model, sess_options=sess_options, **kw)

    if profile_prefix:
        ort.InferenceSession = profiled  # type: ignore[misc]
    try:
        return runtime_class("onnxruntime")(str(path), threads=THREADS)
    finally:
        ort.InferenceSession = real  # type: ignore[misc]


def harness_vs_bare(m: Model, x: np.ndarray, iterations: int, rounds: int, tmp: Path) -> tuple[Row, float]:
    """Item 1: agent loop vs bare loop on one session, alternating rounds; (row, bare p50 in ms)."""
    rt = load_ort(m.onnx_file)
    feed = {rt.input_name: np.ascontiguousarray(x[:1], dtype=np.float32)}
    ours: list[float] = []
    bare: list[float] = []
    per_round = []
    with agent_runtime(rt):
        for r in range(rounds):
            order = ("agent", "bare") if r % 2 == 0 else ("bare", "agent")
            got: dict[str, list[float]] = {}
            for who in order:
                if who == "agent":
                    got[who] = agent_samples(tmp / f"{m.name}-agent-{r}", x, iterations)
                else:
                    got[who] = bare_samples(rt.session, feed, rt.output_names, iterations)
            ours += got["agent"]
            bare += got["bare"]
            per_round.append(p50_ms(got["agent"]) / p50_ms(got["bare"]))
    rt.close()
    ratio = p50_ms(ours) / p50_ms(bare)
    return Row("1", f"harness p50 / bare session.run p50, {m.name} fp32 ORT", ratio, "x", "<= 1.02", check(ratio, "<=", 1.02),
               f"edgecam {p50_ms(ours):.4f} ms vs bare {p50_ms(bare):.4f} ms; {rounds} alternating rounds x {iterations}; median of per-round ratios {np.median(per_round):.4f}"), p50_ms(bare)


def null_floor(m: Model, x: np.ndarray, iterations: int, tmp: Path, bare_p50_ms: float | None = None) -> Row:
    """Item 1: the `null` runtime's p50 through the whole local-device path (agent in a subprocess)."""
    from edgecam.devices.local import LocalDevice

    dev = LocalDevice(workdir=str(tmp / "null-device"))
    job = {"runtime": "null", "runtime_options": {}, "warmup": WARMUP, "iterations": iterations, "batch_size": 1, "mode": "run"}
    result, _ = dev.run_job(m.onnx_fp32, x[:8], job)
    p50 = p50_ms(result["samples_s"])
    share = f"; {100 * p50 / bare_p50_ms:.2f}% of {m.name}'s bare ORT p50" if bare_p50_ms else ""
    return Row("1", f"null runtime p50 (harness floor), local device, {m.name} shapes", p50 * 1e3, "us", "", None, f"{iterations} iterations{share}")


def model_run_durations(trace: Path) -> list[float]:
    """Durations (s) of ORT's "model_run" events, in order (profiler JSON: a list of trace events, `dur` in
    microseconds; onnxruntime/core/common/profiler.cc)."""
    events = json.loads(trace.read_text())
    runs = sorted((e for e in events if e.get("name") == "model_run" and e.get("cat") == "Session"), key=lambda e: e["ts"])
    return [e["dur"] * 1e-6 for e in runs]


def versus_ort_profiler(m: Model, x: np.ndarray, iterations: int, tmp: Path) -> Row:
    """Item 2: one agent "run" job on a profiling session; its samples vs the profiler's model_run events
    of the same timed iterations (the first run and the warm-up come before them, output batches after)."""
    rt = load_ort(m.onnx_file, str(tmp / f"ort-profile-{m.name}"))
    with agent_runtime(rt):
        ours = agent_samples(tmp / f"{m.name}-profiled", x, iterations)
    # then a bare loop on the same profiled session: how much of the gap is the Python binding itself
    bare = bare_samples(rt.session, {rt.input_name: np.ascontiguousarray(x[:1], dtype=np.float32)}, rt.output_names, iterations)
    trace = Path(rt.session.end_profiling())
    rt.close()
    runs = model_run_durations(trace)
    # agent job: first run, warm-up, timed runs, one output batch (1 input); bare loop: warm-up, timed runs
    timed = runs[1 + WARMUP : 1 + WARMUP + iterations]
    bare_start = 1 + WARMUP + iterations + 1 + WARMUP
    timed_bare = runs[bare_start : bare_start + iterations]
    if len(timed) != iterations or len(timed_bare) != iterations:
        raise RuntimeError(f"ORT profile {trace}: {len(runs)} model_run events, expected {bare_start + iterations}")
    ratio = p50_ms(ours) / p50_ms(timed)
    paired = np.median(np.asarray(ours) / np.asarray(timed))
    return Row("2", f"edgecam p50 / ORT profiler model_run p50, {m.name} fp32", ratio, "x", "within 3%", check(ratio, "within", 0.03),
               f"edgecam {p50_ms(ours):.4f} ms vs ORT {p50_ms(timed):.4f} ms over the same {iterations} runs (median per-run ratio {paired:.4f}); "
               f"a bare session.run loop on the same session: {p50_ms(bare) / p50_ms(timed_bare):.4f}x its model_run p50")


def run_items(models: dict[str, Model], x: np.ndarray, iterations: int = 300, rounds: int = 20, profile_iterations: int = 1000) -> list[Row]:
    """Items 1 and 2 for every model in `models`."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="edgecam-bench-") as tmp_s:
        tmp = Path(tmp_s)
        bare_p50 = {}
        for name, m in models.items():
            row, bare_p50[name] = harness_vs_bare(m, x, iterations, rounds, tmp)
            rows.append(row)
        first = next(iter(models))
        rows.append(null_floor(models[first], x, iterations, tmp, bare_p50[first]))
        rows += [versus_ort_profiler(m, x, profile_iterations, tmp) for m in models.values()]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=300, help="timed runs per round and side")
    ap.add_argument("--rounds", type=int, default=20, help="alternating rounds")
    ap.add_argument("--models", nargs="+", default=["tinycnn", "mobilenet_v2"])
    args = ap.parse_args()
    s = setup(args.models)
    print_rows(run_items(s.models, s.data.test_x, args.iterations, args.rounds), "Harness overhead")


if __name__ == "__main__":
    main()
