"""The LiteRT adapter on tiny real .tflite models: batch-1 graphs over larger batches, int8 tensors fed and
read as float32, XNNPACK switch, the interpreter package fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_artifacts import SCALE, ZERO_POINT, expected, tiny_tflite

from edgecam.runtimes.litert import LiteRtRuntime

pytest.importorskip("ai_edge_litert")

X = np.array([[0.5, -1.0, 2.0, -3.0], [1.0, 1.0, -0.5, 0.0], [4.0, -4.0, 0.0, 1.5]], dtype=np.float32)


@pytest.mark.parametrize("xnnpack", [True, False])
def test_fp32_batch_runs_one_sample_at_a_time(tmp_path: Path, xnnpack: bool) -> None:
    with LiteRtRuntime(str(tiny_tflite(tmp_path)), threads=1, xnnpack=xnnpack) as rt:
        assert rt.batch == 1
        out = rt.run({"input": X})
        d = rt.describe()
    for key, ref in expected(X).items():
        np.testing.assert_allclose(out[key], ref, atol=1e-6)
        assert out[key].shape == (3, 4) and out[key].dtype == np.float32
    assert d["runtime"] == "litert" and d["xnnpack"] is xnnpack and d["threads"] == 1
    assert d["interpreter"] == "ai_edge_litert.interpreter" and d["version"].startswith("ai_edge_litert ")
    assert "interp" not in rt.__dict__ and "runner" not in rt.__dict__  # closed


def test_int8_tensors_are_quantised_and_dequantised_with_their_own_parameters(tmp_path: Path) -> None:
    with LiteRtRuntime(str(tiny_tflite(tmp_path, int8=True))) as rt:
        detail = rt.in_details[rt.in_name]
        assert np.dtype(detail["dtype"]) == np.int8 and tuple(detail["quantization"]) == (SCALE, ZERO_POINT)
        out = rt.run({"input": X})  # every value of X and of the results lies on the int8 grid: exact
        for key, ref in expected(X).items():
            np.testing.assert_array_equal(out[key], ref)
        big = rt.run({"input": np.full((1, 4), 100.0, dtype=np.float32)})["features"]
    np.testing.assert_array_equal(big, np.full((1, 4), (127 - ZERO_POINT) * SCALE))  # clipped to int8's top


def test_output_names_come_from_the_manifest(tmp_path: Path) -> None:
    path = tiny_tflite(tmp_path, output_names={"logits": "output_1", "features": "output_0"})
    with LiteRtRuntime(str(path)) as rt:
        out = rt.run({"input": X})
    np.testing.assert_allclose(out["logits"], expected(X)["features"], atol=1e-6)  # swapped on purpose


def test_falls_back_to_the_next_interpreter_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LiteRtRuntime, "modules", ("edgecam_no_such_backend", "ai_edge_litert"))
    with LiteRtRuntime(str(tiny_tflite(tmp_path))) as rt:
        assert rt.describe()["interpreter"] == "ai_edge_litert.interpreter"
        np.testing.assert_allclose(rt.run({"input": X})["logits"], expected(X)["logits"], atol=1e-6)
    monkeypatch.setattr(LiteRtRuntime, "modules", ("edgecam_no_such_backend",))
    with pytest.raises(ImportError, match="none of edgecam_no_such_backend is installed"):
        LiteRtRuntime(str(tmp_path / "model.tflite"))
