"""Exceptions edgecam raises for bad input, so that callers (and the CLI) can tell them from bugs."""

from __future__ import annotations


class EdgecamError(Exception):
    """Base class: a problem with the user's input or environment, reported without a traceback by the CLI."""


class ConfigError(EdgecamError):
    """An experiment file or spec field is invalid; the message names the file / field and what was expected."""


class ArtifactError(EdgecamError):
    """A model file or artifact is missing, corrupt or does not match its manifest."""


class UnknownNameError(EdgecamError, KeyError):
    """A registry lookup failed; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class RunDirWriteError(EdgecamError, OSError):
    """A file or folder of the run directory could not be written (disk full, quota, read-only, permission,
    immutable, a symbolic link where edgecam writes). The message names the path and what to do; the CLI
    exits with status 3. Also an OSError, so that code recording a failed job on OSError records this too."""

    def __init__(self, message: str, path: object = None, errno: int | None = None) -> None:
        super().__init__(message)
        self.message, self.path = message, path
        self.errno = errno  # the OSError's errno (ENOSPC, EROFS, ...; ELOOP for a symbolic link), None when there was none

    def __str__(self) -> str:  # OSError would print "[Errno ...]" and the arguments' tuple
        return self.message


class DamagedFileError(EdgecamError):
    """A file of a run directory (a table, the manifest, kept outputs) does not parse or lacks what its reader
    needs: truncated, overwritten or edited. The message names the file and what to do (rerun the run)."""
