"""edgecam's performance suite (`make bench`): every item of the performance issue measured side by side in
one run, printed as one table of ratios with their targets, and written to benchmarks/results/<machine>.md.

1. harness overhead: edgecam's timed loop vs a bare `session.run` loop (same session), null runtime floor
2. edgecam's p50 vs ONNX Runtime's own profiler on the same runs
3. CAM throughput: mirror Grad-CAM++, surrogate Score-CAM and Eigen-CAM vs the `grad-cam` package
4. pipeline throughput of a whole `sweep.run` and its time split (runtime / CAM / metrics / I/O)
5. scaling: wall time and peak RSS at 100, 1,000 and 5,000 images
6. export cost: seconds per artifact per format and precision, fresh cache
7. real scale: a 224 px model on generated JPEGs at 200 vs 2,000 images (host / agent peak RSS, bytes per image,
   wall per image), over SSH too, Score-CAM at 1,280 channels, a 10,000-image dry run (`real_scale.py`)
8. persistent device session vs one agent process per job, local, over SSH and over adb (`session_cost.py`)
9. the explain stage at real size: EfficientNet-Lite0 (real weights) at 224 px, 200 images, ONNX Runtime fp32 + int8:
   images/s per variant, host CPU per image and variant vs the device's forward, where the time goes, the ETA's
   accuracy, Ray vs in-process, and 1,000 / 2,000-image runs extrapolated to paper 002's sweep (`explain_profile.py`)
10. calibration memory: ONNX Runtime's int8 / int16 calibration of Lite0 at 100 and 500 images, bounded vs unbounded,
   against item 9's host peak (`calib_memory.py`)

Models and artifacts come from edgecam's normal cache (trained there on first use, shared with `make run`);
item 6 exports into a fresh temporary cache. `--quick` runs every item at a tiny size (tinycnn only): the
smoke test (tests/benchmarks/) uses it so the suite cannot rot; its numbers mean nothing.

    .venv/bin/python benchmarks/suite.py [--quick] [--out FILE] [--items 1 2 3 4 5 6 7 8 9 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the item modules beside this file

import calib_memory  # noqa: E402
import cam_throughput  # noqa: E402
import explain_profile  # noqa: E402
import explain_memory  # noqa: E402
import export_cost  # noqa: E402
import harness_overhead  # noqa: E402
import pipeline  # noqa: E402
import real_scale  # noqa: E402
import session_cost  # noqa: E402
from _common import RESULTS_DIR, Row, config_from_toml, load_avg, machine_line, machine_name, print_rows, setup, write_results  # noqa: E402

@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much each item measures: the full suite, or `--quick` (seconds, numbers meaningless)."""

    models: tuple[str, ...] = ("tinycnn", "mobilenet_v2")
    iterations: int = 300
    rounds: int = 20
    profile_iterations: int = 1000
    cam_rounds: int = 3
    cam_images: tuple[tuple[str, int, int], ...] = (("tinycnn", 100, 100), ("mobilenet_v2", 32, 1))  # model, images, Score-CAM images (100: a sweep shard)
    pipeline_limit: int = 50
    scaling: tuple[int, int, int] = (100, 1000, 5000)
    scaling_warm: bool = True
    export_formats: tuple[str, ...] = ("onnx", "tflite")
    # mobilenet_v2's int16 export is the int8 recipe (QAT) at another bit width: skipped to save ~1 min
    export_precisions: tuple[tuple[str, tuple[str, ...]], ...] = (("tinycnn", ("fp32", "int16", "int8")), ("mobilenet_v2", ("fp32", "int8")))
    real_scale: tuple[int, int] = (200, 2000)
    real_scale_items: tuple[str, ...] = ("rss", "ssh", "scorecam", "paper")
    session_images: int = 64
    explain_images: int = 200
    explain_executors: tuple[str, ...] = ("inprocess", "ray")
    explain_scale: tuple[int, ...] = (1000, 2000)
    calib_sizes: tuple[int, ...] = (100, 500)


QUICK = Sizes(models=("tinycnn",), iterations=20, rounds=2, profile_iterations=30, cam_rounds=1, cam_images=(("tinycnn", 4, 2),),
              pipeline_limit=4, scaling=(2, 4, 6), scaling_warm=False, export_formats=("onnx",), export_precisions=(("tinycnn", ("fp32",)),),
              real_scale=(4, 8), real_scale_items=("rss",), session_images=16, explain_images=6, explain_executors=("inprocess",), explain_scale=(),
              calib_sizes=(4, 8))


def run_suite(sizes: Sizes, items: set[str], quick: bool) -> tuple[list[Row], list[str]]:
    """Run the chosen items; (rows, notes)."""
    rows: list[Row] = []
    notes: list[str] = []
    timings: dict[str, float] = {}
    t = time.perf_counter()
    s = setup(sizes.models)
    timings["setup (data, models, fp32 artifacts)"] = time.perf_counter() - t
    x = s.data.test_x

    def timed(label: str, fn: Any) -> Any:
        t0 = time.perf_counter()
        out = fn()
        timings[label] = time.perf_counter() - t0
        return out

    if items & {"1", "2"}:
        got = timed("items 1-2", lambda: harness_overhead.run_items(s.models, x, sizes.iterations, sizes.rounds, sizes.profile_iterations))
        rows += [r for r in got if r.item in items]
    if "3" in items:
        per = {name: {label: (sc if "Score" in label else n) for label in cam_throughput.METHODS} for name, n, sc in sizes.cam_images}
        rows += timed("item 3", lambda: cam_throughput.run_items({k: s.models[k] for k in per}, x, per, sizes.cam_rounds))
    if "4" in items:
        cfg = config_from_toml(explain_memory.TINY_CONFIG) if quick else None
        got_rows, got_notes = timed("item 4", lambda: pipeline.run_items(sizes.pipeline_limit, cfg))
        rows += got_rows
        notes += got_notes
    if "5" in items:
        config = explain_memory.TINY_CONFIG if quick else explain_memory.CONFIG
        got_rows, got_notes = timed("item 5", lambda: explain_memory.run_items(s.models["tinycnn"].model, sizes.scaling, config, sizes.scaling_warm))
        rows += got_rows
        notes += got_notes
    if "6" in items:
        rows += timed("item 6", lambda: export_cost.run_items(s, sizes.export_formats, dict(sizes.export_precisions)))
    if "7" in items:
        got_rows, got_notes = timed("item 7", lambda: real_scale.run_items(sizes.real_scale, sizes.real_scale_items))
        rows += got_rows
        notes += got_notes
    if "8" in items:
        rows += timed("item 8", lambda: session_cost.run_items(sizes.session_images, 1 if quick else 3, ssh=not quick, adb=not quick))
    peak = None
    if "9" in items:
        got_rows, got_notes, peak = timed("item 9", lambda: explain_profile.run_items(sizes.explain_images, None, sizes.explain_executors, None, sizes.explain_scale))
        rows += got_rows
        notes += got_notes
    if "10" in items:
        got_rows, got_notes = timed("item 10", lambda: calib_memory.run_items(sizes.calib_sizes, ("int8", "int16"), peak))
        rows += got_rows
        notes += got_notes
    notes.append("suite time per item (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    return rows, notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="every item at a tiny size (smoke test; the numbers mean nothing)")
    ap.add_argument("--out", type=Path, default=None, help="results file (default: benchmarks/results/<machine>.md)")
    ap.add_argument("--items", nargs="+", default=[str(i) for i in range(1, 11)], choices=[str(i) for i in range(1, 11)])
    args = ap.parse_args(argv)
    from edgecam.cache import cache_dir

    sizes = QUICK if args.quick else Sizes()
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_before = load_avg()
    t0 = time.perf_counter()
    rows, notes = run_suite(sizes, set(args.items), args.quick)
    wall = time.perf_counter() - t0
    title = f"edgecam performance suite{' (--quick: sizes too small to mean anything)' if args.quick else ''}"
    print_rows(rows, f"{title} on {machine_name()}")
    for n in notes:
        print(f"- {n}")
    out = args.out or RESULTS_DIR / f"{machine_name()}.md"
    header = "\n".join([
        f"# {title}: {machine_name()}", "",
        f"Machine: {machine_line()}.", "",
        f"Run {started}, {wall:.0f} s (`benchmarks/suite.py{' --quick' if args.quick else ''}`, items {' '.join(args.items)}); "
        f"load average (1 / 5 / 15 min) {load_before} before, {load_avg()} after: a shared machine, hence side-by-side, alternating measurements. "
        f"Models and artifacts from the cache {cache_dir()} (item 6: a fresh empty cache).",
    ])
    write_results(rows, out, header, notes)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
