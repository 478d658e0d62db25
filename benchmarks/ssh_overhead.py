"""SSH vs local timing: the same ORT tinycnn artifact timed by the agent on this machine directly and through
a loopback OpenSSH server (started here, as in the tests), interleaved in one run. Timing happens on the
device, so the wire must not show in p50 (target: within 5%).

    .venv/bin/python benchmarks/ssh_overhead.py [--iterations 1000] [--rounds 3]   (root: installs sshd)
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from sshd_server import start_sshd  # noqa: E402

from edgecam.bench.deploy import build_artifact
from edgecam.bench.prepare import prepare_model
from edgecam.data.spec import load_data  # noqa: E402
from edgecam.config import ModelSpec, RunConfig  # noqa: E402
from edgecam.devices.inventory import DeviceSpec, open_device  # noqa: E402
from edgecam.devices.local import LocalDevice  # noqa: E402
from edgecam.exporters.onnx import OnnxExporter  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3, help="alternating local / SSH rounds per precision")
    args = ap.parse_args()
    cfg = RunConfig(models=(ModelSpec("tinycnn"),))
    data = load_data(cfg)
    model, layer, meta = prepare_model(cfg.models[0], cfg, data)
    root = Path(tempfile.mkdtemp(prefix="edgecam-sshd-"))
    server = start_sshd(root)
    table = Table(title=f"SSH (loopback) vs local p50 on {platform.machine()} ({platform.processor() or 'cpu'}), tinycnn ORT 1 thread, batch 1, {args.iterations} iterations x {args.rounds} rounds")
    for col in ("precision", "local p50 ms", "SSH p50 ms", "SSH / local", "SSH job wall s", "local job wall s"):
        table.add_column(col)
    try:
        board = open_device(DeviceSpec("board", url=server.url, python=server.python, settings={"key_file": str(server.key_file), "known_hosts": str(server.known_hosts)}))
        local = LocalDevice(workdir=str(root / "local"))
        job = {"runtime": "onnxruntime", "runtime_options": {"threads": 1}, "warmup": 50, "iterations": args.iterations, "batch_size": 1, "mode": "run"}
        for precision in ("fp32", "int8"):
            art, _ = build_artifact(model, cfg.models[0], layer, meta["sha256"], "onnx", precision, cfg, data, OnnxExporter())
            samples: dict[str, list[float]] = {"local": [], "ssh": []}
            walls: dict[str, list[float]] = {"local": [], "ssh": []}
            for _ in range(args.rounds):
                for name, dev in (("local", local), ("ssh", board)):
                    import time

                    t0 = time.perf_counter()
                    result, _ = dev.run_job(art, data.test_x[:8], job)
                    walls[name].append(time.perf_counter() - t0)
                    samples[name] += result["samples_s"]
            p50 = {k: float(np.median(v)) * 1e3 for k, v in samples.items()}
            table.add_row(precision, f"{p50['local']:.4f}", f"{p50['ssh']:.4f}", f"{p50['ssh'] / p50['local']:.3f}", f"{np.mean(walls['ssh']):.2f}", f"{np.mean(walls['local']):.2f}")
        board.close()  # type: ignore[attr-defined]
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
