"""The run directory's job store: every finished job of a sweep, committed atomically, so that an interrupted
run (crash, SIGKILL, dropped board, Ctrl-C) resumes where it stopped and loses nothing.

A job is a directory `RUN_DIR/jobs/<kind>/<key>/` with `meta.json` (JSON), optional `arrays.npz` (numpy,
never pickled) and optional `<name>.parquet` tables. It is written into a temporary sibling and renamed into
place, so a job directory either exists complete or not at all; `meta.json` is written last inside it as a
second guard. Keys are content hashes of everything the job's result depends on (model, weights hash,
artifact sha256, runtime and its options, device, precision, image shard), so a changed input is a new job.

The run itself is pinned by `run.json` (config hash, images, device): a rerun of the same experiment into the
same directory resumes; a different experiment in that directory is refused rather than mixed in.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgecam.cache import atomic_write_json, stable_hash
from edgecam.errors import EdgecamError

RUN_FILE = "run.json"


class RunDirError(EdgecamError):
    """The run directory holds a different experiment (or is not a run directory)."""


@dataclass
class Job:
    """A finished job as stored: JSON metadata, numpy arrays and pandas tables."""

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)


def job_key(**parts: Any) -> str:
    """Stable key of a job from what its result depends on (sorted JSON, sha256)."""
    return stable_hash(parts, n=24)


class JobStore:
    """Finished jobs under `root` (`RUN_DIR/jobs`). `get` returns None for a job that never finished."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.reused = 0
        self.committed = 0

    def _dir(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def has(self, kind: str, key: str) -> bool:
        return (self._dir(kind, key) / "meta.json").is_file()

    def get(self, kind: str, key: str, count: bool = True) -> Job | None:
        """The stored job, or None (`count`: tally it as reused). A job directory that cannot be read (disk trouble, edited by hand) is
        discarded and reported as not done, so the sweep recomputes it instead of trusting it."""
        d = self._dir(kind, key)
        if not (d / "meta.json").is_file():
            return None
        try:
            meta = json.loads((d / "meta.json").read_text())
            arrays: dict[str, np.ndarray] = {}
            if (d / "arrays.npz").is_file():
                with np.load(d / "arrays.npz", allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
            tables = {}
            parquets = sorted(d.glob("*.parquet"))
            if parquets:
                import pandas as pd

                tables = {p.stem: pd.read_parquet(p) for p in parquets}
        except (OSError, ValueError) as exc:  # json / npz / parquet decode errors are ValueErrors
            shutil.rmtree(d, ignore_errors=True)
            logging.getLogger(__name__).warning("job %s/%s unreadable (%s): recomputing it", kind, key, exc)
            return None
        self.reused += int(count)
        return Job(meta, arrays, tables)

    def put(self, kind: str, key: str, job: Job) -> None:
        """Commit a finished job atomically (temporary sibling directory + rename)."""
        final = self._dir(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".part", dir=final.parent))
        try:
            if job.arrays:
                with open(tmp / "arrays.npz", "wb") as f:
                    np.savez(f, **{k: np.ascontiguousarray(v) for k, v in job.arrays.items()})
            for name, df in job.tables.items():
                df.to_parquet(tmp / f"{name}.parquet", index=False)
            (tmp / "meta.json").write_text(json.dumps(job.meta, sort_keys=True, default=str))
            for p in tmp.iterdir():  # durable before the rename makes the job visible
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
            if final.exists():  # an unreadable leftover, or a concurrent writer: the new copy wins
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.committed += 1

    def get_or_compute(self, kind: str, key: str, compute: Callable[[], Job | None]) -> tuple[Job | None, bool]:
        """The job `kind`/`key`: read back when it finished before (reused = True), else `compute()`d and
        committed, then read back, so a fresh and a resumed run go through the same stored form. `compute`
        returning None (a failed job) commits nothing: the next resume retries it. Returns (job, reused)."""
        job = self.get(kind, key)
        if job is not None:
            return job, True
        fresh = compute()
        if fresh is None:
            return None, False
        self.put(kind, key, fresh)
        return self.get(kind, key, count=False), False

    def clean_partials(self) -> int:
        """Remove half-written job directories a killed run left behind; returns how many."""
        n = 0
        if self.root.is_dir():
            for p in self.root.glob("*/.*.part"):
                shutil.rmtree(p, ignore_errors=True)
                n += 1
        return n


def pin_run_dir(out_dir: Path, identity: dict[str, Any], resume: bool | None) -> bool:
    """Bind `out_dir` to one experiment. Returns True when it resumes an earlier run of the same experiment.

    `resume=None` (the default): resume when `run.json` matches, start fresh when the directory is new or
    empty; `resume=True` (`--resume RUN_DIR`): the directory must already hold this experiment. A directory
    holding another experiment, or files but no `run.json`, is refused with what differs.
    """
    path = out_dir / RUN_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RunDirError(f"{path}: unreadable ({exc}); move the run directory away or pass a new --out") from exc
        if old.get("identity_hash") != stable_hash(identity):
            diff = sorted(k for k in set(old.get("identity", {})) | set(identity) if old.get("identity", {}).get(k) != identity.get(k))
            raise RunDirError(
                f"{out_dir} holds a different experiment (differs in: {', '.join(diff) or 'identity'}); "
                f"edgecam resumes a run only with the same config, image count and device. Pass a new --out directory."
            )
        return True
    if resume:
        raise RunDirError(f"--resume {out_dir}: not an edgecam run directory (no {RUN_FILE}); run without --resume to start it")
    if out_dir.is_dir() and any(p.name != ".device" for p in out_dir.iterdir()):
        raise RunDirError(f"{out_dir} exists and is not an edgecam run directory (no {RUN_FILE}); pass a new or empty --out directory")
    atomic_write_json(path, {"identity": identity, "identity_hash": stable_hash(identity)})
    return False
