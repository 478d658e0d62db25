"""The run directory's job store: every finished job of a sweep, committed atomically, so that an interrupted
run (crash, SIGKILL, dropped board, Ctrl-C) resumes where it stopped and loses nothing.

A job is a directory `RUN_DIR/jobs/<kind>/<key>/` with `meta.json` (JSON), optional `arrays.npz` (numpy,
never pickled) and optional `<name>.parquet` tables. It is written into a temporary sibling and renamed into
place, so a job directory either exists complete or not at all; `meta.json` is written last inside it as a
second guard, and holds the SHA-256 of every other file and of the metadata itself: a job whose files do not
match (truncated by an interrupted copy, a flipped bit, edited by hand) or do not parse is discarded and
recomputed, never trusted and never left to fail every resume. Keys are content hashes of everything the job's result depends on (model, weights hash,
artifact sha256, runtime and its options, device, precision, image shard), so a changed input is a new job.

The run itself is pinned by `run.json` (config hash, images, device): a rerun of the same experiment into the
same directory resumes; a different experiment in that directory is refused rather than mixed in.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from edgecam.safe_io import check_no_links, links_under, make_dirs, open_nofollow, remove_temp_files, symlink_error, write_error, write_json
from edgecam.cache import current_umask, fsync_dir, sha256_file, stable_hash
from edgecam.errors import EdgecamError, RunDirWriteError

RUN_FILE = "run.json"
LOCK_FILE = ".lock"  # held (flock) by the run using the directory; holds its pid


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
        """The stored job, or None (`count`: tally it as reused). A job directory that does not check out
        (`_read`: checksums, parse) is discarded and reported as not done, so the sweep recomputes it."""
        d = self._dir(kind, key)
        if not (d / "meta.json").is_file():
            return None
        try:
            check_no_links(d / "meta.json", self.root.parent)  # a job reached through a link is not this run's: refused, never trusted
            job = _read(d)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a damaged file raises (BadZipFile, EOFError, ArrowInvalid, ...)
            shutil.rmtree(d, ignore_errors=True)
            logging.getLogger(__name__).warning("job %s/%s unreadable (%s: %s): recomputing it", kind, key, type(exc).__name__, exc)
            return None
        self.reused += int(count)
        return job

    def discard(self, kind: str, key: str, why: str) -> None:
        """Remove a stored job its reader could not use (it checked out but does not have the expected form)."""
        shutil.rmtree(self._dir(kind, key), ignore_errors=True)
        logging.getLogger(__name__).warning("job %s/%s unusable (%s): recomputing it", kind, key, why)

    def put(self, kind: str, key: str, job: Job) -> None:
        """Commit a finished job atomically (temporary sibling directory + rename). A write that fails (a full
        or read-only disk, permissions, a link where the job goes) is a RunDirWriteError naming the job's
        folder and leaves no temporary folder behind."""
        final = self._dir(kind, key)
        make_dirs(final.parent, self.root.parent)  # no link on the way (jobs, jobs/<kind>)
        check_no_links(final, self.root.parent)
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".part", dir=final.parent))
        except OSError as exc:
            raise write_error(final, exc) from None
        try:
            if job.arrays:
                with open(tmp / "arrays.npz", "wb") as f:
                    np.savez(f, **{k: np.ascontiguousarray(v) for k, v in job.arrays.items()})
            for name, df in job.tables.items():
                df.to_parquet(tmp / f"{name}.parquet", index=False)
            meta = json.loads(json.dumps(job.meta, sort_keys=True, default=str))  # as it will read back
            sums = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
            (tmp / "meta.json").write_text(json.dumps({"meta": meta, "files": sums, "meta_sha256": _meta_hash(meta)}, sort_keys=True))
            for p in tmp.iterdir():  # durable before the rename makes the job visible
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
            os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's 0700 would hide the job from the run directory's other readers
            check_no_links(final, self.root.parent)
            if final.exists():  # an unreadable leftover, or a concurrent writer: the new copy wins
                shutil.rmtree(final)
            os.replace(tmp, final)
            fsync_dir(final.parent)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError) and not isinstance(exc, RunDirWriteError):
                raise write_error(final, exc) from exc
            raise
        self.committed += 1

    def get_or_compute(self, kind: str, key: str, compute: Callable[[], Job | None], check: Callable[[Job], object] | None = None) -> tuple[Job | None, bool]:
        """The job `kind`/`key`: read back when it finished before (reused = True), else `compute()`d and
        committed, then read back, so a fresh and a resumed run go through the same stored form. `compute`
        returning None (a failed job) commits nothing: the next resume retries it. `check(job)` raising
        (KeyError, TypeError, ValueError, ...) on a stored job discards it and computes it again. Returns
        (job, reused)."""
        job = self.get(kind, key, count=False)
        if job is not None and check is not None:
            try:
                check(job)
            except Exception as exc:  # noqa: BLE001 - a stored job of another form (an older edgecam, a hand edit)
                self.discard(kind, key, f"{type(exc).__name__}: {exc}")
                job = None
        if job is not None:
            self.reused += 1
            return job, True
        fresh = compute()
        if fresh is None:
            return None, False
        self.put(kind, key, fresh)
        back = self.get(kind, key, count=False)
        if back is None:  # the job just written cannot be read back: the disk, not the job, is at fault
            raise RunDirError(f"job {kind}/{key} could not be read back right after it was written under {self.root}; check the disk")
        return back, False

    def clean_partials(self) -> int:
        """Remove half-written job directories a killed run left behind; returns how many."""
        n = 0
        if self.root.is_dir():
            for p in self.root.glob("*/.*.part"):
                shutil.rmtree(p, ignore_errors=True)
                n += 1
        return n


def _meta_hash(meta: Any) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def _read(d: Path) -> Job:
    """A job directory as a Job, after checking it is exactly what `put` wrote: meta.json parses to the
    envelope, the metadata hashes to its recorded SHA-256, every file is listed and matches its SHA-256."""
    envelope = json.loads((d / "meta.json").read_text())
    if not isinstance(envelope, dict) or not isinstance(envelope.get("files"), dict) or "meta" not in envelope:
        raise ValueError("meta.json is not a job envelope (meta, files, meta_sha256)")
    meta, sums = envelope["meta"], envelope["files"]
    if envelope.get("meta_sha256") != _meta_hash(meta):
        raise ValueError("meta.json: the metadata does not match its SHA-256")
    present = sorted(p.name for p in d.iterdir() if p.name != "meta.json")
    if present != sorted(sums):
        raise ValueError(f"files {present} but meta.json lists {sorted(sums)}")
    for name, digest in sums.items():
        if sha256_file(d / name) != digest:
            raise ValueError(f"{name}: SHA-256 mismatch (truncated or altered)")
    if not isinstance(meta, dict):
        raise ValueError(f"metadata is a {type(meta).__name__}, not an object")
    arrays: dict[str, np.ndarray] = {}
    if "arrays.npz" in sums:
        with np.load(d / "arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    tables = {}
    parquets = [n for n in sums if n.endswith(".parquet")]
    if parquets:
        import pandas as pd

        tables = {Path(n).stem: pd.read_parquet(d / n) for n in sorted(parquets)}
    return Job(meta, arrays, tables)


def pin_run_dir(out_dir: Path, identity: dict[str, Any], resume: bool | None, config: dict[str, Any] | None = None) -> bool:
    """Bind `out_dir` to one experiment. Returns True when it resumes an earlier run of the same experiment.

    `resume=None` (the default): resume when `run.json` matches, start fresh when the directory is new or
    empty; `resume=True` (`--resume RUN_DIR`): the directory must already hold this experiment. A directory
    holding another experiment, or files but no `run.json`, is refused with what differs (with `config`, the
    experiment's settings are kept in run.json so that a changed setting is named: `bench.iterations`).
    """
    path = out_dir / RUN_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RunDirError(f"{path}: unreadable ({exc}); move the run directory away or pass a new --out") from exc
        if not isinstance(old, dict):
            raise RunDirError(f"{path}: not an edgecam run file; move the run directory away or pass a new --out")
        if old.get("identity_hash") != stable_hash(identity):
            before = old.get("identity", {}) if isinstance(old.get("identity"), dict) else {}
            diff = sorted(k for k in set(before) | set(identity) if before.get(k) != identity.get(k))
            if "config_hash" in diff and isinstance(old.get("config"), dict) and config is not None:
                a, b = flat_settings(old["config"]), flat_settings(json.loads(json.dumps(config, default=str)))
                settings = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                diff = [d for d in diff if d != "config_hash"] + settings[:8] + ([f"... {len(settings) - 8} more"] if len(settings) > 8 else [])
            raise RunDirError(
                f"{out_dir} holds a different experiment (differs in: {', '.join(diff) or 'identity'}); "
                f"edgecam resumes a run only with the same config, image count and device. Pass a new --out directory."
            )
        return True
    if resume:
        raise RunDirError(f"--resume {out_dir}: not an edgecam run directory (no {RUN_FILE}); run without --resume to start it")
    if out_dir.is_dir() and any(p.name not in (".device", LOCK_FILE) for p in out_dir.iterdir()):
        raise RunDirError(f"{out_dir} exists and is not an edgecam run directory (no {RUN_FILE}); pass a new or empty --out directory")
    record: dict[str, Any] = {"identity": identity, "identity_hash": stable_hash(identity)}
    if config is not None:
        record["config"] = config
    write_json(path, record)
    return False


def flat_settings(obj: Any, prefix: str = "") -> dict[str, Any]:
    """A nested settings dict as dotted keys ("bench.iterations") -> JSON values; lists kept whole."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flat_settings(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: json.dumps(obj, sort_keys=True, default=str)}


@contextlib.contextmanager
def run_dir_lock(out_dir: Path) -> Iterator[None]:
    """Hold RUN_DIR/.lock (an exclusive `flock`) for a whole run: a second run into the same directory is
    refused at once, naming the first one's pid, instead of the two replacing each other's jobs and artifacts.
    The kernel drops the lock when its process dies, so a killed run never leaves the directory locked.

    The lock is opened without following a link (O_NOFOLLOW: a `.lock` linked to another file is refused, never
    truncated), and once it is held the directory is checked for links (`links_under`: edgecam writes no file
    through one) and the temporary files of a killed run's writers are removed."""
    import fcntl

    from edgecam.bench.outputs import ARTIFACTS, DEVICE_SCRATCH, OUTPUTS

    if out_dir.exists() and not out_dir.is_dir():
        raise RunDirError(f"{out_dir}: cannot be used as a run directory (not a folder); pass another --out")
    if not out_dir.is_dir():
        make_dirs(out_dir, out_dir.parent)  # RunDirWriteError naming it when the disk or permissions refuse
    fd = open_nofollow(out_dir / LOCK_FILE)
    f = os.fdopen(fd, "r+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read(64).strip() or "?"
            raise RunDirError(f"another edgecam run (pid {pid}) is using {out_dir}; wait for it to finish or pass another --out") from None
        links = links_under(out_dir, skip=(DEVICE_SCRATCH,))
        if links:
            raise symlink_error(links[0]) if len(links) == 1 else RunDirWriteError(
                f"cannot use {out_dir}: it holds symbolic links ({', '.join(str(p) for p in links[:5])}{', ...' if len(links) > 5 else ''}); "
                "edgecam never writes through links in a run directory; remove them or pass another --out", links[0], errno.ELOOP)
        remove_temp_files(out_dir, (".*.tmp", f"{OUTPUTS}/*/.*.tmp", f"{ARTIFACTS}/.*.part"))  # a killed run's half-written files
        try:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
        except OSError as exc:
            raise write_error(out_dir / LOCK_FILE, exc) from None
        yield
    finally:
        f.close()  # releases the lock; the file stays (removing it would race a waiting run's open)
