"""Harness overhead: the `null` runtime vs ONNX Runtime on the same artifacts, measured side by side in one
run through the same agent and timing loop. The null runtime's p50 is what edgecam's own measurement costs
per iteration; the table prints it as a fraction of each real variant's p50.

    .venv/bin/python benchmarks/harness_overhead.py [--iterations 300]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgecam.bench.sweep import build_artifact, load_data, prepare_model
from edgecam.bench.timing import latency_stats
from edgecam.config import ModelSpec, RunConfig
from edgecam.devices.local import LocalDevice
from edgecam.exporters.onnx import OnnxExporter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--model", default="tinycnn")
    args = ap.parse_args()
    cfg = RunConfig(models=(ModelSpec(args.model),))
    data = load_data(cfg)
    model, layer, meta = prepare_model(cfg.models[0], cfg, data)
    exporter = OnnxExporter()
    table = Table(title=f"Harness overhead on {platform.machine()} ({platform.processor() or 'cpu'}), batch 1, {args.iterations} iterations")
    for col in ("variant", "runtime", "p50 ms", "p99 ms", "null p50 / runtime p50"):
        table.add_column(col)
    with tempfile.TemporaryDirectory() as tmp:
        dev = LocalDevice(workdir=str(Path(tmp) / "dev"))
        for precision in ("fp32", "int8"):
            art, _ = build_artifact(model, cfg.models[0], layer, meta["sha256"], "onnx", precision, cfg, data, exporter)
            stats = {}
            for runtime in ("null", "onnxruntime"):
                job = {"runtime": runtime, "runtime_options": {"threads": 2}, "warmup": 20, "iterations": args.iterations, "batch_size": 1, "mode": "run"}
                result, _ = dev.run_job(art, data.test_x[:8], job)
                stats[runtime] = latency_stats(result["samples_s"])
            for runtime, s in stats.items():
                ratio = stats["null"]["p50_ms"] / s["p50_ms"]
                table.add_row(f"{args.model} {precision}", runtime, f"{s['p50_ms']:.4f}", f"{s['p99_ms']:.4f}", f"{ratio:.4f}")
    Console().print(table)


if __name__ == "__main__":
    main()
