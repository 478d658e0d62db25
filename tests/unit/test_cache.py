"""Durable, shareable writes (`edgecam.cache.atomic_path`, the job store's commit): the bytes are fsynced before
the rename and the directory after it, a failure leaves nothing, and modes follow the umask, not mkstemp's
0600 (a run directory served to teammates or by a web server must be readable)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edgecam import cache
from edgecam.bench.store import Job, JobStore


def _spy_fsync(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_are_fsynced_and_follow_the_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask: int) -> None:
    monkeypatch.setattr(cache, "_UMASK", umask)
    synced = _spy_fsync(monkeypatch)
    final = tmp_path / "out" / "results.csv"
    cache.atomic_write_bytes(final, b"a,b\n1,2\n")
    assert final.read_bytes() == b"a,b\n1,2\n"
    assert stat.S_IMODE(final.stat().st_mode) == 0o666 & ~umask
    assert any(p.startswith(str(final.parent / ".results.csv.")) for p in synced)  # the file, under its temporary name
    assert synced[-1] == str(final.parent)  # then the directory holding the rename
    assert [p.name for p in final.parent.iterdir()] == ["results.csv"]


def test_a_failed_atomic_write_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "x.bin"
    final.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with cache.atomic_path(final) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert final.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.bin"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_committed_jobs_are_durable_and_follow_the_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask: int) -> None:
    import numpy as np

    monkeypatch.setattr(cache, "_UMASK", umask)
    from edgecam.bench import store as store_module

    monkeypatch.setattr(store_module, "current_umask", lambda: umask)
    synced = _spy_fsync(monkeypatch)
    store = JobStore(tmp_path / "jobs")
    store.put("explain", "k1", Job({"n": 1}, {"x": np.arange(3)}))
    final = tmp_path / "jobs" / "explain" / "k1"
    assert stat.S_IMODE(final.stat().st_mode) == 0o777 & ~umask
    names = {Path(p).name for p in synced}
    assert {"arrays.npz", "meta.json"} <= names and str(final.parent) in synced  # files, then the directory
    job = store.get("explain", "k1")
    assert job is not None and job.meta == {"n": 1} and job.arrays["x"].tolist() == [0, 1, 2]
