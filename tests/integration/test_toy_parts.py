"""The extension recipes of docs/architecture.md, proven: a device-forward CAM method, a runtime and a device
type, with one option each, each written in one file (tests/toys/) from outside the edgecam package and added with one
registration line, run through a tiny sweep on this machine. Nothing else in edgecam is touched: the config
validates the runtime's option through the runtime, the work estimate asks the method, the device agent is
shipped the runtime's module and told its entry, and the latency table takes the runtime's own column."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from edgecam.bench import outputs as files
from edgecam.config import BenchSpec, RuntimeSpec, config_from_dict
from edgecam.devices.spec import DEVICES, DeviceSpec
from edgecam.errors import ConfigError
from edgecam.explain.cams import CAM_METHODS
from edgecam.runtimes import RUNTIMES


@pytest.fixture()
def toys() -> Iterator[None]:
    """The three registration lines, undone afterwards."""
    from toys import toy_device
    from toys.occlusion_cam import OcclusionCam

    CAM_METHODS.add("occlusion", OcclusionCam)
    RUNTIMES.add_lazy("scaled", "toys.scaled_runtime:ScaledRuntime")
    DEVICES.add_lazy("toy", "toys.toy_device:ToyDevice")
    toy_device.CALLS.clear()
    try:
        yield
    finally:
        CAM_METHODS.remove("occlusion"), RUNTIMES.remove("scaled"), DEVICES.remove("toy")


def test_a_toy_method_runtime_and_device_run_through_a_sweep(toys: None, trained_tinycnn: Any, tmp_path: Path) -> None:
    """On the session's trained tinycnn and its cached fp32 / int8 artifacts (so only the toy parts' work is new)."""
    from toys import toy_device

    from edgecam.bench.estimate import method_work
    from edgecam.bench.sweep import run
    from edgecam.devices.archive import agent_archive_bytes

    with pytest.raises(ConfigError, match=r"runtimes.temperature: expected a positive number, got -1"):  # the runtime validates its option
        RuntimeSpec("scaled", settings={"temperature": -1})
    with pytest.raises(ConfigError, match=r"devices.box.label: expected a non-empty string"):  # the device validates its setting
        DeviceSpec("box", url="toy", settings={"label": ""})
    with pytest.raises(ConfigError, match=r"explain.occlusion_grid: expected an integer from 1 to 64, got 0"):  # the method validates its option
        config_from_dict({"explain": {"methods": ["occlusion"], "occlusion_grid": 0}})
    explain = config_from_dict({"explain": {"methods": ["gradcampp", "occlusion"], "occlusion_grid": 3, "faithfulness": False}}).explain
    assert method_work("occlusion", explain, 5, (3, 28, 28), (16, 7, 7))[0] == 5 * 10  # the method states its cost: 3 x 3 cells + 1

    cfg = trained_tinycnn.cfg
    cfg = cfg.replace(export=dataclasses.replace(cfg.export, precisions=("fp32", "int8")), bench=BenchSpec(warmup=1, iterations=3, memory=False),
                      runtimes=(RuntimeSpec("onnxruntime", threads=1), RuntimeSpec("scaled", threads=1, settings={"temperature": 2.0})), explain=explain)
    run(cfg, tmp_path / "run", limit=8, device_spec=DeviceSpec("toybox", url="toy", settings={"label": "box"}), log=lambda m: None)

    bench = files.read_table(tmp_path / "run", files.BENCH).set_index(["runtime", "precision"])
    assert bench["ok"].all() and len(bench) == 4
    assert bench.loc[("scaled", "fp32"), "temperature"] == 2.0 and np.isnan(bench.loc[("onnxruntime", "fp32"), "temperature"])  # its own column
    for p in ("fp32", "int8"):  # logits / 2 keep every argmax
        assert bench.loc[("scaled", p), "accuracy"] == bench.loc[("onnxruntime", p), "accuracy"]
    rows = files.read_table(tmp_path / "run", files.RESULTS)
    occ = rows[rows["cam_method"] == "occlusion"]
    assert len(occ) == 4 * 8 and sorted(set(occ["runtime"])) == ["onnxruntime", "scaled"]
    assert np.isfinite(occ["cc_fp32"]).mean() > 0.5  # maps that are not constant compare with fp32's
    assert "box session scaled" in toy_device.CALLS and "box run" in toy_device.CALLS  # the toy device carried the jobs, with its setting
    with zipfile.ZipFile(__import__("io").BytesIO(agent_archive_bytes())) as zf:
        assert {"toys/__init__.py", "toys/scaled_runtime.py"} <= set(zf.namelist())  # shipped to the device
    manifest = json.loads((tmp_path / "run" / files.MANIFEST).read_text())
    assert manifest["config"]["runtimes"][1]["temperature"] == 2.0 and manifest["config"]["explain"]["occlusion_grid"] == 3
