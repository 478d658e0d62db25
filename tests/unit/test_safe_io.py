"""`safe_io.py`: run-directory writes are atomic, leave no temporary file when they fail, turn a refused
write into RunDirWriteError naming the path and what to do, and never follow a symbolic link."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from edgecam import safe_io
from edgecam.errors import EdgecamError, RunDirWriteError


def _litter(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*") if p.name.endswith((".tmp", ".part")))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM])
def test_a_refused_write_names_the_file_and_leaves_nothing(tmp_path: Path, code: int) -> None:
    """Whatever the writer raises (pyarrow's "Error writing bytes" is an OSError with an errno) becomes
    RunDirWriteError: an EdgecamError for the CLI, an OSError for code that records failed jobs."""
    final = tmp_path / "results.parquet"
    final.write_bytes(b"old")
    with pytest.raises(RunDirWriteError) as info:
        with safe_io.atomic_path(final) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(code, "Error writing bytes to file")
    err = info.value
    assert isinstance(err, EdgecamError) and isinstance(err, OSError) and err.errno == code
    assert str(final) in str(err) and os.strerror(code) in str(err) and safe_io.ADVICE[code] in str(err)
    assert final.read_bytes() == b"old" and _litter(tmp_path) == []  # the old file stands, no temporary file left


def test_writes_are_atomic_and_keep_other_errors(tmp_path: Path) -> None:
    safe_io.write_json(tmp_path / "a" / "m.json", {"x": 1})
    assert (tmp_path / "a" / "m.json").read_text() == '{\n  "x": 1\n}\n'
    with pytest.raises(ValueError, match="boom"):  # not an I/O error: not relabelled, but cleaned up
        with safe_io.atomic_path(tmp_path / "b.csv"):
            raise ValueError("boom")
    assert not (tmp_path / "b.csv").exists() and _litter(tmp_path) == []


def test_links_are_refused_not_followed(tmp_path: Path) -> None:
    """A link at the file or at a folder below the run directory is refused; its target is untouched."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.csv").symlink_to(victim)
    with pytest.raises(RunDirWriteError, match=r"summary.csv: it is a symbolic link \(to .*victim.txt\)") as info:
        safe_io.write_bytes(run / "summary.csv", b"x", run)
    assert info.value.errno == errno.ELOOP
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "outputs").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(RunDirWriteError, match="outputs: it is a symbolic link"):
        safe_io.write_bytes(run / "outputs" / "m" / "0000000.npz", b"x", run)
    assert victim.read_text() == "precious" and list(elsewhere.iterdir()) == []
    assert safe_io.links_under(run) == [run / "outputs", run / "summary.csv"]
    linked_run = tmp_path / "linked-run"  # the run directory itself may be a link the user made
    linked_run.symlink_to(run, target_is_directory=True)
    safe_io.write_bytes(linked_run / "bench.csv", b"ok\n", linked_run)
    assert (run / "bench.csv").read_bytes() == b"ok\n"


def test_open_nofollow_refuses_links_and_special_files(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("keep")
    (tmp_path / "lock-link").symlink_to(target)
    with pytest.raises(RunDirWriteError, match="symbolic link"):
        safe_io.open_nofollow(tmp_path / "lock-link")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(RunDirWriteError, match="not a regular file"):
        safe_io.open_nofollow(tmp_path / "fifo")
    os.close(safe_io.open_nofollow(tmp_path / "lock"))
    assert (tmp_path / "lock").is_file() and target.read_text() == "keep"


def test_remove_temp_files_removes_only_writer_leftovers(tmp_path: Path) -> None:
    (tmp_path / ".results.parquet.abc.tmp").write_bytes(b"half")
    (tmp_path / "keep.tmp").write_bytes(b"not ours: no leading dot")
    (tmp_path / ".elsewhere.tmp").symlink_to(tmp_path / "keep.tmp")
    assert safe_io.remove_temp_files(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".elsewhere.tmp", "keep.tmp"]
