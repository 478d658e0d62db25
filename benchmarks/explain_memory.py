"""Scaling (suite item 5): wall time and peak RSS of a whole `edgecam run` at 100, 1,000 and 5,000 images,
same config otherwise, each in a fresh process. CAMs are streamed shard by shard into rows, so time should
grow linearly and the peak should not grow with the number of images beyond the rows themselves.
Targets: peak RSS at 5,000 within 10% of that at 1,000; the marginal CPU time per image (user + system of
the run and its agents, from `os.wait4`) from 1,000 to 5,000 at most 10% above that from 100 to 1,000
(linear time: a fixed start-up cost plus a cost per image that does not grow). Wall time is printed beside
it, with no target: on a shared 2-core machine it follows the other tenants (measured: 100-image shards
took 0.75 s or 3-5 s depending on them, the slow ones in torch's conv / backward kernels).

Peak RSS is the run process's own high-water mark, `VmHWM` of /proc/self/status read as it exits (edgecam's
agent measures memory the same way, `edgecam.devices.agent.peak_rss_bytes`). `getrusage(RUSAGE_CHILDREN)`
of a child is printed beside it, but it is not the figure used: Linux carries `ru_maxrss` across
fork + execve, so a child of this (torch-loaded) process reports at least this process's RSS.

The cheap config: tinycnn, ONNX fp32 + int8, Grad-CAM++ (Eigen-CAM's per-image SVD would double the
time), no Deletion / Insertion, no EMD, 10 timed iterations; `copies_test = 14` gives 5,040 test images,
of which `--limit` are explained. The model is the digits demo's trained tinycnn, handed over as a weights
file: the checkpoint cache is keyed by the whole data set, test split included, so `copies_test = 14`
would otherwise train it again.

    .venv/bin/python benchmarks/explain_memory.py [--images 100 1000 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

from _common import Row, check, print_rows, setup

CONFIG = """
name = "scaling"
[data]
copies_test = 14         # 5,040 test images
[export]
formats = ["onnx"]
precisions = ["fp32", "int8"]
qat_samples = 256
[[models]]
name = "tinycnn"
[[runtimes]]
name = "onnxruntime"
threads = 2
[bench]
warmup = 2
iterations = 10
memory = false
[explain]
methods = ["gradcampp"]
faithfulness = false
emd_size = 0
bootstrap = 100
"""

TINY_CONFIG = CONFIG.replace("copies_test = 14", "copies_test = 1").replace('["fp32", "int8"]', '["fp32"]')  # smoke tests

# the run, in a fresh interpreter that writes its own peak RSS (bytes) to $EDGECAM_BENCH_PEAK as it exits
CHILD = """
import atexit, os, sys
from edgecam.devices.agent import peak_rss_bytes
atexit.register(lambda: open(os.environ["EDGECAM_BENCH_PEAK"], "w").write(str(peak_rss_bytes())))
from edgecam.cli import main
sys.exit(main(sys.argv[1:]))
"""


class Run(NamedTuple):
    """One measured `edgecam run`."""

    wall: float  # s
    cpu: float  # s, user + system of the run and the agents it waited for (wait4's rusage)
    peak_mb: float  # VmHWM of the run process
    ru_maxrss_mb: float  # wait4's ru_maxrss: inherited across fork + execve, printed only
    rows: int = 0  # results.parquet rows
    explain_s: float = 0.0  # the manifest's "CAMs + metrics" stage


def measure(cfg: Path, n: int, out: Path) -> Run:
    """One `edgecam run` of `n` images in a fresh process, with its wall and CPU time and peak RSS."""
    peak_file = out.with_suffix(".peak")
    env = {**os.environ, "EDGECAM_BENCH_PEAK": str(peak_file)}
    t = time.perf_counter()
    with open(out.with_suffix(".log"), "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, "run", str(cfg), "--limit", str(n), "--out", str(out)], stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"edgecam run --limit {n} exited {proc.returncode}; log: {out.with_suffix('.log')}\n{out.with_suffix('.log').read_text()[-3000:]}")
    return Run(wall, usage.ru_utime + usage.ru_stime, int(peak_file.read_text()) / 2**20, usage.ru_maxrss / 1024)


def write_config(model: Any, tmp: Path, config: str = CONFIG) -> Path:
    """`config` with the trained `model`'s state dict as the tinycnn's weights file, written into `tmp`."""
    import torch

    weights = tmp / "tinycnn.pt"
    torch.save(model.state_dict(), weights)
    path = tmp / "scaling.toml"
    path.write_text(config.replace('name = "tinycnn"\n', f'name = "tinycnn"\nweights = "{weights}"\n', 1))
    return path


def run_items(model: Any, sizes: tuple[int, int, int] = (100, 1000, 5000), config: str = CONFIG, warm: bool = True) -> tuple[list[Row], list[str]]:
    """Item 5 on the trained tinycnn `model`: a warm-up run (exports into the cache, unless `warm` is
    False), then one fresh process per size."""
    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="edgecam-bench-") as tmp_s:
        tmp = Path(tmp_s)
        cfg = write_config(model, tmp, config)
        if warm:
            measure(cfg, 10, tmp / "warm")  # export once: the measured runs reuse the cache
        res: dict[int, Run] = {}
        for n in sizes:
            run = measure(cfg, n, tmp / f"run{n}")
            stages = json.loads((tmp / f"run{n}" / "manifest.json").read_text()).get("stages_s", {})
            explain_s = sum(v for k, v in stages.items() if k.startswith("CAMs + metrics"))
            res[n] = run._replace(rows=len(pd.read_parquet(tmp / f"run{n}" / "results.parquet")), explain_s=explain_s)
    lo, mid, hi = sizes
    notes = [f"item 5 run of {n} images: {r.wall:.1f} s wall, {r.cpu:.1f} s CPU, {r.explain_s:.1f} s in CAMs + metrics (the streamed stage), peak RSS "
             f"{r.peak_mb:.0f} MB (VmHWM; wait4's ru_maxrss {r.ru_maxrss_mb:.0f} MB), {r.rows} result rows" for n, r in res.items()]

    def marginal(field: str) -> tuple[float, float]:
        """Seconds of `field` per extra image, from lo to mid and from mid to hi."""
        v = {n: getattr(r, field) for n, r in res.items()}
        return (v[mid] - v[lo]) / (mid - lo), (v[hi] - v[mid]) / (hi - mid)

    (cpu_lo, cpu_hi), (wall_lo, wall_hi), (ex_lo, ex_hi) = marginal("cpu"), marginal("wall"), marginal("explain_s")
    rss, lin = res[hi].peak_mb / res[mid].peak_mb, cpu_hi / cpu_lo
    rows = [
        Row("5", f"peak RSS at {hi:,} / at {mid:,} images", rss, "x", "<= 1.10", check(rss, "<=", 1.10),
            f"{res[hi].peak_mb:.0f} MB vs {res[mid].peak_mb:.0f} MB ({res[lo].peak_mb:.0f} MB at {lo}); each in a fresh process"),
        Row("5", f"CPU s per extra image {mid:,}->{hi:,} / {lo}->{mid:,} (no superlinear growth)", lin, "x", "<= 1.10", check(lin, "<=", 1.10),
            f"CPU {res[lo].cpu:.1f} / {res[mid].cpu:.1f} / {res[hi].cpu:.1f} s at {lo} / {mid:,} / {hi:,} images: {1e3 * cpu_lo:.1f} vs {1e3 * cpu_hi:.1f} ms per image"),
        Row("5", f"wall s per extra image {mid:,}->{hi:,} / {lo}->{mid:,}", wall_hi / wall_lo, "x", "", None,
            f"wall {res[lo].wall:.1f} / {res[mid].wall:.1f} / {res[hi].wall:.1f} s: {1e3 * wall_lo:.1f} vs {1e3 * wall_hi:.1f} ms per image "
            f"(CAMs + metrics stage: {1e3 * ex_lo:.1f} vs {1e3 * ex_hi:.1f}); wall follows the other tenants' load"),
    ]
    return rows, notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, nargs=3, default=[100, 1000, 5000])
    args = ap.parse_args()
    rows, notes = run_items(setup(("tinycnn",)).models["tinycnn"].model, tuple(args.images))
    print_rows(rows, "Scaling")
    print("\n".join(notes))


if __name__ == "__main__":
    main()
