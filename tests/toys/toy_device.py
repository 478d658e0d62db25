"""A device type with one setting in one file: this machine, reached through its own URL scheme (`toy://NAME`),
that logs what it was asked to do under its `label` setting (a real transport implements `run`, `push`, `pull`,
`exists`, `cleanup` and `session` instead of inheriting this machine's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecam.devices.base import RunResult
from edgecam.devices.local import LocalDevice, LocalSession

CALLS: list[str] = []


class ToyDevice(LocalDevice):
    kind = "toy"
    settings_help = {"label": "what the log lines start with"}
    label = "toy"

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> dict[str, Any]:
        label = settings.get("label", "toy")
        if not isinstance(label, str) or not label:
            raise ValueError(f"label: expected a non-empty string, got {label!r}")
        return {"label": label}

    @classmethod
    def from_spec(cls, spec: Any, local_workdir: str | None = None) -> "ToyDevice":
        device = cls(workdir=spec.workdir or local_workdir, python=spec.python, name=spec.name)
        device.label = spec.label
        return device

    def run(self, argv: list[str], timeout: float | None = None) -> RunResult:
        CALLS.append(f"{self.label} run")
        return super().run(argv, timeout)

    def session(self, artifact_dir: str | Path, job: dict[str, Any], timeout: float | None = 600) -> LocalSession:
        CALLS.append(f"{self.label} session {job.get('runtime')}")
        return super().session(artifact_dir, job, timeout)
