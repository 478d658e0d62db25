"""Stage timing by explicit tags: exclusive time, nested stages charged once, tags add up to the wall time."""

from __future__ import annotations

import threading
import time

import pytest

from edgecam.stages import StageClock, clock, stage


def test_nested_stages_are_charged_exclusively() -> None:
    c = StageClock()
    t0 = time.perf_counter()
    with c.stage("cam"):
        time.sleep(0.05)
        with c.stage("device"):  # a Score-CAM calling the device: the device's time is not the CAM's
            time.sleep(0.1)
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    s = c.snapshot()
    assert s["device"] == pytest.approx(0.1, abs=0.03)
    assert s["cam"] == pytest.approx(0.1, abs=0.03)
    assert s["cam"] + s["device"] == pytest.approx(wall, abs=1e-3)


def test_a_stage_that_raises_is_still_charged_and_closed() -> None:
    c = StageClock()
    with pytest.raises(RuntimeError):
        with c.stage("metrics"):
            time.sleep(0.02)
            raise RuntimeError("boom")
    with c.stage("io"):
        pass
    assert c.snapshot()["metrics"] >= 0.02 and "io" in c.snapshot() and c._stack == []


def test_each_thread_has_its_own_clock() -> None:
    seen: list[StageClock] = []
    th = threading.Thread(target=lambda: seen.append(clock()))
    th.start()
    th.join()
    assert seen[0] is not clock()
    before = clock().snapshot().get("setup", 0.0)
    with stage("setup"):
        time.sleep(0.01)
    assert clock().snapshot()["setup"] - before >= 0.01
