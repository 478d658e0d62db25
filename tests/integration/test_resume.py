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


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])  # make test runs seed 0
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
    assert "holds a different experiment (differs in: explain.faithfulness_images)" in proc.stderr and "new --out" in proc.stderr
    proc = edgecam(["run", str(cfg), "--out", str(ref), "--limit", "12"], session_cache)  # same config, fewer images
    assert proc.returncode == 2 and "differs in: images" in proc.stderr
    proc = edgecam(["run", str(cfg), "--resume", str(tmp_path / "never-ran")], session_cache)
    assert proc.returncode == 2 and "not an edgecam run directory" in proc.stderr


def _damage_a_job(run_dir: Path, rng: random.Random) -> str:
    """One seeded accident to one stored job: a file truncated, a bit flipped, bytes appended, or its metadata
    rewritten consistently (checksums recomputed) but of another form: what an interrupted copy, a bad sector
    or a hand edit leaves."""
    import hashlib

    jobs = sorted(p for p in (run_dir / "jobs").glob("*/*") if p.is_dir())
    job = rng.choice(jobs)
    files = sorted(job.iterdir())
    victim = rng.choice(files)
    data = bytearray(victim.read_bytes())
    kind = rng.choice(["truncate", "flip", "append", "reshape"])
    if kind == "truncate":
        data = data[: rng.randrange(0, max(1, len(data)))]
    elif kind == "flip":
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    elif kind == "append":
        data += b"\x00garbage"
    else:  # a well-formed envelope whose metadata lost what its reader needs
        victim = job / "meta.json"
        env = json.loads(victim.read_text())
        env["meta"] = {"something": "else"} if env["meta"] else {"result": "x"}
        env["meta_sha256"] = hashlib.sha256(json.dumps(env["meta"], sort_keys=True).encode()).hexdigest()
        data = bytearray(json.dumps(env, sort_keys=True).encode())
    victim.write_bytes(bytes(data))
    return f"{kind} {job.parent.name}/{job.name[:8]}/{victim.name}"


FUZZ_DEFAULT = 2  # of the 50 seeded cases, these run in `make test`; `make test-slow` runs the other 48


@pytest.mark.parametrize("seed", [pytest.param(s, marks=pytest.mark.slow) if s >= FUZZ_DEFAULT else s for s in range(50)])
def test_a_damaged_job_store_resumes_to_the_uninterrupted_results(reference: tuple[Path, Path, float], session_cache: Path, tmp_path: Path, seed: int) -> None:
    """Fuzz the job store: a finished run's copy with one job damaged (seeded), then `--resume`: the damaged job
    is discarded and recomputed, every other one reused, and the results equal the uninterrupted run's."""
    import shutil

    cfg, ref, _ = reference
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    what = _damage_a_job(out, random.Random(seed))
    proc = edgecam(["run", str(cfg), "--resume", str(out), "--limit", str(IMAGES)], session_cache)
    assert proc.returncode == 0, what + proc.stdout[-3000:] + proc.stderr[-3000:]
    _same_outputs(ref, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["jobs"]["reused"] + manifest["jobs"]["committed"] == JOBS, (what, manifest["jobs"])
    if not what.startswith("reshape"):  # a damaged file never matches its checksum: exactly that job is redone
        assert manifest["jobs"]["committed"] == 1, (what, manifest["jobs"])
    else:  # metadata of another form is redone where its reader needs it (a prediction job reads only its arrays)
        assert manifest["jobs"]["committed"] <= 1, (what, manifest["jobs"])


def test_resume_keys_name_the_saliency_maps_content_and_the_device(trained_tinycnn, tmp_path: Path) -> None:
    """Every input a result depends on is in its job key: saliency maps changed in place (same
    `saliency_dir`) make new explain jobs and new `cc_sal` values; the same inventory name with another Python
    (a different board, an upgraded runtime) makes new device jobs; an unchanged rerun reuses every job."""
    import dataclasses

    import numpy as np

    from edgecam.bench.sweep import run
    from edgecam.config import BenchSpec, RuntimeSpec
    from edgecam.devices.inventory import DeviceSpec

    n = 8
    maps = tmp_path / "maps"
    (maps / "real").mkdir(parents=True)
    (maps / "linked").symlink_to(maps / "real")  # the hash follows links, as the map reader does
    rng = np.random.default_rng(0)
    ids = trained_tinycnn.data.test_ids[:n]
    for i in ids:
        (maps / f"{i}.npy").parent.mkdir(parents=True, exist_ok=True)
        np.save(maps / f"{i}.npy", rng.random((8, 8)).astype(np.float32), allow_pickle=False)
    cfg = trained_tinycnn.cfg
    cfg = cfg.replace(
        data=dataclasses.replace(cfg.data, limit=n), export=dataclasses.replace(cfg.export, precisions=("fp32",)),
        runtimes=(RuntimeSpec("onnxruntime", threads=1),), bench=BenchSpec(warmup=1, iterations=3, memory=False),
        explain=dataclasses.replace(cfg.explain, methods=("gradcampp",), faithfulness=False, saliency="directory", saliency_dir=str(maps), shard_size=n),
    )
    out = tmp_path / "run"
    first = run(cfg, out, log=lambda m: None)
    jobs = first["manifest"]["jobs"]["committed"]
    assert jobs >= 2 and first["manifest"]["jobs"]["reused"] == 0

    partial = out / "jobs" / "explain" / ".deadbeef.x1.part"  # what a run killed mid-commit leaves
    partial.mkdir()
    (partial / "meta.json").write_text("{}")
    said: list[str] = []
    again = run(cfg, out, log=said.append, resume=True)
    assert again["manifest"]["jobs"] == {"reused": jobs, "committed": 0}
    assert f"{jobs} finished job(s) kept, 1 partial one(s) discarded" in " ".join(said)  # the partial is not counted as finished

    np.save(maps / f"{ids[0]}.npy", np.eye(8, dtype=np.float32), allow_pickle=False)  # one map changed in place
    changed = run(cfg, out, log=lambda m: None, resume=True)
    assert changed["manifest"]["jobs"]["committed"] == 1  # the explain shard, nothing else
    a, b = (r["results"].set_index("image_id")["cc_sal"] for r in (again, changed))
    assert a[ids[0]] != b[ids[0]] and np.allclose(a.drop(ids[0]), b.drop(ids[0]), equal_nan=True)
    (maps / "real" / "extra.npy").write_bytes((maps / f"{ids[1]}.npy").read_bytes())  # reached only through the link
    assert run(cfg, out, log=lambda m: None, resume=True)["manifest"]["jobs"]["committed"] == 1

    python = tmp_path / "bin" / "python3"  # the same interpreter under another path: another board to the keys
    python.parent.mkdir()
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    other = run(cfg, out, log=lambda m: None, resume=True, device_spec=DeviceSpec("local", python=str(python)))
    assert other["manifest"]["jobs"]["committed"] == jobs  # every device job again, none resumed into old rows
    assert len(other["results"]) == len(changed["results"]) and not other["failed"]
