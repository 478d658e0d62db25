"""The board-side TensorRT runtime on a machine where TensorRT runs (a Jetson, or a GPU machine with TensorRT
and cuda-python): skipped with the reason elsewhere. Not run on the machine this project is built on, which has
no TensorRT (see docs/devices.md, TensorRT).

    .venv/bin/python -m pytest tests/hardware/test_tensorrt_live.py -q -m hardware
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecam.runtimes.tensorrt import available_reason

REASON = available_reason()

pytestmark = [pytest.mark.hardware, pytest.mark.skipif(REASON is not None, reason=f"TensorRT runtime unavailable: {REASON}")]


@pytest.fixture(scope="module")
def trt_artifacts(trained_tinycnn: Any) -> dict[str, Path]:
    from edgecam.bench.deploy import build_artifact
    from edgecam.exporters.tensorrt import TensorRTExporter

    t = trained_tinycnn
    exporter = TensorRTExporter()
    return {p: build_artifact(t.model, t.cfg.models[0], t.layer, t.meta["sha256"], "tensorrt", p, t.cfg, t.data, exporter)[0] for p in ("fp32", "int16", "int8")}


def _run(art_dir: Path, x: np.ndarray, cache: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from edgecam.runtimes.tensorrt import TensorRtRuntime

    with TensorRtRuntime(str(art_dir / "model.onnx"), cache_dir=str(cache)) as rt:
        out = {k: np.concatenate([rt.run({"input": x[i : i + 8]})[k] for i in range(0, len(x), 8)]) for k in ("logits", "features")}
        timed = np.concatenate([rt.run_timed({"input": x[i : i + 8]})["logits"] for i in range(0, len(x), 8)])
        info = rt.describe()
        assert info["timed_engine_outputs"] == ["logits"] and sorted(info["engine_outputs"]) == ["features", "logits"]
        assert info["gpu_mem_mb"] > 0
        # the logits-only engine may fuse across the CAM layer: same predictions, logits within fp tolerance
        assert float(np.mean(timed.argmax(1) == out["logits"].argmax(1))) >= 0.95
        return out, info


def test_engines_match_onnxruntime_and_are_cached(trained_tinycnn: Any, trt_artifacts: dict[str, Path], tmp_path: Path) -> None:
    from conftest import ort_outputs

    x = trained_tinycnn.data.test_shard(0, 32).x
    ref = ort_outputs(trt_artifacts["fp32"], x)
    got, info = _run(trt_artifacts["fp32"], x, tmp_path)
    assert not info["engine_cached"] and list(tmp_path.glob("timing-*.cache"))
    np.testing.assert_allclose(got["logits"], ref["logits"], atol=1e-2 * max(1.0, float(np.abs(ref["logits"]).max())))
    assert got["features"].shape == ref["features"].shape
    again, info2 = _run(trt_artifacts["fp32"], x, tmp_path)
    assert info2["engine_cached"]  # the second load deserializes the cached engine
    np.testing.assert_array_equal(again["logits"], got["logits"])
    assert len(list(tmp_path.glob("*.engine"))) == 2  # logits + features, and logits only
    for p in ("int16", "int8"):
        out, info = _run(trt_artifacts[p], x, tmp_path)
        agree = float(np.mean(out["logits"].argmax(1) == ref["logits"].argmax(1)))
        print(f"TensorRT {p} ({info['gpu']}): top-1 agreement with fp32 {agree:.3f}; layer precisions {info.get('layer_precisions')}")
        assert agree >= 0.9
    assert any("int8" in k.lower() for k in (info.get("layer_precisions") or {})), info  # some layer really ran in INT8
