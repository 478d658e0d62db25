"""Stage 3, measure: each variant's timing pass and its separate memory pass on the device, each a fresh agent
process (latency is never measured beside other work), on a bounded input set: one batch for the timing
loop, three for the memory pass, whatever the test split's size (the outputs of every test image come from
the explain stage's device session, shard by shard). A failure is recorded on the variant, never raised: a
crashed runtime, a timeout or a lost board must not end the sweep."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecam.bench.store import Job, job_key
from edgecam.bench.variant import Variant
from edgecam.errors import EdgecamError
from edgecam.runtimes import RUNTIMES

if TYPE_CHECKING:
    from edgecam.bench.context import RunContext
    from edgecam.config import RuntimeSpec
    from edgecam.devices.inventory import DeviceSpec


def device_job(rspec: "RuntimeSpec", dspec: "DeviceSpec") -> dict[str, Any]:
    """The job fields every run of `rspec` on `dspec` shares: runtime (and its "module:Class" entry when it is
    not one of edgecam's), its options (the inventory's thread count where the experiment sets none) and the
    device's CPU budget."""
    options = rspec.options()
    if options.get("threads") is None and dspec.threads is not None:
        options["threads"] = dspec.threads
    job: dict[str, Any] = {"runtime": rspec.name, "runtime_options": options}
    entry = RUNTIMES.get(rspec.name)
    if not entry.startswith("edgecam."):  # a runtime from the user's own code: the device imports it by its entry
        job["runtime_entry"] = entry
    if dspec.cores is not None:
        job["cores"] = dspec.cores
    return job


@dataclass(frozen=True)
class DeviceRun:
    """What a variant's timing and memory passes answered, checked (`result`, `memory`), or why they failed
    (`error`; nothing the device answered is kept then)."""

    result: dict[str, Any]
    memory: dict[str, Any]
    error: str | None = None


def run_variant(ctx: "RunContext", v: Variant, rspec: "RuntimeSpec") -> DeviceRun:
    """Timing pass, then a separate memory pass, on the run's device; a failure is returned with the device's
    stderr (transport errors were already retried with backoff by the device)."""
    cfg, dspec = ctx.cfg, ctx.dspec
    bs = cfg.bench.batch_size
    x = ctx.data.test_batch(np.arange(min(3 * bs, ctx.data.n_test))).x
    job = {**device_job(rspec, dspec), "warmup": cfg.bench.warmup, "iterations": cfg.bench.iterations, "batch_size": cfg.bench.batch_size}
    if dspec.tegrastats:
        job["tegrastats"] = True
    try:
        result, _ = ctx.device.run_job(v.artifact_dir, x[:bs], {**job, "mode": "run", "outputs": []}, timeout=cfg.bench.timeout_s)
        check_timing(result, cfg.bench.iterations)
        memory: dict[str, Any] = {}
        if cfg.bench.memory:
            memory, _ = ctx.device.run_job(v.artifact_dir, x, {**job, "mode": "memory"}, timeout=cfg.bench.timeout_s)
            check_memory(memory)
        return DeviceRun(result, memory)
    except (EdgecamError, OSError, TimeoutError) as exc:
        return DeviceRun({}, {}, f"{type(exc).__name__}: {exc}")


def _seconds_ok(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value < 1e6


def check_timing(result: Any, iterations: int) -> None:
    """A device's timing result as the tables will use it, or JobFailed: `iterations` finite, non-negative
    samples in seconds and the init / first-run times (a board answering strings, NaN or 1e300 fails here)."""
    from edgecam.devices.errors import JobFailed

    samples = result.get("samples_s") if isinstance(result, dict) else None
    if not isinstance(samples, list) or len(samples) != iterations or not all(_seconds_ok(t) for t in samples):
        raise JobFailed(f"the device's timing answer is unusable: expected {iterations} latency samples in seconds, got {str(samples)[:200]}")
    apart = result.get("samples_with_features_s")
    if apart is not None and (not isinstance(apart, list) or len(apart) != iterations or not all(_seconds_ok(t) for t in apart)):
        raise JobFailed(f"the device's timing answer is unusable: expected {iterations} logits + features samples in seconds, got {str(apart)[:200]}")
    for key in ("init_s", "first_s"):
        if key in result and not _seconds_ok(result[key]):
            raise JobFailed(f"the device's timing answer is unusable: {key} = {str(result[key])[:100]}")


def check_memory(memory: Any) -> None:
    """A device's memory result: byte counts as non-negative integers below 2**50 (or absent)."""
    from edgecam.devices.errors import JobFailed

    if not isinstance(memory, dict):
        raise JobFailed(f"the device's memory answer is a {type(memory).__name__}, not an object")
    for key, value in memory.items():
        if key.endswith("_bytes") and value is not None and not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**50):
            raise JobFailed(f"the device's memory answer is unusable: {key} = {str(value)[:100]}")


def run_key(ctx: "RunContext", v: Variant, rspec: "RuntimeSpec", ckpt_sha: str) -> str:
    """What a variant's device run depends on: model, weights, artifact, runtime and options, the device (its
    fingerprint: board, runtime versions, agent), data."""
    return job_key(kind="run", model=v.model, weights=ckpt_sha, artifact=v.manifest.get("sha256"), format=v.format, precision=v.precision,
                   runtime=v.runtime, job=device_job(rspec, ctx.dspec), device=ctx.device_id or ctx.dspec.name, bench=ctx.cfg.bench.__dict__,
                   data=ctx.data.fingerprint, images=ctx.data.n_test, timing_inputs="first batch")


def measure(ctx: "RunContext", v: Variant, rspec: "RuntimeSpec", ckpt_sha: str) -> bool:
    """`run_variant` as a job of the run's store: a finished one is read back, a new one is run and committed
    when it succeeded. Returns whether it was reused."""

    failed: list[DeviceRun] = []

    def compute() -> Job | None:
        run = run_variant(ctx, v, rspec)
        if run.error:
            failed.append(run)
            return None
        return Job({"result": run.result, "memory": run.memory})

    def check(job: Job) -> None:  # a stored timing job passes the checks a fresh answer passed (a hand-edited one is redone)
        check_timing(job.meta["result"], ctx.cfg.bench.iterations)
        check_memory(job.meta["memory"])

    job, reused = ctx.store.get_or_compute("run", run_key(ctx, v, rspec, ckpt_sha), compute, check)
    if job is not None:
        v.result, v.memory = job.meta["result"], job.meta["memory"]
    elif failed:
        v.result, v.memory, v.error = {}, {}, failed[0].error
    return reused
