"""The errors every device raises (their own module, so that the host's session code and the devices share
them without importing each other)."""

from __future__ import annotations

from edgecam.errors import EdgecamError


class DeviceError(EdgecamError):
    """The device cannot be reached or used (connection, authentication, host key, missing tool)."""


class JobFailed(EdgecamError):
    """The agent ran but the job failed on the device (runtime crash, bad artifact, ...)."""


class DeviceTimeout(JobFailed, DeviceError):
    """A command on the device ran past its timeout (a hung runtime, a stuck device). Every device raises this
    one type for it, a JobFailed and a DeviceError, so a sweep records the job as failed and goes on."""
