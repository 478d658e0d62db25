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
