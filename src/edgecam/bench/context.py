"""The run context: everything the stages of one run share, built once by `sweep.run` and never mutated
(its `timings` dict is the one record the stages append to)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from edgecam.stages import stage

if TYPE_CHECKING:
    from edgecam.bench.store import JobStore
    from edgecam.config import RunConfig
    from edgecam.data.datasets import Datasets
    from edgecam.devices.base import Device
    from edgecam.devices.inventory import DeviceSpec

Progress = Callable[[str, float], None]


def _no_progress(_desc: str, _frac: float) -> None:
    """A progress callback that shows nothing (library use without a terminal)."""


@dataclass(frozen=True)
class RunContext:
    """Config, data, device, job store, output directory, log and progress of one run."""

    cfg: "RunConfig"
    data: "Datasets"
    dspec: "DeviceSpec"
    device: "Device"
    store: "JobStore"
    out_dir: Path
    n_img: int  # test images the run evaluates (the first n of the test split)
    log: Callable[[str], None] = print
    progress: Any = None  # an object with `.stage(name, total) -> Progress` (the CLI's bars or log lines), or None
    timings: dict[str, float] = field(default_factory=dict)  # manifest "stages_s": what each step took
    cpu_timings: dict[str, float] = field(default_factory=dict)  # manifest "stages_cpu_s": the host process's CPU
    # seconds in each step (every thread of this process; a local device's agent is another process)
    emulated: bool = False  # the device's CPU is emulated (`DeviceSpec.is_emulated`): its latency is labelled so
    device_id: str = ""  # `device_fingerprint`: what every device job's key names the device by
    verbose: bool = False  # the log may say more (`edgecam run --verbose`: the explain stage's work estimate per variant)

    def bar(self, name: str, total: int | None = None) -> Progress:
        """A progress callback `(description, fraction done)` for one stage, which starts now (its elapsed time
        counts from this call, not from its first update); `total`: the images the stage goes through, when known."""
        return self.progress.stage(name, total) if self.progress is not None else _no_progress

    @contextlib.contextmanager
    def step(self, label: str, tag: str) -> Iterator[dict[str, str]]:
        """Time one step into `timings[label]` (the caller may append a suffix such as " (cached)" by setting
        `note["suffix"]`, or name the step once it knows what it did by setting `note["label"]`) and charge it
        to the stage tag `tag` (`edgecam.stages`)."""
        note: dict[str, str] = {"suffix": ""}
        t0, c0 = time.perf_counter(), time.process_time()
        with stage(tag):
            yield note
        name = note.get("label", label) + note["suffix"]
        self.timings[name] = time.perf_counter() - t0
        self.cpu_timings[name] = time.process_time() - c0


def device_fingerprint(spec: "DeviceSpec", info: dict[str, Any]) -> str:
    """The device as job keys see it: inventory name, URL and Python, the probed architecture, Python, numpy and
    runtime versions, and the agent archive's hash. A different board under the same name, an upgraded
    runtime or a new agent makes new jobs instead of resuming into rows the old one produced."""
    import hashlib

    from edgecam.cache import stable_hash
    from edgecam.devices.archive import agent_archive_bytes

    return stable_hash({"name": spec.name, "url": spec.url, "python": spec.python, "arch": info.get("arch"), "python_version": info.get("python"),
                        "numpy": info.get("numpy"), "runtimes": info.get("runtimes"), "agent": hashlib.sha256(agent_archive_bytes()).hexdigest()})
