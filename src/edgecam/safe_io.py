"""Writing a run directory safely: every file atomically (temporary sibling, fsync, rename), never through a
symbolic link, and with one clear error (`RunDirWriteError`: the path and what to do, CLI exit status 3)
instead of a traceback when the disk is full, over quota, read-only, or not writable.

A reader (a resume, `edgecam report`, `edgecam compare`) therefore never sees half a file, a failed write
leaves no temporary file behind, and a link planted in the run directory cannot redirect edgecam's writes
(or its truncating lock) to a file elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator

from edgecam.cache import current_umask, fsync_dir
from edgecam.errors import RunDirWriteError

#: what to do about each errno a write can fail with
ADVICE = {
    errno.ENOSPC: "the disk is full: free space on it or write elsewhere (another --out), then rerun the same command (a run's finished jobs are kept)",
    errno.EDQUOT: "the disk quota is exceeded: free space in your quota or write elsewhere (another --out), then rerun the same command (a run's finished jobs are kept)",
    errno.EFBIG: "the file is larger than this file system allows: write to another file system (another --out)",
    errno.EROFS: "the file system is read-only: remount it read-write or write to a writable disk (another --out)",
    errno.EACCES: "permission denied: make the folder writable by this user (chmod / chown) or write elsewhere (another --out)",
    errno.EPERM: "operation not permitted: the file or folder may be immutable or append-only (lsattr; chattr -i / -a) or another user's; "
                 "fix that or write elsewhere (another --out)",
    errno.ELOOP: "a symbolic link stands where edgecam writes: edgecam never writes through links in a run directory; remove the link or pass another --out",
    errno.EISDIR: "a folder stands where edgecam writes a file: move it away or write elsewhere",
    errno.ENOTDIR: "a file stands where edgecam needs a folder: move it away or write elsewhere",
    errno.EIO: "the disk reported an I/O error: check the disk (dmesg) and write to a healthy one",
}
#: errnos that say the file system cannot take writes (the CLI's backstop for writes outside the run directory)
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
TEMP_SUFFIX = ".tmp"


def write_error(path: str | os.PathLike[str], exc: BaseException) -> RunDirWriteError:
    """`exc` (an OSError while writing `path`) as a RunDirWriteError naming the path and what to do."""
    if isinstance(exc, RunDirWriteError):
        return exc
    code = exc.errno if isinstance(exc, OSError) and isinstance(exc.errno, int) else None
    reason = os.strerror(code) if code is not None else (str(exc) or type(exc).__name__)
    advice = ADVICE.get(code, "check that the folder is writable and its disk healthy, then rerun the same command") if code is not None else \
        "check that the folder is writable and its disk healthy, then rerun the same command"
    return RunDirWriteError(f"cannot write {path}: {reason}; {advice}", path, code)


def symlink_error(path: Path) -> RunDirWriteError:
    """The error for a symbolic link found where edgecam writes (or under the run directory)."""
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return RunDirWriteError(f"cannot write {path}: it is a symbolic link (to {target}); {ADVICE[errno.ELOOP]}", path, errno.ELOOP)


def check_no_links(final: Path, root: Path | None = None) -> None:
    """Refuse (RunDirWriteError) a symbolic link at `final` or at any folder between `root` (itself not
    checked: a run directory may be reached through a link the user made) and `final`. Missing parts are
    fine: they are created as real folders."""
    root = Path(root) if root is not None else final.parent
    try:
        rel = final.relative_to(root)
    except ValueError:
        rel = Path(final.name)
        root = final.parent
    path = root
    for part in rel.parts:
        path = path / part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise write_error(path, exc) from None
        if stat.S_ISLNK(st.st_mode):
            raise symlink_error(path)


def make_dirs(directory: Path, root: Path | None = None) -> None:
    """`directory` and its missing parents, refusing links below `root` (default: its parent)."""
    check_no_links(directory, root if root is not None else directory.parent)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(directory, exc) from None


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `final`; when the block ends, make it durable and rename it over
    `final`. Any OSError (in the block: the writer's own, e.g. pyarrow's "Error writing bytes") becomes
    RunDirWriteError naming `final`; on any failure the temporary file is removed. `root`: the run
    directory, below which no link is allowed on the way to `final` (default: `final`'s folder)."""
    final = Path(final)
    base = Path(root) if root is not None else final.parent
    make_dirs(final.parent, base)
    check_no_links(final, base)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=TEMP_SUFFIX, dir=final.parent)  # O_EXCL: never an existing file or link
        os.close(fd)
    except OSError as exc:
        raise write_error(final, exc) from None
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would hide the file from the run directory's other readers
        with open(tmp, "rb+") as f:  # durable before it becomes visible
            os.fsync(f.fileno())
        check_no_links(final, base)  # again: a link planted while the file was written is not followed by the rename either, but is refused
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, RunDirWriteError):
            raise write_error(final, exc) from exc
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes, root: str | os.PathLike[str] | None = None) -> None:
    """`data` to `path`, atomically (`atomic_path`)."""
    with atomic_path(path, root) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike[str], obj: Any, root: str | os.PathLike[str] | None = None) -> None:
    """`obj` as indented, key-sorted JSON to `path`, atomically (the form `cache.atomic_write_json` writes)."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode(), root)


def open_nofollow(path: Path, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    """A file descriptor of the regular file `path`, opened without following a link at its last component
    (O_NOFOLLOW) and refused when it is a link, a FIFO, a device or a folder."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP or os.path.islink(path):
            raise symlink_error(path) from None
        raise write_error(path, exc) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RunDirWriteError(f"cannot use {path}: not a regular file; move it away or pass another --out", path)
    os.set_blocking(fd, True)
    return fd


def links_under(root: Path, skip: tuple[str, ...] = ()) -> list[Path]:
    """Every symbolic link inside `root` (not following any; `skip`: top-level names whose content is not
    looked into, e.g. a device's scratch folder, though a link in their place is still listed)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for name in (*dirnames, *filenames):
            if os.path.islink(here / name):
                found.append(here / name)
        if here == root:
            dirnames[:] = [d for d in dirnames if d not in skip]
    return sorted(found)


def remove_temp_files(root: Path, patterns: tuple[str, ...] = (f".*{TEMP_SUFFIX}",)) -> int:
    """Remove what a killed writer left (`.NAME.XXXX.tmp` files, `.NAME.XXXX.part` folders; never a link)
    matching `patterns` under `root`; returns how many. Call it only while holding the run's lock."""
    import shutil

    n = 0
    for pattern in patterns:
        for p in root.glob(pattern):
            if p.is_symlink():
                continue
            with contextlib.suppress(OSError):
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                n += 1
    return n
