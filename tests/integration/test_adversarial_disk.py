"""Issue 36: a disk, a damaged file or a link in the run directory fails a job or the command with a clear
error, never a traceback, a silent result or a write through a link; and a rerun once the disk has room
resumes to exactly the results of a clean run. Every case goes through the real CLI (`edgecam.cli.main`),
in process, with the session's trained tinycnn in the cache.

Audit cases (audits/reliability-2026-12-05.md): N54 / N55 (`--out` on a 1-2 MiB tmpfs), N56 (the disk fills
mid-run), N46 (damaged files read by compare / report), N45 (compare across data), N37 (an empty
Fashion-MNIST), item 6 (links in the run directory). Disk cases mount tmpfs (root only; skipped otherwise)."""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pytest

from edgecam.bench.store import JobStore
from edgecam.cli import main

# two precisions x one CAM method x 8 images in shards of 4: 2 run jobs, 2 explain jobs, prediction jobs
CONFIG = """
name = "disk"
[export]
precisions = ["fp32", "int8"]
[[models]]
name = "tinycnn"
[[runtimes]]
name = "onnxruntime"
threads = 1
[bench]
warmup = 1
iterations = 5
memory = false
[explain]
methods = ["gradcampp"]
faithfulness_images = 4
emd_size = 8
shard_size = 4
bootstrap = 100
"""
IMAGES = 8
OUTPUTS = ["results.parquet", "activations.parquet", "wsol.csv", "summary.csv", "bench.csv"]
BENCH_COLUMNS = ["model", "format", "runtime", "precision", "ok", "accuracy", "agrees_fp32", "size_bytes"]  # the rest are timings


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`edgecam ARGS` through `main`, in process: (exit status, stdout, stderr). A traceback fails the test."""
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def _run(capsys: pytest.CaptureFixture[str], cfg: Path, out: Path) -> tuple[int, str, str]:
    return _cli(capsys, "run", str(cfg), "--out", str(out), "--limit", str(IMAGES))


def _same_outputs(a: Path, b: Path) -> None:
    """The run's result files are equal, exactly (timings apart)."""
    for name in OUTPUTS:
        read = pd.read_parquet if name.endswith(".parquet") else pd.read_csv
        left, right = read(a / name), read(b / name)
        if name == "bench.csv":
            left, right = left[BENCH_COLUMNS], right[BENCH_COLUMNS]
        pd.testing.assert_frame_equal(left, right, check_exact=True, obj=name)


def _litter(run: Path) -> list[Path]:
    """Temporary files or folders a failed write would leave behind."""
    return sorted(p for p in run.rglob(".*") if p.name.endswith((".tmp", ".part")) and ".device" not in p.parts)


@pytest.fixture(scope="module")
def reference(trained_tinycnn: Any, session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A clean run (config file, run directory)."""
    root = tmp_path_factory.mktemp("disk")
    cfg = root / "disk.toml"
    cfg.write_text(CONFIG)
    out = root / "reference"
    assert main(["run", str(cfg), "--out", str(out), "--limit", str(IMAGES)]) == 0
    return cfg, out


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` for the block (root only: the test is skipped otherwise)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def _fill(path: Path) -> None:
    """Fill the file system of `path` (a new file there) until the kernel answers ENOSPC."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for block in (1 << 20, 1 << 12):
            while True:
                try:
                    if os.write(fd, b"\0" * block) < block:
                        break
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)


@pytest.mark.parametrize("fraction", [2, 8])
def test_disk_full_from_the_start_fails_jobs_or_exits_3_then_a_rerun_with_room_resumes(reference: tuple[Path, Path], tmp_path: Path,
                                                                                       capsys: pytest.CaptureFixture[str], fraction: int) -> None:
    """N54 / N55: `--out` on a tmpfs of 2 MiB or 1/`fraction` of the clean run's bytes, whichever is less. Where
    the disk fills decides the outcome, each a clear one: a job that cannot be committed is a failed job (exit 1,
    recorded in failed.csv with "No space left on device"), a file the run needs that cannot be written is exit 3
    naming it; never a traceback, never a temporary file left. Once there is room the same command finishes with
    the clean run's results (the N55 case: a shard computed while shard 0 had failed is not reused)."""
    cfg, ref = reference
    size_k = min(2048, sum(p.stat().st_size for p in ref.rglob("*") if p.is_file()) // (1024 * fraction))
    with tmpfs(tmp_path / "mnt", f"{size_k}k") as mnt:
        out = mnt / "run"
        rc, stdout, stderr = _run(capsys, cfg, out)
        assert rc in (1, 3), stdout[-3000:] + stderr[-3000:]
        if rc == 3:
            assert f"edgecam: error: cannot write {out}" in stderr and "No space left on device; the disk is full" in stderr
        else:
            failed = pd.read_csv(out / "failed.csv")
            assert failed["error"].str.contains("No space left on device").any() and "rerun the same command" in stdout
        assert "Traceback" not in stdout + stderr and _litter(out) == []
        with capsys.disabled():
            print(f"tmpfs {size_k} KiB: exit {rc}")
        _remount(mnt, "size=300m")
        rc, stdout, stderr = _run(capsys, cfg, out)
        assert rc == 0, stdout[-3000:] + stderr[-3000:]
        assert "resuming" in stdout
        _same_outputs(ref, out)
        assert _litter(out) == []


def test_disk_filling_mid_run_is_exit_3_then_a_rerun_resumes(reference: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """N56: the disk fills right after the first explain shard is committed (a file filling it until the kernel
    says ENOSPC): exit 3 naming the file; with the filler gone, the rerun keeps the committed jobs and ends
    with the clean run's results."""
    cfg, ref = reference
    put = JobStore.put
    filled: list[str] = []

    def put_then_fill(self: JobStore, kind: str, key: str, job: Any) -> None:
        put(self, kind, key, job)
        if kind == "explain" and not filled:
            _fill(self.root.parent.parent / "filler")
            filled.append(key)

    with tmpfs(tmp_path / "mnt", "64m") as mnt:
        out = mnt / "run"
        monkeypatch.setattr(JobStore, "put", put_then_fill)
        rc, stdout, stderr = _run(capsys, cfg, out)
        monkeypatch.undo()
        assert filled and rc == 3, stdout[-3000:] + stderr[-3000:]
        assert f"edgecam: error: cannot write {out}" in stderr and "No space left on device" in stderr and "Traceback" not in stdout + stderr
        assert _litter(out) == [] and (out / "jobs" / "explain" / filled[0] / "meta.json").is_file()
        (mnt / "filler").unlink()
        rc, stdout, stderr = _run(capsys, cfg, out)
        assert rc == 0, stdout[-3000:] + stderr[-3000:]
        assert json.loads((out / "manifest.json").read_text())["jobs"]["reused"] >= 3  # 2 timing runs and the shard committed before the disk filled
        _same_outputs(ref, out)


def test_a_read_only_or_immutable_run_directory_is_exit_3(reference: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """EROFS (a read-only tmpfs holding a finished run) for `run`, `report` and `compare --html`; EPERM for an
    immutable report.html (`chattr +i`, where the file system supports it): exit 3, the path and the remedy."""
    cfg, ref = reference
    with tmpfs(tmp_path / "mnt", "50m") as mnt:
        run = mnt / "run"
        shutil.copytree(ref, run)
        _remount(mnt, "ro")
        for args in (("run", str(cfg), "--out", str(run), "--limit", str(IMAGES)), ("report", str(run)), ("compare", str(ref), str(run), "--html", str(mnt / "c.html"))):
            rc, stdout, stderr = _cli(capsys, *args)
            assert rc == 3, (args, stdout[-2000:], stderr[-2000:])
            assert "Read-only file system; the file system is read-only" in stderr and "Traceback" not in stdout + stderr, args
        assert f"cannot write {run}/.lock" in _cli(capsys, *("run", str(cfg), "--out", str(run), "--limit", str(IMAGES)))[2]
    run = tmp_path / "immutable"
    shutil.copytree(ref, run)
    if subprocess.run(["chattr", "+i", str(run / "report.html")], capture_output=True).returncode != 0:
        return  # the file system has no immutable flag: the read-only case above stands for it
    try:
        before = (run / "report.html").read_bytes()
        rc, _, stderr = _cli(capsys, "report", str(run))
        assert rc == 3 and f"cannot write {run}/report.html: Operation not permitted" in stderr and "immutable" in stderr
        assert (run / "report.html").read_bytes() == before and _litter(run) == []
    finally:
        subprocess.run(["chattr", "-i", str(run / "report.html")], check=False)


def _copy(ref: Path, to: Path) -> Path:
    shutil.copytree(ref, to)
    return to


def test_damaged_files_read_by_compare_and_report_are_named(reference: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """N46: a truncated results.parquet, a broken manifest.json, truncated kept outputs, a CSV cut mid-line, a
    grid.npz cut short: exit 2 with the damaged file named and what to do, never ArrowInvalid / JSONDecodeError
    / BadZipFile."""
    _, ref = reference
    cases: list[tuple[str, str]] = [("results.parquet", "cut"), ("manifest.json", "json"), ("outputs", "npz"), ("summary.csv", "cut"), ("grid.npz", "cut")]
    for name, how in cases:
        run = _copy(ref, tmp_path / f"dmg-{name}")
        targets = sorted((run / "outputs").glob("*/*.npz")) if how == "npz" else [run / name]
        assert targets
        for path in targets:
            path.write_bytes(b'{"device": ' if how == "json" else path.read_bytes()[: min(100, path.stat().st_size // 2)])
        shown = str(targets[0]) if how != "npz" else str(run / "outputs")
        commands = [("compare", str(ref), str(run))] if name in ("results.parquet", "outputs") else [("report", str(run))]
        if name == "manifest.json":
            commands.append(("compare", str(ref), str(run)))
        for args in commands:
            rc, stdout, stderr = _cli(capsys, *args)
            assert rc == 2, (name, args, stdout[-2000:], stderr[-2000:])
            assert shown in stderr and "is damaged and cannot be read" in stderr and "rerun the run that made it" in stderr, (name, stderr)
            assert "Traceback" not in stdout + stderr


def test_compare_refuses_runs_on_different_data_unless_told(reference: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """N45: a run whose manifest carries another data fingerprint (data.seed 1) is refused, naming both
    fingerprints and data.seed; --allow-different-data compares means only, labelled, with no device gap."""
    _, ref = reference
    other = _copy(ref, tmp_path / "seed1")
    manifest = json.loads((other / "manifest.json").read_text())
    fingerprint = manifest["data_fingerprint"]
    manifest["data_fingerprint"] = "319a5b78" + fingerprint[8:]
    manifest["config"]["data"]["seed"] = 1
    (other / "manifest.json").write_text(json.dumps(manifest))
    rc, stdout, stderr = _cli(capsys, "compare", str(ref), str(other))
    assert rc == 2 and "were run on different data" in stderr and fingerprint in stderr and "319a5b78" in stderr
    assert "data.seed 0 vs 1" in stderr and "--allow-different-data" in stderr and stdout == ""
    rc, stdout, stderr = _cli(capsys, "compare", str(ref), str(other), "--allow-different-data", "--html", str(tmp_path / "c.html"))
    assert rc == 0, stderr
    assert "DIFFERENT DATA" in stdout and "no device gap: the runs were made on different data" in stdout
    assert "DIFFERENT DATA" in (tmp_path / "c.html").read_text()
    rc, stdout, _ = _cli(capsys, "compare", str(ref), str(_copy(ref, tmp_path / "same")))  # the same data: compared as before, device gap included
    assert rc == 0 and "DIFFERENT DATA" not in stdout and "Device gap" in stdout


def test_links_in_the_run_directory_are_refused_not_followed(reference: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Item 6: `.lock` linked to another file (once opened "a+" and truncated through the link) and a results
    table linked elsewhere: exit 3 naming the link; the link's target is untouched."""
    cfg, ref = reference
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / ".lock").symlink_to(victim)
    rc, stdout, stderr = _run(capsys, cfg, fresh)
    assert rc == 3 and f"cannot write {fresh}/.lock: it is a symbolic link (to {victim})" in stderr and "Traceback" not in stdout + stderr
    finished = _copy(ref, tmp_path / "finished")
    (finished / "summary.csv").unlink()
    (finished / "summary.csv").symlink_to(victim)
    rc, stdout, stderr = _run(capsys, cfg, finished)
    assert rc == 3 and f"cannot write {finished}/summary.csv: it is a symbolic link" in stderr
    assert victim.read_text() == "precious" and os.path.islink(finished / "summary.csv")


def _idx(path: Path, array: np.ndarray) -> None:
    path.write_bytes(gzip.compress(bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()))


def test_an_empty_fashion_mnist_is_a_named_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """N37: Fashion-MNIST IDX files holding 0 images (all four, or the t10k split only): exit 2 naming the split
    and the files, not numpy's "zero-size array to reduction operation"."""
    for case, n_train in (("all", 0), ("t10k", 30)):
        folder = tmp_path / case
        folder.mkdir()
        for stem, n in (("train", n_train), ("t10k", 0)):
            _idx(folder / f"{stem}-images-idx3-ubyte.gz", np.zeros((n, 28, 28)))
            _idx(folder / f"{stem}-labels-idx1-ubyte.gz", np.arange(n) % 10)
        cfg = tmp_path / f"{case}.toml"
        cfg.write_text(f'name = "fm"\n[data]\nname = "fashion-mnist"\nsource = "{folder}"\n[[models]]\nname = "mnistcnn"\n')
        rc, stdout, stderr = _cli(capsys, "run", str(cfg), "--out", str(tmp_path / f"out-{case}"))
        assert rc == 2, stdout[-2000:] + stderr[-2000:]
        assert "no image" in stderr and str(folder) in stderr and ("training and test splits" if n_train == 0 else "the test split") in stderr
        assert "zero-size" not in stderr and not (tmp_path / f"out-{case}").exists()
