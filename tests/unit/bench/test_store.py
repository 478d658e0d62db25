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
