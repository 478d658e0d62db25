"""The run directory's job store: atomic jobs read back as written, compute-once, failures never committed,
unreadable jobs discarded, and the run directory pinned to one experiment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgecam.bench.store import Job, JobStore, RunDirError, job_key, pin_run_dir


def test_a_job_reads_back_as_written(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs")
    job = Job({"a": 1, "b": [1.5, "x"]}, {"z": np.arange(6, dtype=np.float32).reshape(2, 3)}, {"rows": pd.DataFrame({"k": ["p", "q"], "v": [0.5, np.nan]})})
    store.put("explain", "k1", job)
    back = store.get("explain", "k1")
    assert back is not None and back.meta == job.meta and store.reused == 1 and store.committed == 1
    np.testing.assert_array_equal(back.arrays["z"], job.arrays["z"])
    pd.testing.assert_frame_equal(back.tables["rows"], job.tables["rows"])
    assert store.get("explain", "missing") is None


def test_get_or_compute_computes_once_and_never_commits_a_failure(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs")
    calls: list[int] = []

    def compute() -> Job:
        calls.append(1)
        return Job({"n": len(calls)})

    first, reused = store.get_or_compute("run", "k", compute)
    assert first is not None and first.meta == {"n": 1} and reused is False
    again, reused = store.get_or_compute("run", "k", compute)
    assert again is not None and again.meta == {"n": 1} and reused is True and len(calls) == 1
    failed, reused = store.get_or_compute("run", "other", lambda: None)
    assert failed is None and not reused and not store.has("run", "other")  # retried on the next resume


def test_an_unreadable_job_is_discarded_and_recomputed(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs")
    store.put("run", "k", Job({"ok": True}, {"x": np.ones(3)}))
    (tmp_path / "jobs" / "run" / "k" / "arrays.npz").write_bytes(b"not a zip")
    assert store.get("run", "k") is None and not (tmp_path / "jobs" / "run" / "k").exists()
    (tmp_path / "jobs" / "run" / ".k.abc.part").mkdir(parents=True)
    assert store.clean_partials() == 1


def test_job_keys_depend_on_every_part() -> None:
    assert job_key(a=1, b=[1, 2]) == job_key(b=[1, 2], a=1)
    assert job_key(a=1, b=[1, 2]) != job_key(a=1, b=[2, 1])


def test_the_run_directory_is_pinned_to_one_experiment(tmp_path: Path) -> None:
    ident = {"config_hash": "c1", "images": 10, "device": "local", "data": "d"}
    out = tmp_path / "run"
    with pytest.raises(RunDirError, match="not an edgecam run directory"):
        pin_run_dir(out, ident, resume=True)
    assert pin_run_dir(out, ident, None) is False  # new
    assert pin_run_dir(out, ident, None) is True and pin_run_dir(out, ident, True) is True  # same experiment: resume
    with pytest.raises(RunDirError, match="differs in: images"):
        pin_run_dir(out, {**ident, "images": 11}, None)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="exists and is not an edgecam run directory"):
        pin_run_dir(other, ident, None)


def _damage(path: Path, rng: np.random.Generator) -> str:
    """One seeded accident to a stored file: truncation (to 0, to a random length) or a flipped bit."""
    data = bytearray(path.read_bytes())
    kind = ("truncate0", "truncate", "flip", "append")[int(rng.integers(4))]
    if kind == "truncate0":
        data = bytearray()
    elif kind == "truncate":
        data = data[: int(rng.integers(0, max(1, len(data))))]
    elif kind == "flip":
        i = int(rng.integers(len(data)))
        data[i] ^= 1 << int(rng.integers(8))
    else:
        data += b"\0"
    path.write_bytes(bytes(data))
    return kind


@pytest.mark.parametrize("seed", range(60))
def test_a_damaged_job_is_discarded_and_recomputed_never_trusted(tmp_path: Path, seed: int) -> None:
    """Seeded truncations and bit flips of every kind of job file (meta.json, arrays.npz, a table): `get` sees a
    job that is not exactly what `put` wrote, drops it, and `get_or_compute` recomputes it to the same value."""
    rng = np.random.default_rng(seed)
    store = JobStore(tmp_path / "jobs")
    job = Job({"n": 3, "nested": {"x": [1, 2.5]}}, {"z": rng.normal(size=(4, 5)).astype(np.float32)}, {"rows": pd.DataFrame({"v": rng.normal(size=6)})})
    store.put("explain", "k", job)
    files = sorted((tmp_path / "jobs" / "explain" / "k").iterdir())
    victim = files[int(rng.integers(len(files)))]
    _damage(victim, rng)
    assert store.get("explain", "k") is None and not store.has("explain", "k")
    again, reused = store.get_or_compute("explain", "k", lambda: job)
    assert again is not None and not reused and again.meta == job.meta
    np.testing.assert_array_equal(again.arrays["z"], job.arrays["z"])
    pd.testing.assert_frame_equal(again.tables["rows"], job.tables["rows"])


def test_a_stored_job_of_another_form_is_discarded_by_its_readers_check(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs")
    store.put("run", "k", Job({"old": 1}))  # consistent checksums, but not what the reader expects
    job, reused = store.get_or_compute("run", "k", lambda: Job({"result": {}}), check=lambda j: j.meta["result"])
    assert job is not None and job.meta == {"result": {}} and not reused
    extra = tmp_path / "jobs" / "run" / "k" / "stray.parquet"
    extra.write_bytes(b"x")  # a file the job never had
    assert store.get("run", "k") is None


def test_a_run_directory_is_held_by_one_run_at_a_time(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from edgecam.bench.store import run_dir_lock

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", f"import sys, time; from pathlib import Path; from edgecam.bench.store import run_dir_lock\n"
                               f"with run_dir_lock(Path({str(out)!r})):\n    print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match=rf"another edgecam run \(pid {holder.pid}\) is using {out}"):
            with run_dir_lock(out):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_dir_lock(out):  # the kernel released the killed run's lock: no stale lock to clear by hand
        assert (out / ".lock").read_text() == str(os.getpid())
    assert pin_run_dir(out, {"a": 1}, None) is False  # the lock file alone does not make the directory "not a run dir"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunDirError, match="cannot be used as a run directory"):
        with run_dir_lock(blocker):
            pass


def test_the_lock_and_the_run_directory_refuse_symbolic_links(tmp_path: Path) -> None:
    """Audit item 6: `.lock` was opened with "a+" and truncated through a link. A linked `.lock` is refused and
    its target kept; a run directory holding a link anywhere (a job, outputs/) is refused, naming the link."""
    import errno

    from edgecam.bench.store import run_dir_lock
    from edgecam.errors import RunDirWriteError

    victim = tmp_path / "victim"
    victim.write_text("precious")
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").symlink_to(victim)
    with pytest.raises(RunDirWriteError, match=r"\.lock: it is a symbolic link") as info:
        with run_dir_lock(out):
            pass
    assert info.value.errno == errno.ELOOP and victim.read_text() == "precious"
    (out / ".lock").unlink()
    (out / "jobs" / "explain").mkdir(parents=True)
    (out / "jobs" / "explain" / "k1").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(RunDirWriteError, match=r"jobs/explain/k1: it is a symbolic link"):
        with run_dir_lock(out):
            pass
    (out / "jobs" / "explain" / "k1").unlink()
    (out / ".results.parquet.x1.tmp").write_bytes(b"half")  # what a killed writer leaves: removed once the lock is held
    with run_dir_lock(out):
        assert not (out / ".results.parquet.x1.tmp").exists()


def test_a_job_the_disk_refuses_is_a_named_error_and_leaves_no_partial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit that fails with ENOSPC (here: np.savez) is a RunDirWriteError naming the job's folder (an
    OSError too, so the sweep records a failed job) and leaves no `.part` folder."""
    import errno

    from edgecam.errors import RunDirWriteError

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    store = JobStore(tmp_path / "jobs")
    monkeypatch.setattr(np, "savez", full)
    with pytest.raises(RunDirWriteError, match=r"cannot write .*jobs/explain/k1: No space left on device; the disk is full") as info:
        store.put("explain", "k1", Job({"a": 1}, {"z": np.zeros(3)}))
    assert isinstance(info.value, OSError) and list((tmp_path / "jobs" / "explain").iterdir()) == [] and store.get("explain", "k1") is None
    (tmp_path / "jobs" / "explain" / "k2").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(RunDirWriteError, match="k2: it is a symbolic link"):
        store.put("explain", "k2", Job({"a": 1}))
