"""The errors every device raises (their own module, so that the host's session code and the devices share
them without importing each other)."""

from __future__ import annotations

from edgecam.errors import EdgecamError
from edgecam.textsafe import clean_text


class _DeviceText(EdgecamError):
    """An error whose message may quote the device (its error, traceback, stderr): made safe to print and store
    where the error is made (`clean_text`: control characters shown as escapes, length capped)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(clean_text(a) if isinstance(a, str) else a for a in args))


class DeviceError(_DeviceText):
    """The device cannot be reached or used (connection, authentication, host key, missing tool)."""


class JobFailed(_DeviceText):
    """The agent ran but the job failed on the device (runtime crash, bad artifact, ...)."""


class DeviceTimeout(JobFailed, DeviceError):
    """A command on the device ran past its timeout (a hung runtime, a stuck device). Every device raises this
    one type for it, a JobFailed and a DeviceError, so a sweep records the job as failed and goes on."""
