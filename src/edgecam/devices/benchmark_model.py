"""Run and read LiteRT / TensorFlow Lite's `benchmark_model` binary (tensorflow/lite/tools/benchmark, now
google-ai-edge/LiteRT tflite/tools/benchmark and litert/tools).

Standard library only, Python >= 3.8. Formats understood, all read from the same text (stdout + stderr):

- TF Lite 2.x (`BenchmarkTfLiteModel`): a `count=N first=.. curr=.. min=.. max=.. avg=.. std=..` line per run
  phase (warm-up, then the timed runs), then `Inference timings in us: Init: .., First inference: ..,
  Warmup (avg): .., Inference (avg): ..`, then memory: `Peak memory footprint (MB): init=.. overall=..`
  (TF ~2.4) or `Memory footprint delta from the start of the tool (MB): init=.. overall=..` (later), and with
  `--report_peak_memory_footprint=true` `Overall peak memory footprint (MB) via periodic monitoring: ..`.
  Since TF ~2.16 the count lines end in ` p5=.. median=.. p95=..`; lines may carry an `INFO: ` or logcat
  prefix.
- LiteRT 2.x CompiledModel benchmark (litert/tools/benchmark_litert_model.h): the same count lines, then a
  `========== BENCHMARK RESULTS ==========` block (`Model initialization: X ms`, `Warmup (first): X ms`,
  `Inference (avg): X ms (N runs)`, `Inference (min|max): X ms`, `Inference (std): X`, `Init footprint: X MB`,
  `Overall footprint: X MB`, `Peak memory: X MB`).
- TF 1.x: `Average inference timings in us: Warmup: .., Init: .., no stats: ..` (later `Inference: ..`).

Units and definitions (from the tool's sources, tsl/util/stats_calculator.h and benchmark_model.cc):
times are printed in microseconds (LiteRT block: milliseconds); `std` is the *population* standard deviation,
truncated to an integer; `p5/median/p95` are order statistics `sorted[n * p // 100]` (the upper median for
even n, no interpolation); "MB" is MiB (KiB / 1024); memory comes from `getrusage` max RSS on Linux/Android,
so `init`/`overall` are max-RSS *deltas* from the tool's start and the periodic "peak" is the process's
absolute max RSS. The count line has no p90/p99, and builds before the percentile change print no median.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

__all__ = ["BenchmarkModelResult", "parse_benchmark_output", "benchmark_argv", "to_latency_columns"]

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf"
_TFLITE_SUMMARY = re.compile(
    rf"Inference timings in us: Init: ({_NUM}), First inference: ({_NUM}), Warmup \(avg\): ({_NUM}), Inference \(avg\): ({_NUM})"
)
_TF1_SUMMARY = re.compile(rf"Average inference timings in us: Warmup: ({_NUM}), Init: ({_NUM}), (?:no stats|Inference): ({_NUM})")
_LITERT_HEADER = "========== BENCHMARK RESULTS =========="
_LITERT_LINE = re.compile(rf"(Model initialization|Warmup \(first\)|Warmup \(avg\)|Inference \((?:avg|min|max|std)\)|Init footprint|Overall footprint|Peak memory):\s+({_NUM})(?: (?:ms|MB))?(?: \((\d+) runs\))?\s*$")
_COUNT = re.compile(r"(?:^|[\s:])count=(\d+)")
_FIELD = re.compile(rf"\b(first|curr|min|max|avg|std|p5|median|p95)=({_NUM})")
_PROFILER_PREFIXES = ("Timings (microseconds):", "Memory (bytes):")  # per-op profiler summaries, not run phases
_MEMORY = re.compile(rf"(?:Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\): init=({_NUM}) overall=({_NUM})")
_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({_NUM})")
_MODEL_SIZE = re.compile(rf"The input model file size \(MB\): ({_NUM})")


@dataclass(frozen=True)
class RunStats:
    """One `count=...` line: the statistics of one run phase (times in microseconds, as printed)."""

    count: int
    first: Optional[float] = None
    curr: Optional[float] = None
    min: Optional[float] = None
    max: Optional[float] = None
    avg: Optional[float] = None
    std: Optional[float] = None
    p5: Optional[float] = None
    median: Optional[float] = None
    p95: Optional[float] = None


@dataclass(frozen=True)
class BenchmarkModelResult:
    """What one `benchmark_model` run reported, in milliseconds and MiB (None: not in the output).

    `inference_*` describe the timed runs (not the warm-up). `inference_std_ms` is as printed: the population
    standard deviation (see `to_latency_columns` for the sample one). `memory_init_mb` / `memory_overall_mb`
    are max-RSS deltas from the tool's start; `peak_memory_mb` is the absolute peak, only printed with
    `--report_peak_memory_footprint=true`.
    """

    init_ms: float
    first_ms: Optional[float]
    warmup_avg_ms: Optional[float]
    inference_avg_ms: float
    inference_std_ms: Optional[float] = None
    inference_min_ms: Optional[float] = None
    inference_max_ms: Optional[float] = None
    inference_count: Optional[int] = None
    inference_p5_ms: Optional[float] = None
    inference_median_ms: Optional[float] = None
    inference_p95_ms: Optional[float] = None
    warmup_count: Optional[int] = None
    memory_init_mb: Optional[float] = None
    memory_overall_mb: Optional[float] = None
    peak_memory_mb: Optional[float] = None
    model_size_mb: Optional[float] = None
    format: str = "tflite"  # "tflite" (TF Lite 2.x), "litert" (CompiledModel results block), "tflite-v1"


def _f(text: str) -> float:
    return float(text)


def _ms(us: Optional[float]) -> Optional[float]:
    return None if us is None else us / 1000.0


def parse_run_stats(line: str) -> Optional[RunStats]:
    """Parse one `count=...` line (any prefix; `curr=X(all same)` and `count=1 curr=X` included)."""
    if any(p in line for p in _PROFILER_PREFIXES):
        return None
    m = _COUNT.search(line)
    if not m:
        return None
    fields = {k: _f(v) for k, v in _FIELD.findall(line[m.end():])}
    count = int(m.group(1))
    if "min" not in fields and "curr" in fields:  # Stat::OutputToStream prints only curr when all values agree
        same = fields["curr"]
        fields.update(first=same, min=same, max=same, avg=same, std=0.0)
    return RunStats(count=count, **fields)  # type: ignore[arg-type]


def _close(a: float, b: float) -> bool:
    """Same value printed twice (6 significant digits, or ms with 2 decimals)?"""
    return abs(a - b) <= max(1e-5 * max(abs(a), abs(b)), 10.0)  # 10 us: the LiteRT block's 0.01 ms rounding


def _tail(text: str, lines: int = 15) -> str:
    kept = [ln for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return "\n".join(kept) if kept else "(no output)"


_Values = Dict[str, Tuple[float, Optional[int]]]  # a summary's values: name -> (value, run count where printed)


def _litert_block(lines: List[str], header_at: int) -> _Values:
    """The LiteRT `BENCHMARK RESULTS` block starting at `lines[header_at]`, read up to its closing rule."""
    block: _Values = {}
    for follow in lines[header_at + 1:]:
        if follow.rstrip().endswith("======================================") and _LITERT_HEADER not in follow:
            break
        lm = _LITERT_LINE.search(follow)
        if lm:
            block[lm.group(1)] = (_f(lm.group(2)), int(lm.group(3)) if lm.group(3) else None)
    return block


def _find_summary(lines: List[str]) -> Tuple[int, str, _Values]:
    """The last summary in the output: (its line index, or -1 when there is none; its format; its values).

    TF Lite 2.x and TF 1.x summaries are in microseconds and returned in ms; a LiteRT block (already in ms)
    counts only when it has both `Inference (avg)` and `Model initialization`."""
    summary_at = -1
    fmt = ""
    values: _Values = {}
    for i, line in enumerate(lines):
        m = _TFLITE_SUMMARY.search(line)
        if m:
            summary_at, fmt = i, "tflite"
            values = {"init": (_f(m.group(1)) / 1000, None), "first": (_f(m.group(2)) / 1000, None),
                      "warmup": (_f(m.group(3)) / 1000, None), "avg": (_f(m.group(4)) / 1000, None)}
            continue
        m = _TF1_SUMMARY.search(line)
        if m:
            summary_at, fmt = i, "tflite-v1"
            values = {"warmup": (_f(m.group(1)) / 1000, None), "init": (_f(m.group(2)) / 1000, None), "avg": (_f(m.group(3)) / 1000, None)}
            continue
        if _LITERT_HEADER in line:
            block = _litert_block(lines, i)
            if "Inference (avg)" in block and "Model initialization" in block:
                summary_at, fmt, values = i, "litert", block
    return summary_at, fmt, values


def _summary_fields(fmt: str, values: _Values) -> Tuple[float, Dict[str, Any]]:
    """The summary's average inference time (ms) and the result fields it gives, by format."""
    if fmt == "litert":
        avg_ms = values["Inference (avg)"][0]
        result: Dict[str, Any] = dict(
            init_ms=values["Model initialization"][0],
            first_ms=values.get("Warmup (first)", (None, None))[0],
            warmup_avg_ms=values.get("Warmup (avg)", (None, None))[0],
            inference_avg_ms=avg_ms,
            inference_count=values["Inference (avg)"][1],
            inference_min_ms=values.get("Inference (min)", (None, None))[0],
            inference_max_ms=values.get("Inference (max)", (None, None))[0],
            inference_std_ms=values.get("Inference (std)", (None, None))[0],
            warmup_count=values.get("Warmup (avg)", (None, None))[1],
            memory_init_mb=values.get("Init footprint", (None, None))[0],
            memory_overall_mb=values.get("Overall footprint", (None, None))[0],
            peak_memory_mb=values.get("Peak memory", (None, None))[0],
        )
    else:
        avg_ms = values["avg"][0]
        result = dict(init_ms=values["init"][0], first_ms=values.get("first", (None, None))[0],
                      warmup_avg_ms=values["warmup"][0], inference_avg_ms=avg_ms)
    return avg_ms, result


def _merge_run_stats(result: Dict[str, Any], avg_ms: float, timed: Optional[RunStats], warm: Optional[RunStats]) -> None:
    """Add the timed-run `count=` line's statistics to `result`, only when it is the summary's run (same
    average and, where the summary has one, same count): exact microseconds beat the summary's rounding."""
    if timed is not None and timed.avg is not None and _close(timed.avg, avg_ms * 1000):
        if result.get("inference_count") is None or result["inference_count"] == timed.count:
            result.update(
                inference_count=timed.count,
                inference_p5_ms=_ms(timed.p5), inference_median_ms=_ms(timed.median), inference_p95_ms=_ms(timed.p95),
            )
            for key, us in (("inference_min_ms", timed.min), ("inference_max_ms", timed.max), ("inference_std_ms", timed.std)):
                if us is not None:  # exact microseconds: preferred to the LiteRT block's 0.01 ms rounding
                    result[key] = _ms(us)
            if warm is not None and result.get("warmup_count") is None:
                result["warmup_count"] = warm.count


def _merge_memory(result: Dict[str, Any], lines: List[str], summary_at: int, fmt: str) -> None:
    """Add the memory footprint lines (after the summary; LiteRT: anywhere) and the model file size to `result`."""
    after = lines[summary_at:] if fmt != "litert" else lines  # memory lines follow the summary (LiteRT: inside it)
    for line in after:
        m = _MEMORY.search(line)
        if m:
            result["memory_init_mb"], result["memory_overall_mb"] = _f(m.group(1)), _f(m.group(2))
        m = _PEAK.search(line)
        if m:
            result["peak_memory_mb"] = _f(m.group(1))
    for line in lines:
        m = _MODEL_SIZE.search(line)
        if m:
            result["model_size_mb"] = _f(m.group(1))


def parse_benchmark_output(text: str) -> BenchmarkModelResult:
    """Read a `benchmark_model` run's output (stdout and stderr together, in order).

    The timed-run statistics are the last `count=` line before the summary (the op profiler's
    `Timings (microseconds): count=...` lines are skipped), kept only when its average matches the summary's
    `Inference (avg)`. With several summaries (e.g. `benchmark_model_performance_options`) the last one wins.
    Raises ValueError, with the output's last lines, when there are no inference timings (the binary failed).
    """
    lines = text.splitlines()
    summary_at, fmt, values = _find_summary(lines)
    if summary_at < 0:
        raise ValueError(
            "benchmark_model printed no inference timings (no 'Inference timings in us' line or LiteRT "
            f"'BENCHMARK RESULTS' block): the run failed or was cut short. Last lines of its output:\n{_tail(text)}"
        )

    phases = [s for s in (parse_run_stats(ln) for ln in lines[:summary_at]) if s is not None]
    timed = phases[-1] if phases else None
    warm = phases[-2] if len(phases) >= 2 else None

    avg_ms, result = _summary_fields(fmt, values)
    _merge_run_stats(result, avg_ms, timed, warm)
    _merge_memory(result, lines, summary_at, fmt)
    return BenchmarkModelResult(format=fmt, **result)  # type: ignore[arg-type]


def benchmark_argv(
    binary: str,
    graph: str,
    threads: Optional[int],
    runs: int,
    warmup_runs: int,
    use_xnnpack: Optional[bool] = True,
    extra: Sequence[str] = (),
) -> List[str]:
    """The binary's argv: `--graph`, `--num_threads`, `--num_runs`, `--warmup_runs`, `--use_xnnpack`
    (flag names from tflite/tools/benchmark/README.md and benchmark_model.cc).

    `threads=None` keeps the binary's default (-1: the platform's choice). `use_xnnpack=None` leaves the flag
    out, for LiteRT's CompiledModel `benchmark_model`, which picks accelerators with `--use_cpu/--use_gpu/
    --use_npu` and has no `--use_xnnpack` (passed anyway, it is ignored with "Unconsumed cmdline flags"). `num_runs`/`warmup_runs` are minimums: the tool also runs for at
    least `--min_secs` (1 s) / `--warmup_min_secs` (0.5 s), so the reported count can be larger.
    """
    if runs < 1 or warmup_runs < 0:
        raise ValueError(f"benchmark_model needs runs >= 1 and warmup_runs >= 0, got runs={runs}, warmup_runs={warmup_runs}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 (or None for the binary's default), got {threads}")
    argv = [str(binary), f"--graph={graph}"]
    if threads is not None:
        argv.append(f"--num_threads={int(threads)}")
    argv += [f"--num_runs={int(runs)}", f"--warmup_runs={int(warmup_runs)}"]
    if use_xnnpack is not None:
        argv.append(f"--use_xnnpack={'true' if use_xnnpack else 'false'}")
    argv += [str(a) for a in extra]
    return argv


def to_latency_columns(result: BenchmarkModelResult) -> Dict[str, Union[float, int, None]]:
    """edgecam's latency columns from a `benchmark_model` result (floats NaN / ints None where unknown).

    `mean_ms`, `min_ms`, `max_ms`, `n`, `init_ms`, `first_ms` as reported. `std_ms` is converted to the sample
    standard deviation (ddof=1, as `edgecam.bench.timing.latency_stats`) from the tool's population one,
    `std * sqrt(n / (n - 1))`, when n is known. Percentiles: benchmark_model keeps no raw samples, so p90 /
    p99 are never available; `p50_ms` is the tool's own median (`sorted[n // 2]`, not interpolated) where
    the build prints one (TF Lite >= ~2.16, LiteRT), NaN otherwise. `peak_memory_bytes` is the periodic
    monitor's absolute peak RSS (MiB * 2**20), None unless the run had `--report_peak_memory_footprint=true`.
    """
    nan = float("nan")
    n = result.inference_count
    std = result.inference_std_ms
    if std is not None and n is not None and n > 1:
        std = std * math.sqrt(n / (n - 1))
    return {
        "mean_ms": result.inference_avg_ms,
        "std_ms": nan if std is None else std,
        "min_ms": nan if result.inference_min_ms is None else result.inference_min_ms,
        "max_ms": nan if result.inference_max_ms is None else result.inference_max_ms,
        "p50_ms": nan if result.inference_median_ms is None else result.inference_median_ms,
        "n": n,
        "init_ms": result.init_ms,
        "first_ms": nan if result.first_ms is None else result.first_ms,
        "peak_memory_bytes": None if result.peak_memory_mb is None else int(round(result.peak_memory_mb * 2**20)),
    }
