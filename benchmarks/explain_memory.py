"""Explain-stage memory: peak RSS of a whole `edgecam run` at 100 and at 1,000 images (same config
otherwise), each in a fresh process. CAMs are streamed shard by shard into rows, so the peak should not
grow with the number of images beyond the rows themselves.

    .venv/bin/python benchmarks/explain_memory.py [--images 100 1000]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

CONFIG = """
name = "explain-memory"
[data]
copies_test = 3          # 1,077 test images
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
methods = ["gradcampp", "eigencam"]
faithfulness_images = 20
emd_size = 16
"""

MEASURE = "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, nargs="+", default=[100, 1000])
    args = ap.parse_args()
    edgecam = str(Path(sys.executable).with_name("edgecam"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "explain-memory.toml"
        cfg.write_text(CONFIG)
        subprocess.run([edgecam, "run", str(cfg), "--limit", "10", "--out", f"{tmp}/warm"], stdout=subprocess.DEVNULL, check=True)  # train + export once
        for n in args.images:
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", MEASURE, edgecam, "run", str(cfg), "--limit", str(n), "--out", f"{tmp}/run{n}"], capture_output=True, text=True, check=True)
            rc, kb = out.stdout.split()
            import pandas as pd

            n_rows = len(pd.read_parquet(f"{tmp}/run{n}/results.parquet"))
            rows.append((n, int(rc), int(kb) / 1024, time.perf_counter() - t, n_rows))
    table = Table(title=f"Peak RSS of `edgecam run` vs images explained, on {platform.machine()} ({platform.processor() or 'cpu'})")
    for col in ("images", "exit", "peak RSS MB", "wall s", "result rows", f"RSS / RSS at {rows[0][0]}"):
        table.add_column(col, justify="right")
    for n, rc, mb, wall, n_rows in rows:
        table.add_row(str(n), str(rc), f"{mb:.0f}", f"{wall:.0f}", str(n_rows), f"{mb / rows[0][2]:.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
