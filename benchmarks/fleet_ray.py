"""Ray's cost and gain (`--executor ray`, bench/executors.py), measured side by side in one run:

1. overhead: one device's whole run (tinycnn on digits, fp32 + int8, Grad-CAM++ and Eigen-CAM, `--images`
   test images) by the in-process executor vs by one Ray actor on a local 2-CPU cluster, each in a fresh
   process as `edgecam run` is (alternating rounds, best of each): wall time (Ray's includes starting its
   cluster) and explain-stage throughput (images per second of the "CAMs + metrics" stage), target: Ray within
   10% of in-process.
2. fleet: this machine + the x86 loopback sshd board (+ the emulated aarch64 board with `--arm64`) on Ray,
   the fleet's wall time vs its devices' runs added up, and vs the same fleet device after device.

Caches (checkpoint, artifacts) are warmed first, so both sides time the same work; every timed run has a
fresh run directory. Needs root for the sshd board.

    .venv/bin/python benchmarks/fleet_ray.py [--images 200] [--rounds 2] [--arm64]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the local cluster binds loopback only
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import Row, check, load_avg, machine_line, print_rows  # noqa: E402

from edgecam.bench.executors import DeviceRun, InProcessExecutor, RayExecutor, device_resource  # noqa: E402
from edgecam.config import BenchSpec, ModelSpec, RunConfig, RuntimeSpec  # noqa: E402
from edgecam.devices.inventory import LOCAL  # noqa: E402


def config(images: int) -> RunConfig:
    cfg = RunConfig(models=(ModelSpec("tinycnn"),))
    return cfg.replace(data=dataclasses.replace(cfg.data, limit=images), export=dataclasses.replace(cfg.export, precisions=("fp32", "int8")),
                       runtimes=(RuntimeSpec("onnxruntime", threads=1),), bench=BenchSpec(warmup=5, iterations=50, memory=False),
                       explain=dataclasses.replace(cfg.explain, methods=("gradcampp", "eigencam"), faithfulness=False))


def explain_rate(run_dir: Path, images: int) -> float:
    stages = json.loads((run_dir / "manifest.json").read_text())["stages_s"]
    return images / stages["CAMs + metrics tinycnn"]


def one_run(mode: str, out: Path, images: int) -> None:
    """One device's run by `mode`'s executor, as `edgecam run` does it: in a fresh process (`--one`), Ray
    starting its local cluster for the run."""
    runner = InProcessExecutor() if mode == "inprocess" else RayExecutor(num_cpus=2)
    [o] = runner.run(config(images), [DeviceRun(LOCAL, out)], None, None, lambda m: None)
    assert o.ok and not o.failed_jobs, o


def overhead(images: int, rounds: int, work: Path) -> list[Row]:
    """Each run in a fresh process (both executors start cold, as the CLI does), alternating, best of each."""
    import subprocess

    subprocess.run([sys.executable, __file__, "--one", "inprocess", str(work / "warm"), str(images)], check=True)  # trains / exports into the cache
    walls: dict[str, list[float]] = {"inprocess": [], "ray": []}
    rates: dict[str, list[float]] = {"inprocess": [], "ray": []}
    for i in range(rounds):
        for mode in ("inprocess", "ray"):
            out = work / f"{mode}-{i}"
            t = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--one", mode, str(out), str(images)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            walls[mode].append(time.perf_counter() - t)
            rates[mode].append(explain_rate(out, images))
    wall = min(walls["ray"]) / min(walls["inprocess"])
    rate = max(rates["inprocess"]) / max(rates["ray"])
    return [
        Row("ray overhead", f"one device's run in a fresh process, Ray (cluster start included) / in-process wall ({images} images, best of {rounds})",
            wall, "x", "", None, f"{min(walls['ray']):.1f} s vs {min(walls['inprocess']):.1f} s"),
        Row("ray overhead", "explain stage throughput, in-process / Ray actor", rate, "x", "<= 1.10", check(rate, "<=", 1.10),
            f"{max(rates['ray']):.2f} vs {max(rates['inprocess']):.2f} images/s"),
    ]


def fleet(cfg: RunConfig, work: Path, arm64: bool) -> list[Row]:
    from sshd_server import board_spec, start_sshd

    from edgecam.bench.fleet import fleet_run

    server = start_sshd(work / "sshd")
    stops: list[Any] = [server.stop]
    specs = [board_spec(server, name="x86board")]
    if arm64:
        from arm64_board import start_board

        arm, mounts, _ = start_board(work / "arm64")
        stops += [arm.stop, mounts.release]
        specs.append(board_spec(arm, name="arm64"))
    inv = work / "devices.toml"
    fields = ("name", "url", "key_file", "known_hosts", "python", "retries", "workdir")
    inv.write_text("".join("[[devices]]\n" + "".join(f'{k} = "{getattr(s, k)}"\n' if isinstance(getattr(s, k), str) else f"{k} = {getattr(s, k)}\n"
                                                     for k in fields if getattr(s, k) is not None) for s in specs))
    names = ",".join(["local", *(s.name for s in specs)])
    try:
        fleet_run(cfg, work / "fleet-warm", names, inv, log=lambda m: None)  # warms the boards' agents and the caches
        seq = fleet_run(cfg, work / "fleet-inprocess", names, inv, log=lambda m: None)
        par = fleet_run(cfg, work / "fleet-ray", names, inv, runner=RayExecutor(num_cpus=2), log=lambda m: None)
    finally:
        for stop in reversed(stops):
            stop()
    bad = [o for o in seq["outcomes"] + par["outcomes"] if not o["ok"]]
    assert not bad, bad
    n = len(specs) + 1
    return [
        Row("fleet", f"{n} devices on Ray (2 CPUs): fleet wall / its devices' runs added up", par["wall_s"] / par["sum_device_wall_s"], "x", "", None,
            f"{par['wall_s']:.0f} s vs {par['sum_device_wall_s']:.0f} s"),
        Row("fleet", f"{n} devices: Ray fleet wall / the same fleet device after device in-process", par["wall_s"] / seq["wall_s"], "x", "", None,
            f"{par['wall_s']:.0f} s vs {seq['wall_s']:.0f} s ({names})"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--arm64", action="store_true", help="add the emulated aarch64 board to the fleet (root; builds it on first use)")
    ap.add_argument("--items", nargs="+", default=["overhead", "fleet"], choices=("overhead", "fleet"))
    ap.add_argument("--one", nargs=3, metavar=("MODE", "OUT", "IMAGES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one_run(args.one[0], Path(args.one[1]), int(args.one[2]))
        return
    work = Path(tempfile.mkdtemp(prefix="edgecam-fleet-bench-"))
    work.chmod(0o755)  # the loopback sshd reads its files under here as the board user
    rows: list[Row] = []
    try:
        if "overhead" in args.items:
            rows += overhead(args.images, args.rounds, work)
            print_rows(rows, "Ray executor: overhead")
        if "fleet" in args.items:
            rows += fleet(config(min(args.images, 50)), work, args.arm64)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_rows(rows, f"Ray executor, {machine_line()}; load {load_avg()}")


if __name__ == "__main__":
    main()
