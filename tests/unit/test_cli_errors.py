"""`edgecam.cli.main`'s error handling: a run directory that cannot be written exits 3, a damaged run-directory
file exits 2, each with one line naming the file and no traceback; any other OSError is a bug and propagates."""

from __future__ import annotations

import errno
from typing import Callable

import pytest

import edgecam.cli as cli
from edgecam.safe_io import write_error
from edgecam.errors import DamagedFileError


@pytest.mark.parametrize(("make", "status", "printed"), [
    (lambda: write_error("/r/results.parquet", OSError(errno.ENOSPC, "Error writing bytes to file")), 3,
     "edgecam: error: cannot write /r/results.parquet: No space left on device; the disk is full"),
    (lambda: OSError(errno.EROFS, "Read-only file system", "/cache/model.pt"), 3,
     "edgecam: error: cannot write /cache/model.pt: Read-only file system; the file system is read-only"),
    (lambda: OSError(errno.EDQUOT, "Disk quota exceeded"), 3, "cannot write a file (its name was not reported): Disk quota exceeded"),
    (lambda: DamagedFileError("/r/manifest.json (the run's manifest) is damaged"), 2, "edgecam: error: /r/manifest.json (the run's manifest) is damaged"),
])
def test_main_gives_io_failures_their_exit_status(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], make: Callable[[], BaseException],
                                                  status: int, printed: str) -> None:
    def fail(args: object) -> int:
        raise make()

    monkeypatch.setattr(cli, "cmd_report", fail)
    assert cli.main(["report", "somewhere"]) == status == (cli.EXIT_CANNOT_WRITE if status == 3 else cli.EXIT_BAD_INPUT)
    err = capsys.readouterr().err
    assert printed in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_other_os_errors_are_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(args: object) -> int:
        raise OSError(errno.EBADF, "Bad file descriptor")  # a bug, not a disk that refuses writes

    monkeypatch.setattr(cli, "cmd_report", fail)
    with pytest.raises(OSError, match="Bad file descriptor"):
        cli.main(["report", "somewhere"])
