"""The low-bit studies' one device path (`bench/studies/lowbit_device.py`): a 4-bit PACT model exported as ONNX
INT4 / UINT4 QDQ runs on the device, and a device that fails on it is recorded, not raised."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edgecam.bench.studies.lowbit_device import int4_on_device, onnx_device_job
from edgecam.config import RunConfig, RuntimeSpec
from edgecam.devices.errors import DeviceError
from edgecam.devices.inventory import LOCAL
from edgecam.devices.local import LocalDevice


class _BrokenBoard(LocalDevice):
    """A board whose transport fails on every push (a lost connection, a full disk)."""

    def push(self, local: Path, remote: str) -> None:
        raise DeviceError(f"{self.name}: connection lost while pushing {local.name}")


@pytest.fixture(scope="module")
def int4_model(data: Any) -> Any:
    import torch

    from edgecam.exporters.quantize.pact import PactSpec, pact_finetune
    from edgecam.models import build_model

    torch.manual_seed(0)
    model, layer = build_model("tinycnn", data.n_classes)
    return pact_finetune(model.eval(), PactSpec.scheme("int4", epochs=1, lr=5e-4, samples=256, seed=0), data.train_x, data.train_y), layer


def _ctx(device: Any, out: Path, cfg: RunConfig, logged: list[str]) -> Any:
    return SimpleNamespace(cfg=cfg, dspec=LOCAL, device=device, out_dir=out, log=logged.append)


def test_the_int4_graph_runs_on_the_device_and_agrees_with_the_host_simulation(int4_model: Any, data: Any, tmp_path: Path) -> None:
    result, layer = int4_model
    logged: list[str] = []
    ctx = _ctx(LocalDevice(workdir=str(tmp_path / "board"), name="board"), tmp_path, RunConfig(), logged)
    x = data.test_x[:64]
    row = int4_on_device(ctx, result, data, "tinycnn", layer, tmp_path / "int4", x, "test")
    assert row["ort_status"] == "ran on board (ONNX INT4 / UINT4 QDQ)"
    assert 0.0 <= row["ort_accuracy"] <= 1.0
    assert row["ort_top1_agreement"] >= 0.9  # the same 4-bit grid on the device as in the host simulation
    assert logged == []


def test_a_device_failure_is_recorded_and_the_study_goes_on(int4_model: Any, data: Any, tmp_path: Path) -> None:
    result, layer = int4_model
    logged: list[str] = []
    ctx = _ctx(_BrokenBoard(workdir=str(tmp_path / "board"), name="flaky"), tmp_path, RunConfig(), logged)
    row = int4_on_device(ctx, result, data, "tinycnn", layer, tmp_path / "int4", data.test_x[:8], "low-bit tinycnn")
    assert row["ort_status"].startswith("failed on flaky: DeviceError: flaky: connection lost")
    assert "ort_accuracy" not in row  # no figure for what did not run
    assert len(logged) == 1 and "low-bit tinycnn int4 on flaky failed" in logged[0]


def test_the_onnx_runtime_settings_are_used_whatever_the_order_of_runtimes() -> None:
    cfg = RunConfig(runtimes=(RuntimeSpec("litert", threads=1), RuntimeSpec("onnxruntime", threads=3)))
    job = onnx_device_job(SimpleNamespace(cfg=cfg, dspec=LOCAL))
    assert job["runtime"] == "onnxruntime" and job["runtime_options"]["threads"] == 3
    only_litert = RunConfig(runtimes=(RuntimeSpec("litert", threads=2),))
    assert onnx_device_job(SimpleNamespace(cfg=only_litert, dspec=LOCAL))["runtime"] == "onnxruntime"  # the 4-bit graph is ONNX
