"""Quantized node groups of a QDQ artifact and the surgery that leaves some in float (`quantize/groups.py`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
import torch

from edgecam.errors import ArtifactError
from edgecam.exporters.quantize.graph import OnnxGraphModule
from edgecam.exporters.quantize.groups import folded_activations, qdq_groups, with_float


def _ort(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, {"input": x})))


@pytest.fixture(scope="module")
def models(trained_tinycnn: Any) -> tuple[onnx.ModelProto, onnx.ModelProto, np.ndarray]:
    arts = trained_tinycnn.artifacts
    return onnx.load(str(arts["int8"] / "model.onnx")), onnx.load(str(arts["fp32"] / "model.onnx")), trained_tinycnn.data.test_shard(0, 16).x


def test_every_qdq_node_is_in_exactly_one_group(models: Any) -> None:
    qdq, _, _ = models
    groups = qdq_groups(qdq)
    qdq_nodes = [n.name for n in qdq.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    grouped = [n for g in groups for n in g.nodes]
    assert sorted(grouped) == sorted(qdq_nodes)
    assert len({g.name for g in groups}) == len(groups)
    kinds = {g.name: g.kind for g in groups}
    assert kinds["features"] == "activation" and kinds["model.classifier.weight"] == "weight" and kinds["input"] == "activation"
    # ONNX Runtime gives a MaxPool output its input's scale: that lossless re-quantization is part of the ReLU's group
    relu = next(g for g in groups if g.name == "relu")
    assert len(relu.nodes) == 4 and any("max_pool2d" in n for n in relu.nodes)
    assert [g.position for g in groups] == sorted(g.position for g in groups)


def test_all_groups_in_float_is_the_fp32_model(models: Any) -> None:
    qdq, fp32, x = models
    every = with_float(qdq, fp32, [g.name for g in qdq_groups(qdq)])
    onnx.checker.check_model(every)
    assert not [n for n in every.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    got, want = _ort(every, x), _ort(fp32, x)
    for k in ("logits", "features"):
        np.testing.assert_allclose(got[k], want[k], atol=1e-5)
    assert np.abs(_ort(qdq, x)["logits"] - want["logits"]).max() > 1e-3  # the int8 model itself differs


def test_a_folded_relu_is_restored(models: Any) -> None:
    """ONNX Runtime drops the ReLU before a quantized tensor (the Q clips it); leaving that group in float
    must put the ReLU back, or the float tensor would carry negative values."""
    qdq, fp32, x = models
    assert "Relu" not in {n.op_type for n in qdq.graph.node}
    assert {"relu", "features"} <= set(folded_activations(qdq, fp32))
    one = with_float(qdq, fp32, ["features"])
    onnx.checker.check_model(one)
    assert [n.op_type for n in one.graph.node].count("Relu") == 1
    feats = _ort(one, x)["features"]
    assert feats.min() >= 0 and (feats > 0).mean() > 0.05
    assert [o.name for o in one.graph.output] == ["logits", "features"]


@pytest.mark.parametrize("group", ["input", "relu_1", "model.features.2.0.weight", "features", "logits"])
def test_one_group_in_float_runs_alike_in_onnxruntime_and_the_simulator(models: Any, group: str) -> None:
    qdq, fp32, x = models
    one = with_float(qdq, fp32, [group])
    onnx.checker.check_model(one)
    ort_out = _ort(one, x)
    with torch.no_grad():
        sim = OnnxGraphModule(one, name=group).eval()(torch.from_numpy(x))
    step = float(onnx.numpy_helper.to_array(next(i for i in qdq.graph.initializer if i.name == "logits_scale")))
    # integer kernels vs fake-quant: at most a couple of the logits' quantization steps apart
    assert np.abs(sim["logits"].numpy() - ort_out["logits"]).max() <= 3 * step + 1e-6
    qdq_ops = lambda m: sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in m.graph.node)  # noqa: E731
    assert qdq_ops(qdq) - qdq_ops(one) == len(next(g for g in qdq_groups(qdq) if g.name == group).nodes)


def test_unknown_group_is_refused_with_the_list(models: Any) -> None:
    qdq, fp32, _ = models
    with pytest.raises(ArtifactError, match="no quantized group named 'nope'.*features"):
        with_float(qdq, fp32, ["nope"])
