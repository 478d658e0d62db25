"""The ONNX-graph simulator (QAT's engine) reproduces ONNX Runtime on fp32 graphs of the papers' architectures
and on QDQ graphs; unsupported ops are named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgecam.errors import ArtifactError
from edgecam.exporters.base import ModelInfo
from edgecam.exporters.onnx import export_fp32
from edgecam.exporters.quantize.graph import OnnxGraphModule
from edgecam.models import build_model


def _ort(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, {"input": x})))


@pytest.mark.parametrize("name", ["squeezenet1_0", "efficientnet_b0", "resnet50", pytest.param("densenet121", marks=pytest.mark.slow)])
def test_fp32_graph_matches_onnxruntime(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, layer = build_model(name, 10)
    info = ModelInfo(name, 10, layer, (3, 64, 64), (0.5,) * 3, (0.25,) * 3, "x")
    path = tmp_path / "m.onnx"
    export_fp32(model, info, path)
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    ref = _ort(path, x)
    sim = OnnxGraphModule(onnx.load(str(path)), name=name).eval()
    with torch.no_grad():
        out = sim(torch.from_numpy(x))
    for k in ("logits", "features"):
        scale = max(1.0, float(np.abs(ref[k]).max()))
        assert np.abs(out[k].numpy() - ref[k]).max() <= 1e-4 * scale, k


def test_unsupported_op_is_named() -> None:
    x = onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 4])
    y = onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 4])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Erf", ["input"], ["logits"], name="erf0")], "g", [x], [y])
    sim = OnnxGraphModule(onnx.helper.make_model(graph), name="weird-model")
    with pytest.raises(ArtifactError, match="weird-model.*'Erf'.*erf0.*supported ops: .*Conv"):
        sim(torch.zeros(1, 4))
