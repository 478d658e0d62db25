"""Resumable sweeps: `edgecam run` killed with SIGKILL at random points, then rerun, gives exactly the rows of an
uninterrupted run; a rerun of a finished run recomputes nothing; another experiment in the same run
directory is refused."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import edgecam

# two precisions x two CAM methods (Score-CAM sends masked forwards to the device) x 24 images in shards of
# 6: 2 run jobs + 4 explain jobs + 2 prediction jobs, each a point a kill can land in
CONFIG = """
name = "resume"
[export]
precisions = ["fp32", "int8"]
[[models]]
name = "tinycnn"
[[runtimes]]
name = "onnxruntime"
threads = 1
[bench]
warmup = 2
iterations = 20
memory = false
[explain]
methods = ["gradcampp", "scorecam"]
faithfulness_images = 8
emd_size = 8
shard_size = 6
rise_masks = 100
bootstrap = 200
"""
IMAGES = 24
JOBS = 2 + 4 + 2  # timing runs, explain shards, logits-only predictions of the other 335 test images (2 x 256 max)
OUTPUTS = ["results.parquet", "activations.parquet", "wsol.csv", "summary.csv", "dissimilar.csv", "bench.csv"]
KEY = ["model", "format", "runtime", "precision", "cam_method", "cam_mode", "image_id"]


def _start(cfg: Path, out: Path, cache: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "EDGECAM_CACHE_DIR": str(cache)}
    return subprocess.Popen([sys.executable, "-m", "edgecam.cli", "run", str(cfg), "--out", str(out), "--limit", str(IMAGES)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


@pytest.fixture(scope="module")
def reference(trained_tinycnn, session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, float]:
    """An uninterrupted run (config file, run dir, wall seconds)."""
    root = tmp_path_factory.mktemp("resume")
    cfg = root / "resume.toml"
    cfg.write_text(CONFIG)
    out = root / "reference"
    t0 = time.perf_counter()
    proc = edgecam(["run", str(cfg), "--out", str(out), "--limit", str(IMAGES)], session_cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return cfg, out, time.perf_counter() - t0


def _read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def _same_outputs(a: Path, b: Path) -> None:
    for name in OUTPUTS:
        left, right = _read(a / name), _read(b / name)
        if name == "bench.csv":  # latency / memory are measurements of the run that made them, not results
            cols = ["model", "format", "runtime", "precision", "ok", "accuracy", "agrees_fp32", "size_bytes"]
            left, right = left[cols], right[cols]
        pd.testing.assert_frame_equal(left, right, check_exact=True, obj=name)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_a_random_point_then_rerun_gives_the_uninterrupted_rows(reference: tuple[Path, Path, float], session_cache: Path, tmp_path: Path, seed: int) -> None:
    cfg, ref, wall = reference
    out = tmp_path / "run"
    delay = random.Random(seed).uniform(0.15, 0.9) * wall  # from start-up through device runs into the CAM shards
    proc = _start(cfg, out, session_cache)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finished_before = sorted(p.parent.name for p in (out / "jobs").glob("*/*/meta.json")) if out.exists() else []
    print(f"seed {seed}: SIGKILL after {delay:.1f} s of a {wall:.1f} s run, {len(finished_before)} of {JOBS} jobs finished")
    rerun = edgecam(["run", str(cfg), "--out", str(out), "--limit", str(IMAGES)], session_cache)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    _same_outputs(ref, out)
    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == IMAGES * 2 * 2 and not results.duplicated(KEY).any()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["jobs"]["reused"] == len(finished_before)  # every job finished before the kill was kept, none redone
    assert manifest["jobs"]["reused"] + manifest["jobs"]["committed"] == JOBS
    assert not list((out / "jobs").glob("*/.*.part"))  # no half-written job survives


def test_rerun_of_a_finished_run_recomputes_nothing(reference: tuple[Path, Path, float], session_cache: Path) -> None:
    cfg, ref, _ = reference
    before = _read(ref / "results.parquet")
    proc = edgecam(["run", str(cfg), "--resume", str(ref), "--limit", str(IMAGES)], session_cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resuming" in proc.stdout
    manifest = json.loads((ref / "manifest.json").read_text())
    assert manifest["resumed"] and manifest["jobs"] == {"reused": JOBS, "committed": 0}
    pd.testing.assert_frame_equal(before, _read(ref / "results.parquet"), check_exact=True)


def test_another_experiment_in_the_same_run_dir_is_refused(reference: tuple[Path, Path, float], session_cache: Path, tmp_path: Path) -> None:
    cfg, ref, _ = reference
    other = tmp_path / "other.toml"
    other.write_text(CONFIG.replace("faithfulness_images = 8", "faithfulness_images = 4"))
    proc = edgecam(["run", str(other), "--out", str(ref), "--limit", str(IMAGES)], session_cache)
    assert proc.returncode == 2
    assert "holds a different experiment (differs in: config_hash)" in proc.stderr and "new --out" in proc.stderr
    proc = edgecam(["run", str(cfg), "--out", str(ref), "--limit", "12"], session_cache)  # same config, fewer images
    assert proc.returncode == 2 and "differs in: images" in proc.stderr
    proc = edgecam(["run", str(cfg), "--resume", str(tmp_path / "never-ran")], session_cache)
    assert proc.returncode == 2 and "not an edgecam run directory" in proc.stderr
