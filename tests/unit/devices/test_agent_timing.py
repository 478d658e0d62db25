"""The agent's timed loop (`devices/agent.py` run mode): a runtime with a logits-only engine (TensorRT's
`times_logits_apart`) is timed on `run_timed` for the latency columns and on `run` apart; any other runtime
is timed on `run` alone. The runtime here is a stand-in that counts calls, so the test checks which forward
each figure comes from without a GPU."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest

from edgecam.bench.measure import check_timing
from edgecam.bench.results import backend_columns
from edgecam.devices import agent
from edgecam.runtimes.base import Runtime


class Counting(Runtime):
    """`run` sleeps 4 ms (the logits + features engine), `run_timed` 1 ms (the logits-only one)."""

    name = "counting"
    format = "onnx"

    def _load(self) -> None:
        self.calls = {"run": 0, "run_timed": 0}

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        self.calls["run"] += 1
        time.sleep(0.004)
        x = next(iter(feeds.values()))
        return {"logits": np.zeros((len(x), 3), np.float32), "features": np.zeros((len(x), 2, 2, 2), np.float32)}

    def run_timed(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        self.calls["run_timed"] += 1
        time.sleep(0.001)
        return {"logits": np.zeros((1, 3), np.float32)}

    def profile(self) -> Dict[str, Any]:
        return {"trtexec": {"times": {"compute_p50_ms": 0.5}}}


@pytest.mark.parametrize("apart", [True, False])
def test_the_logits_only_engine_is_timed_and_the_full_one_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, apart: bool) -> None:
    rt = Counting(str(tmp_path / "model.onnx"))
    monkeypatch.setattr(Counting, "times_logits_apart", apart)
    monkeypatch.setattr(agent, "load_runtime", lambda job: rt)
    (tmp_path / "job.json").write_text(json.dumps({"mode": "run", "warmup": 2, "iterations": 10, "batch_size": 1}))
    np.save(tmp_path / "inputs.npy", np.zeros((3, 1, 4, 4), np.float32))
    result = agent.run_job(str(tmp_path))
    check_timing(result, 10)
    if apart:
        assert rt.calls == {"run_timed": 2 + 10, "run": 1 + 2 + 10 + 1}  # first + warm-up + timed apart + outputs
        assert np.median(result["samples_with_features_s"]) > 2 * np.median(result["samples_s"])  # 4 ms vs 1 ms forwards
        cols = backend_columns(result)
        assert cols["p50_with_features_ms"] > 3.5 and cols["trt_compute_p50_ms"] == 0.5
    else:
        assert rt.calls["run_timed"] == 0 and "samples_with_features_s" not in result
        assert np.median(result["samples_s"]) > 0.0035  # the timed forward was `run` (4 ms), not `run_timed` (1 ms)
    assert np.load(tmp_path / "outputs.npz")["features"].shape == (3, 2, 2, 2)  # outputs always come from `run`


def test_a_malformed_apart_timing_fails_the_job() -> None:
    from edgecam.devices.errors import JobFailed

    with pytest.raises(JobFailed, match="logits \\+ features samples"):
        check_timing({"samples_s": [0.1] * 3, "samples_with_features_s": [0.1, "x", 0.1]}, 3)


def test_backend_columns_keep_only_finite_numbers() -> None:
    hostile = {"runtime": {"gpu_mem_mb": "9"}, "tegrastats": {"ram_used_mb": {"max": float("inf")}, "gpu_load_pct": {"mean": 41.5}},
               "profile": {"trtexec": {"times": {"h2d_p50_ms": 0.02}}}}
    assert backend_columns(hostile) == {"tegra_gpu_load_mean_pct": 41.5, "trt_h2d_p50_ms": 0.02}
    for shapes in ({"profile": [1]}, {"profile": "x"}, {"profile": {"trtexec": 3}}, {"tegrastats": {"ram_used_mb": 5}}, {"tegrastats": []}, {"runtime": None}):
        assert backend_columns(shapes) == {}, shapes
    assert backend_columns({}) == {}


def test_backend_columns_come_from_the_variants_runtime() -> None:
    """A runtime declares the columns only it measures (Runtime.backend_columns): an ONNX Runtime variant's row
    has none of TensorRT's even when its result carries a trtexec-shaped profile; the board's tegrastats stay."""
    result = {"runtime": {"gpu_mem_mb": 12.5}, "tegrastats": {"gpu_load_pct": {"mean": 41.5}}, "profile": {"trtexec": {"times": {"h2d_p50_ms": 0.02}}}}
    assert backend_columns(result, "onnxruntime") == {"tegra_gpu_load_mean_pct": 41.5}
    assert backend_columns(result, "tensorrt") == {"trt_h2d_p50_ms": 0.02, "gpu_mem_mb": 12.5, "tegra_gpu_load_mean_pct": 41.5}
