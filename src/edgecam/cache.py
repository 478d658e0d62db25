"""Cache directory, content hashes and atomic file writes (temp file + rename: no half-written file survives)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def cache_dir() -> Path:
    """Root of edgecam's cache: $EDGECAM_CACHE_DIR, else $XDG_CACHE_HOME/edgecam, else ~/.cache/edgecam."""
    env = os.environ.get("EDGECAM_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "edgecam"


def stable_hash(obj: Any, n: int = 16) -> str:
    """Hash of a JSON-serialisable object with sorted keys: the cache key of whatever produced a file."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside `final`; on success rename it over `final`, on failure delete it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())  # mkstemp's 0600 would make a shared run directory unreadable
        with open(tmp_path, "rb+") as f:  # durable before it becomes visible
            os.fsync(f.fileno())
        os.replace(tmp_path, final)
        fsync_dir(final.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _read_umask() -> int:
    """The process's umask: from /proc (Linux), else by setting and restoring it, once at import (setting it,
    even briefly, would race files other threads create)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def current_umask() -> int:
    """The umask new files are made with (read once at import)."""
    return _UMASK


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename inside `directory` durable (POSIX: the directory entry lives in the directory's inode)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not fsync directories
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def installed_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """Each distribution's installed version ("not installed" where absent): what a manifest records and a cache
    key includes, so that an artifact or a run is redone when a package its numbers depend on changes."""
    import importlib.metadata as md

    out = {}
    for pkg in packages:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
