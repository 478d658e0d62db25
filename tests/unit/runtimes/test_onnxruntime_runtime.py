"""The ONNX Runtime adapter on a tiny real graph: outputs, threads, graph optimisation levels, providers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_artifacts import expected, tiny_onnx

from edgecam.runtimes.onnxruntime import OnnxRuntime

pytest.importorskip("onnxruntime")

X = np.array([[0.5, -1.0, 2.0, -3.0], [1.0, 1.0, -0.5, 0.0], [4.0, -4.0, 0.0, 1.5]], dtype=np.float32)


def test_runs_the_graph_and_names_outputs_as_the_graph_does(tmp_path: Path) -> None:
    path = tiny_onnx(tmp_path)
    with OnnxRuntime(str(path), threads=1) as rt:
        out = rt.run({"input": X})
        d = rt.describe()
    assert sorted(out) == ["features", "logits"]
    for key, ref in expected(X).items():
        np.testing.assert_array_equal(out[key], ref)
    assert d["runtime"] == "onnxruntime" and d["threads"] == 1 and d["providers"] == ["CPUExecutionProvider"]
    assert "session" not in rt.__dict__  # closed by the context manager
    rt.close()  # idempotent


def test_feeds_under_another_name_go_to_the_only_input(tmp_path: Path) -> None:
    with OnnxRuntime(str(tiny_onnx(tmp_path))) as rt:
        np.testing.assert_array_equal(rt.run({"x": X[:1]})["logits"], expected(X[:1])["logits"])


@pytest.mark.parametrize("level", ["disable", "basic", "extended", "all"])
def test_every_graph_optimization_level_gives_the_same_answer(tmp_path: Path, level: str) -> None:
    with OnnxRuntime(str(tiny_onnx(tmp_path)), graph_optimization=level) as rt:
        np.testing.assert_array_equal(rt.run({"input": X})["features"], expected(X)["features"])


def test_the_artifacts_own_graph_optimization_applies_and_bad_values_are_refused(tmp_path: Path) -> None:
    path = tiny_onnx(tmp_path, runtime_options={"graph_optimization": "fastest"})
    with pytest.raises(ValueError, match=r"graph_optimization: expected one of disable, basic, extended, all, got 'fastest'"):
        OnnxRuntime(str(path))
    with OnnxRuntime(str(path), graph_optimization="basic") as rt:  # the job's option wins
        assert rt.run({"input": X})["logits"].shape == (3, 4)


def test_unavailable_provider_is_refused_with_the_available_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"providers \['NoSuchExecutionProvider'\] are not available here; available: .*CPUExecutionProvider"):
        OnnxRuntime(str(tiny_onnx(tmp_path)), providers=["NoSuchExecutionProvider"])
