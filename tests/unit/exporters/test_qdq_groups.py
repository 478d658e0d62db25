"""Quantized node groups of a QDQ artifact and the surgery that leaves some in float (`quantize/groups.py`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
import torch

from edgecam.errors import ArtifactError
from edgecam.exporters.quantize.graph import OnnxGraphModule
from edgecam.exporters.quantize.groups import fallback_precisions, folded_activations, qdq_groups, with_fallback


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
    every = with_fallback(qdq, fp32, [g.name for g in qdq_groups(qdq)])
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
    one = with_fallback(qdq, fp32, ["features"])
    onnx.checker.check_model(one)
    assert [n.op_type for n in one.graph.node].count("Relu") == 1
    feats = _ort(one, x)["features"]
    assert feats.min() >= 0 and (feats > 0).mean() > 0.05
    assert [o.name for o in one.graph.output] == ["logits", "features"]


@pytest.mark.parametrize("group", ["input", "relu_1", "model.features.2.0.weight", "features", "logits"])
def test_one_group_in_float_runs_alike_in_onnxruntime_and_the_simulator(models: Any, group: str) -> None:
    qdq, fp32, x = models
    one = with_fallback(qdq, fp32, [group])
    onnx.checker.check_model(one)
    ort_out = _ort(one, x)
    with torch.no_grad():
        sim = OnnxGraphModule(one, name=group).eval()(torch.from_numpy(x))
    step = float(onnx.numpy_helper.to_array(next(i for i in qdq.graph.initializer if i.name == "logits_scale")))
    # integer kernels vs fake-quant: at most a couple of the logits' quantization steps apart
    assert np.abs(sim["logits"].numpy() - ort_out["logits"]).max() <= 3 * step + 1e-6
    qdq_ops = lambda m: sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in m.graph.node)  # noqa: E731
    where = fallback_precisions(one, [group], qdq)[group]
    removed = len(next(g for g in qdq_groups(qdq) if g.name == group).nodes)
    assert qdq_ops(qdq) - qdq_ops(one) == (0 if where == "int16" else removed)  # an int16 weight keeps its (new) DQ nodes
    # ONNX Runtime runs the fallback as written: its WeightBiasQuantization pass (which would re-quantize a float
    # weight between quantized tensors to 8 bits per tensor) changes nothing
    import onnxruntime as ort

    plain = ort.InferenceSession(one.SerializeToString(), providers=["CPUExecutionProvider"], disabled_optimizers=["WeightBiasQuantization"])
    np.testing.assert_array_equal(plain.run(["logits"], {"input": x})[0], ort_out["logits"])


def test_a_weight_between_quantized_tensors_falls_back_to_int16(models: Any) -> None:
    qdq, fp32, x = models
    name = "model.features.2.0.weight"
    one = with_fallback(qdq, fp32, [name])
    assert fallback_precisions(one, [name], qdq) == {name: "int16"}
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in one.graph.initializer}
    dq = next(n for n in one.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].dtype == np.int16)
    w16, scale = inits[dq.input[0]].astype(np.float64), inits[dq.input[1]].astype(np.float64)
    want = onnx.numpy_helper.to_array(next(i for i in fp32.graph.initializer if i.name == name))
    got = w16 * scale.reshape(-1, *([1] * (w16.ndim - 1)))
    assert np.abs(got - want).max() <= scale.max() / 2 + 1e-12  # 16-bit per-channel rounding, nothing worse
    w8 = next(i for i in qdq.graph.initializer if i.name == f"{name}_quantized")
    s8 = onnx.numpy_helper.to_array(next(i for i in qdq.graph.initializer if i.name == f"{name}_scale"))
    assert onnx.numpy_helper.to_array(w8).dtype == np.int8 and scale.max() < s8.max() / 100  # ~256x finer than the int8 weight
    # both its layer's input and the weight in float (the input group too): no DequantizeLinear before it, so float
    both = with_fallback(qdq, fp32, [name, "relu_1"])
    assert fallback_precisions(both, [name, "relu_1"], qdq) == {name: "float", "relu_1": "float"}


def test_unknown_group_is_refused_with_the_list(models: Any) -> None:
    qdq, fp32, _ = models
    with pytest.raises(ArtifactError, match="no quantized group named 'nope'.*features"):
        with_fallback(qdq, fp32, ["nope"])
