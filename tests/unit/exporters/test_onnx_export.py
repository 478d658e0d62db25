"""ONNX exporter: round trips against PyTorch and the QAT simulator, integer storage, sizes, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import ort_outputs
from onnx import numpy_helper

from edgecam.errors import ArtifactError
from edgecam.exporters.base import Artifact, CalibData, ExportSpec, ModelInfo
from edgecam.exporters.onnx import OnnxExporter, integer_weight_dtypes
from edgecam.exporters.quantize.qat import load_graph_module
from edgecam.models import build_model


def test_tinycnn_fp32_accuracy_meets_target(trained_tinycnn) -> None:
    # issue acceptance: tinycnn fp32 test accuracy on digits-clutter >= 95%
    assert trained_tinycnn.meta["host_fp32_accuracy"] >= 0.95


def test_fp32_onnx_matches_pytorch(trained_tinycnn) -> None:
    x = trained_tinycnn.data.test_x[:64]
    out = ort_outputs(trained_tinycnn.artifacts["fp32"], x)
    feats: list[torch.Tensor] = []
    h = trained_tinycnn.model.get_submodule(trained_tinycnn.layer).register_forward_hook(lambda m, i, o: feats.append(o))
    with torch.no_grad():
        ref = trained_tinycnn.model(torch.from_numpy(x)).numpy()
    h.remove()
    assert set(out) == {"logits", "features"}
    assert np.abs(out["logits"] - ref).max() < OnnxExporter.atol_fp32
    assert np.abs(out["features"] - feats[0].numpy()).max() < OnnxExporter.atol_fp32


@pytest.mark.parametrize("precision", ["int8", "int16"])
def test_quantized_onnx_matches_qat_model(trained_tinycnn, precision: str) -> None:
    """ORT on the QDQ artifact vs the QAT fake-quant model in PyTorch, on the whole test split."""
    art = Artifact.load(trained_tinycnn.artifacts[precision])
    x = trained_tinycnn.data.test_x
    ort = ort_outputs(art.directory, x)["logits"]
    sim, _ = load_graph_module(art.path)
    with torch.no_grad():
        qat = sim.eval()(torch.from_numpy(x))["logits"].numpy()
    agreement = float((ort.argmax(1) == qat.argmax(1)).mean())
    corr = float(np.corrcoef(ort.ravel(), qat.ravel())[0, 1])
    assert agreement >= 0.98, agreement
    assert corr >= 0.99, corr


@pytest.mark.parametrize("precision", ["int8", "int16"])
def test_quantized_accuracy_within_two_points_of_fp32(trained_tinycnn, precision: str) -> None:
    y = trained_tinycnn.data.test_y
    acc = {p: float((ort_outputs(trained_tinycnn.artifacts[p], trained_tinycnn.data.test_x)["logits"].argmax(1) == y).mean()) for p in ("fp32", precision)}
    assert acc[precision] >= acc["fp32"] - 0.02, acc


@pytest.mark.parametrize("precision,dtype", [("int8", "INT8"), ("int16", "INT16")])
def test_quantized_artifact_stores_integer_weights(trained_tinycnn, precision: str, dtype: str) -> None:
    art = Artifact.load(trained_tinycnn.artifacts[precision])
    weights = integer_weight_dtypes(art.path)
    conv_weights = {k: v for k, v in weights.items() if k.endswith("weight_quantized")}
    assert len(conv_weights) == 5  # four convs + the linear head
    assert set(conv_weights.values()) == {dtype}
    model = onnx.load(str(art.path))
    act_types = {onnx.TensorProto.DataType.Name(i.data_type) for i in model.graph.initializer if i.name.endswith("_zero_point") and "weight" not in i.name and "bias" not in i.name}
    assert act_types == {dtype}, act_types  # activations quantized to the same integer type
    biases = {k: v for k, v in weights.items() if k.endswith("bias_quantized")}
    assert len(biases) == 5 and set(biases.values()) == {"INT32"}  # ORT's int32 biases (scale = s_in x s_w)
    assert art.manifest["precision_effective"] == precision


def test_qat_scales_are_the_learned_ones(trained_tinycnn) -> None:
    """The artifact's activation scales differ from a fresh calibration: they come from QAT, written back."""
    art = Artifact.load(trained_tinycnn.artifacts["int8"])
    assert art.manifest["quantization"]["method"] == "qat"
    assert art.manifest["quantization"]["qat_steps"] > 0
    sim, model = load_graph_module(art.path)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for name in sim.act_scales:  # simulator reads exactly what is stored
        np.testing.assert_allclose(sim.scale(name), inits[name], rtol=1e-6)
    ptq_dir = trained_tinycnn.artifacts["int8"].parent / "ptq-int8"
    info = ModelInfo("tinycnn", 10, trained_tinycnn.layer, (3, 64, 64), (0.5,) * 3, (0.25,) * 3, "x")
    data = trained_tinycnn.data
    ptq = OnnxExporter().export(trained_tinycnn.model, info, ExportSpec(precision="int8", quant="ptq"), ptq_dir, CalibData(data.train_x, data.train_y))
    ptq_inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(ptq.path)).graph.initializer}
    changed = [n for n in sim.act_scales if not np.allclose(ptq_inits[n], inits[n])]
    assert len(changed) >= len(sim.act_scales) // 2, f"only {len(changed)} of {len(sim.act_scales)} scales moved during QAT"


def test_mobilenet_v2_int8_is_under_35_percent_of_fp32(tmp_path: Path) -> None:
    model, layer = build_model("mobilenet_v2", 10)
    info = ModelInfo("mobilenet_v2", 10, layer, (3, 64, 64), (0.5,) * 3, (0.25,) * 3, "untrained")
    rng = np.random.default_rng(0)
    calib = CalibData(rng.normal(size=(16, 3, 64, 64)).astype(np.float32), rng.integers(0, 10, 16))
    exporter = OnnxExporter()
    fp32 = exporter.export(model, info, ExportSpec("fp32"), tmp_path / "fp32", calib)
    int8 = exporter.export(model, info, ExportSpec("int8", quant="ptq"), tmp_path / "int8", calib)
    assert set(integer_weight_dtypes(int8.path).values()) == {"INT8"}
    ratio = int8.manifest["size_bytes"] / fp32.manifest["size_bytes"]
    assert ratio < 0.35, ratio


def test_failed_export_leaves_nothing_behind(tmp_path: Path) -> None:
    model, layer = build_model("tinycnn", 10)
    info = ModelInfo("tinycnn", 10, layer, (3, 64, 64), (0.5,) * 3, (0.25,) * 3, "x")
    out = tmp_path / "art"
    with pytest.raises(ArtifactError, match="calibration data"):
        OnnxExporter().export(model, info, ExportSpec("int8"), out, calib=None)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging directory either


def test_unexportable_model_names_the_model(tmp_path: Path) -> None:
    class Bad(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.conv(x)
            return torch.linalg.svdvals(f.flatten(2)).float()  # no ONNX lowering

    info = ModelInfo("badnet", 4, "conv", (3, 16, 16), (0.5,) * 3, (0.25,) * 3, "x")
    with pytest.raises(ArtifactError, match="badnet"):
        OnnxExporter().export(Bad().eval(), info, ExportSpec("fp32"), tmp_path / "bad")
    assert list(tmp_path.iterdir()) == []


def test_artifact_load_detects_corruption(trained_tinycnn, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained_tinycnn.artifacts["fp32"], copy)
    model_file = copy / "model.onnx"
    model_file.write_bytes(model_file.read_bytes()[:-100])
    with pytest.raises(ArtifactError, match="sha256"):
        Artifact.load(copy)
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="manifest.json"):
        Artifact.load(copy)
    with pytest.raises(ArtifactError, match="not found"):
        Artifact.load(tmp_path / "missing")


def test_manifest_fields(trained_tinycnn) -> None:
    m = Artifact.load(trained_tinycnn.artifacts["int16"]).manifest
    for key in ("format", "precision_requested", "precision_effective", "opset", "input", "target_layer", "outputs", "sha256", "source_checkpoint_sha256"):
        assert key in m, key
    assert m["opset"] >= 21
    assert m["outputs"] == ["logits", "features"]
    assert m["input"]["normalisation"] == {"mean": [0.5] * 3, "std": [0.25] * 3}
    assert m["source_checkpoint_sha256"] == trained_tinycnn.meta["sha256"]


def test_int32_bias_scale_is_input_times_weight_scale(trained_tinycnn) -> None:
    """After QAT moved the scales, each bias is re-quantized with the new s_in x s_w (QLinearConv assumes it)."""
    art = Artifact.load(trained_tinycnn.artifacts["int8"])
    model = onnx.load(str(art.path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    checked = 0
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            x_dq, w_dq, b_dq = (producer[n] for n in node.input[:3])
            np.testing.assert_allclose(inits[b_dq.input[1]], inits[x_dq.input[1]] * inits[w_dq.input[1]], rtol=1e-6)
            assert np.abs(inits[b_dq.input[0]]).max() < 2**31 - 1  # no saturated bias
            checked += 1
    assert checked == 5
