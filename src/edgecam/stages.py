"""Stage timing by explicit tags: `with stage("metrics"): ...` charges the block's wall time to "metrics".

Time is exclusive: a nested stage's seconds are charged to it and not to the stage around it, so the tags of
a run add up to its wall time and the shares in the performance suite (`benchmarks/pipeline.py`) never
double-count (a Score-CAM calls the device; a faithfulness curve calls it too). The clock is per thread;
tags, not source paths, decide where time goes, so moving code between modules changes no figure.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from typing import Iterator

#: the tags the pipeline uses (any string works; these are the ones the suite reports). A dotted tag ("cam.reference")
#: is a part of its first word's tag: the run's manifest adds it to that tag and lists it in `stage_detail_s`
TAGS = ("setup", "device", "cam", "metrics", "io", "other")


class StageClock:
    """Exclusive seconds per tag on one thread (a stack of open stages)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu_seconds: dict[str, float] = defaultdict(float)  # process CPU in the same intervals (other threads' too)
        self._stack: list[list[float | str]] = []  # [tag, wall start, process CPU start of the current exclusive interval]

    @contextlib.contextmanager
    def stage(self, tag: str) -> Iterator[None]:
        now, cpu = time.perf_counter(), time.process_time()
        if self._stack:  # pause the enclosing stage
            outer = self._stack[-1]
            self.seconds[str(outer[0])] += now - float(outer[1])
            self.cpu_seconds[str(outer[0])] += cpu - float(outer[2])
        self._stack.append([tag, now, cpu])
        try:
            yield
        finally:
            end, cpu_end = time.perf_counter(), time.process_time()
            tag_, start, cpu_start = self._stack.pop()
            self.seconds[str(tag_)] += end - float(start)
            self.cpu_seconds[str(tag_)] += cpu_end - float(cpu_start)
            if self._stack:  # resume the enclosing one
                self._stack[-1][1] = end
                self._stack[-1][2] = cpu_end

    def snapshot(self) -> dict[str, float]:
        return dict(self.seconds)

    def cpu_snapshot(self) -> dict[str, float]:
        """Process CPU seconds per tag, in the tag's own (exclusive) intervals: with threads of its own (ONNX
        Runtime's, the prefetch worker's) running meanwhile, their CPU is charged to the tag too."""
        return dict(self.cpu_seconds)


_local = threading.local()


def clock() -> StageClock:
    """This thread's clock."""
    if not hasattr(_local, "clock"):
        _local.clock = StageClock()
    return _local.clock


def stage(tag: str) -> "contextlib.AbstractContextManager[None]":
    """Charge the enclosed block's exclusive wall time to `tag` on this thread's clock."""
    return clock().stage(tag)
