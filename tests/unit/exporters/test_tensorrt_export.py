"""TensorRT's ONNX (`exporters/tensorrt.py`): the rules' lint on the exporter's artifacts and on hand-broken
variants of each rule, and TensorRT-RTX's parser and CPU-only builder on both (marker `tensorrt_parser`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgecam.errors import ArtifactError
from edgecam.exporters.base import Artifact
from edgecam.exporters.tensorrt import TensorRTExporter, lint, rtx_available, rtx_check


@pytest.fixture(scope="module")
def trt_tinycnn(trained_tinycnn: Any) -> dict[str, Artifact]:
    from edgecam.bench.deploy import build_artifact

    t = trained_tinycnn
    exporter = TensorRTExporter()
    return {p: Artifact.load(build_artifact(t.model, t.cfg.models[0], t.layer, t.meta["sha256"], "tensorrt", p, t.cfg, t.data, exporter)[0])
            for p in ("fp32", "int16", "int8")}


def _init(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(i for i in model.graph.initializer if i.name == name)


def _set(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    _init(model, name).CopyFrom(numpy_helper.from_array(value, name))


def _weight_dq(model: onnx.ModelProto) -> onnx.NodeProto:
    inits = {i.name for i in model.graph.initializer}
    return next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits and n.input[0].endswith("weight_quantized"))


def _act_q(model: onnx.ModelProto) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")


def _nonzero_zero_point(m: onnx.ModelProto) -> None:
    q = _act_q(m)
    _set(m, q.input[2], np.array(3, np.int8))


def _per_tensor_weight(m: onnx.ModelProto) -> None:
    dq = _weight_dq(m)
    s = numpy_helper.to_array(_init(m, dq.input[1]))
    _set(m, dq.input[1], np.array(s.max(), np.float32))
    _set(m, dq.input[2], np.array(0, np.int8))
    for a in list(dq.attribute):
        dq.attribute.remove(a)


def _weight_axis_1(m: onnx.ModelProto) -> None:
    dq = _weight_dq(m)
    for a in dq.attribute:
        if a.name == "axis":
            a.i = 1


def _per_channel_activation(m: onnx.ModelProto) -> None:
    q = _act_q(m)
    s = float(numpy_helper.to_array(_init(m, q.input[1])))
    _set(m, q.input[1], np.full(3, s, np.float32))
    _set(m, q.input[2], np.zeros(3, np.int8))
    q.attribute.append(onnx.helper.make_attribute("axis", 1))


def _int32_bias(m: onnx.ModelProto) -> None:
    conv = next(n for n in m.graph.node if n.op_type == "Conv" and len(n.input) > 2)
    b = numpy_helper.to_array(_init(m, conv.input[2])).astype(np.float64)
    m.graph.initializer.extend([numpy_helper.from_array(np.round(b / 1e-4).astype(np.int32), "b_q"), numpy_helper.from_array(np.array(1e-4, np.float32), "b_s")])
    m.graph.node.insert(0, onnx.helper.make_node("DequantizeLinear", ["b_q", "b_s"], ["b_dq"], name="bias_dq"))
    conv.input[2] = "b_dq"


def _unquantized_conv_input(m: onnx.ModelProto) -> None:
    q = _act_q(m)
    dq = next(n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0])
    for n in m.graph.node:
        for i, name in enumerate(n.input):
            if name == dq.output[0]:
                n.input[i] = "input"
    m.graph.node.remove(dq)
    m.graph.node.remove(q)


# one hand-broken variant of the int8 artifact per rule: (id, break it, what the lint says, does TensorRT-RTX
# reject it). TensorRT-RTX 1.7 builds per-tensor weights, per-channel activation scales and a conv read in
# float (it then runs that layer in float): those are the tensorrt format's own rules, the lint's alone.
BROKEN: list[tuple[str, Callable[[onnx.ModelProto], None], str, bool]] = [
    ("nonzero-zero-point", _nonzero_zero_point, "non-zero zero point", True),
    ("per-tensor-weight", _per_tensor_weight, "expected per-channel scales on axis 0", False),
    ("weight-axis-1", _weight_axis_1, "expected per-channel scales on axis 0", True),
    ("per-channel-activation", _per_channel_activation, "activation scales must be per-tensor", False),
    ("int32-bias", _int32_bias, "takes float biases", True),
    ("unquantized-conv-input", _unquantized_conv_input, "its input is not read through a DequantizeLinear", False),
]


def test_the_exporters_artifacts_follow_the_rules(trt_tinycnn: dict[str, Artifact]) -> None:
    for p, art in trt_tinycnn.items():
        model = onnx.load(str(art.path))
        assert lint(model) == [], p
        assert art.manifest["format"] == "tensorrt" and art.manifest["tensorrt_lint"] == "passed"
    assert trt_tinycnn["int16"].manifest["precision_effective"] == "fp16" and trt_tinycnn["int8"].manifest["precision_effective"] == "int8"
    int8 = onnx.load(str(trt_tinycnn["int8"].path))
    types = {i.data_type for i in int8.graph.initializer if i.name.endswith(("_quantized", "_zero_point"))}
    assert types == {onnx.TensorProto.INT8}  # really int8: weights and every zero point
    assert sum(n.op_type == "QuantizeLinear" for n in int8.graph.node) > 3
    fp16 = onnx.load(str(trt_tinycnn["int16"].path))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in fp16.graph.initializer)
    assert [o.type.tensor_type.elem_type for o in fp16.graph.output] == [onnx.TensorProto.FLOAT] * 2  # float32 outputs for the runner


@pytest.mark.parametrize("case", BROKEN, ids=[b[0] for b in BROKEN])
def test_the_lint_rejects_each_broken_rule(trt_tinycnn: dict[str, Artifact], case: Any) -> None:
    _id, breaker, message, _rtx = case
    model = onnx.load(str(trt_tinycnn["int8"].path))
    breaker(model)
    problems = lint(model)
    assert any(message in p for p in problems), problems


def test_the_lint_rejects_onnxruntimes_default_qdq(trained_tinycnn: Any) -> None:
    """The ONNX format's int8 (asymmetric activations, int32 biases) and int16 are not TensorRT's."""
    int8 = lint(onnx.load(str(trained_tinycnn.artifacts["int8"] / "model.onnx")))
    assert any("non-zero zero point" in p for p in int8) and any("takes float biases" in p for p in int8)
    int16 = lint(onnx.load(str(trained_tinycnn.artifacts["int16"] / "model.onnx")))
    assert any("quantized type INT16" in p for p in int16)


@pytest.mark.tensorrt_parser
def test_tensorrt_rtx_parses_and_builds_every_precision(trt_tinycnn: dict[str, Artifact]) -> None:
    assert rtx_available(), "the tensorrt-rtx extra is not installed (`make test` installs it: pip install -e '.[dev,tensorrt-rtx]')"
    for p, art in trt_tinycnn.items():
        check = art.manifest["tensorrt_check"]
        assert check["checked_by"].startswith("TensorRT-RTX") and check["plan_bytes"] > 10_000, p
        assert check["outputs"] == {"logits": "float", "features": "float"}


@pytest.mark.tensorrt_parser
@pytest.mark.parametrize("case", [b for b in BROKEN if b[3]], ids=[b[0] for b in BROKEN if b[3]])
def test_tensorrt_rtx_rejects_what_the_lint_rejects(trt_tinycnn: dict[str, Artifact], case: Any, tmp_path: Path) -> None:
    assert rtx_available(), "the tensorrt-rtx extra is not installed"
    _id, breaker, _message, _rtx = case
    model = onnx.load(str(trt_tinycnn["int8"].path))
    breaker(model)
    path = tmp_path / "broken.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ArtifactError, match="TensorRT-RTX"):
        rtx_check(path)


@pytest.mark.tensorrt_parser
def test_tensorrt_rtx_rejects_onnxruntimes_int16(trained_tinycnn: Any) -> None:
    assert rtx_available(), "the tensorrt-rtx extra is not installed"
    with pytest.raises(ArtifactError, match="parser rejects"):
        rtx_check(trained_tinycnn.artifacts["int16"] / "model.onnx")


def test_an_artifact_that_breaks_the_rules_fails_the_export(trained_tinycnn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The exporter refuses to write an artifact that breaks the rules: here the ONNX format's asymmetric
    activations and int32 biases, forced into the TensorRT exporter's quantize step."""
    import edgecam.exporters.tensorrt as trt_mod
    from edgecam.exporters.base import CalibData, ExportSpec, ModelInfo
    from edgecam.exporters.onnx import quantize_qdq

    def asymmetric(self: Any, fp32_path: Path, out_path: Path, spec: ExportSpec, images: np.ndarray, *_a: Any) -> dict[str, Any]:
        quantize_qdq(fp32_path, out_path, "int8", images)
        return {"method": "ptq"}

    monkeypatch.setattr(trt_mod.TensorRTExporter, "quantize", asymmetric)
    t = trained_tinycnn
    info = ModelInfo("tinycnn", t.data.n_classes, t.layer, t.data.input_shape, t.data.mean, t.data.std, t.meta["sha256"])
    x, y = t.data.calibration_arrays(16, 0)
    with pytest.raises(ArtifactError, match=r"breaks TensorRT's rules: .*quantized type INT32, TensorRT takes int8 only.*\(and \d+ more\)"):
        TensorRTExporter().export(t.model, info, ExportSpec("int8", quant="ptq", calib_samples=16), tmp_path / "bad", CalibData(x, y))
    assert not (tmp_path / "bad").exists()  # nothing left behind


def _graph(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, 4])
    return onnx.helper.make_model(onnx.helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[onnx.helper.make_opsetid("", 21)])


def test_the_lint_reads_every_valid_qdq_form() -> None:
    """Forms ONNX allows and TensorRT takes: a Q without a zero point but `output_dtype = INT8` (opset 21), a
    MatMul of two activations (its second input is no weight), and a float weight behind a per-channel Q."""
    f = numpy_helper.from_array
    scale = f(np.array(0.1, np.float32), "s")
    act = [onnx.helper.make_node("QuantizeLinear", ["x", "s"], ["xq"], name="q", output_dtype=onnx.TensorProto.INT8),
           onnx.helper.make_node("DequantizeLinear", ["xq", "s"], ["xd"], name="dq")]
    square = _graph([*act, onnx.helper.make_node("MatMul", ["xd", "xd"], ["y"], name="mm")], [scale])
    assert lint(square) == []
    w = np.arange(16, dtype=np.float32).reshape(4, 4)
    wq = [f(w, "w"), f(np.full(4, 0.2, np.float32), "ws"), f(np.zeros(4, np.int8), "wz")]
    weight = [onnx.helper.make_node("QuantizeLinear", ["w", "ws", "wz"], ["wq"], name="wq", axis=1),
              onnx.helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], name="wd", axis=1)]
    behind_q = _graph([*act, *weight, onnx.helper.make_node("MatMul", ["xd", "wd"], ["y"], name="mm")], [scale, *wq])
    assert lint(behind_q) == []  # per-channel on axis 1: MatMul's [K, N] output channels
    per_channel_act = _graph([onnx.helper.make_node("QuantizeLinear", ["x", "ws", "wz"], ["xq"], name="q", axis=1),
                              onnx.helper.make_node("DequantizeLinear", ["xq", "ws", "wz"], ["xd"], name="dq", axis=1),
                              onnx.helper.make_node("MatMul", ["xd", "xd"], ["y"], name="mm")], wq[1:])
    assert [p for p in lint(per_channel_act) if "activation scales must be per-tensor" in p] and not [p for p in lint(per_channel_act) if "weight" in p]
    uint8 = _graph([onnx.helper.make_node("QuantizeLinear", ["x", "s"], ["xq"], name="q"), onnx.helper.make_node("DequantizeLinear", ["xq", "s"], ["xd"], name="dq"),
                    onnx.helper.make_node("MatMul", ["xd", "xd"], ["y"], name="mm")], [scale])
    assert any("quantized type UINT8" in p for p in lint(uint8))  # no zero point and no output_dtype: uint8


def test_qat_learned_scales_are_written_into_the_tensorrt_graph(trained_tinycnn: Any, trt_tinycnn: dict[str, Artifact]) -> None:
    """`quant = "qat"` (tinycnn's configuration) fine-tunes TensorRT's own QDQ graph, as it does the onnx
    format's: the scales move away from the calibrated ones (`quant = "ptq"`), and the result still follows
    TensorRT's rules (zero points 0, float biases)."""
    import dataclasses

    from edgecam.bench.deploy import build_artifact

    t = trained_tinycnn
    qat_art = trt_tinycnn["int8"]
    assert t.cfg.export.quant == "qat" and qat_art.manifest["quantization"]["scales_from"].startswith("qat")
    assert qat_art.manifest["quantization"]["qat_steps"] > 0
    cfg = t.cfg.replace(export=dataclasses.replace(t.cfg.export, quant="ptq"))
    ptq_art = Artifact.load(build_artifact(t.model, cfg.models[0], t.layer, t.meta["sha256"], "tensorrt", "int8", cfg, t.data, TensorRTExporter())[0])
    assert ptq_art.manifest["quantization"]["scales_from"] == "ptq calibration"
    qat, ptq = onnx.load(str(qat_art.path)), onnx.load(str(ptq_art.path))
    assert lint(qat) == [] and lint(ptq) == []
    scales = lambda m: {i.name: numpy_helper.to_array(i) for i in m.graph.initializer if i.name.endswith("_scale")}  # noqa: E731
    learned, calibrated = scales(qat), scales(ptq)
    assert learned.keys() == calibrated.keys()
    moved = [k for k in learned if not np.allclose(learned[k], calibrated[k], rtol=1e-4)]
    assert len(moved) >= len(learned) // 4, (len(moved), len(learned))
