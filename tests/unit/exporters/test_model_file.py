"""A deployed model file made into an edgecam artifact (`exporters/model_file.py`): graph surgery that exposes the
class scores and the CAM tensor without changing what the file computes, and the float reference whose head the
mirror CAMs differentiate. On the real ST files (../shared/models, skipped with the reason where absent) and on
small float graphs built here; every refusal names the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecam.errors import ArtifactError
from edgecam.exporters.inspect import inspect_model_file
from edgecam.exporters.model_file import endpoints, expose, float_graph, host_module, native_outputs, prove_surgery
from edgecam.runtimes.base import contract_input, contract_outputs

ST = Path(__file__).resolve().parents[3].parent / "shared" / "models" / "st-mobilenet"
needs_st = pytest.mark.skipif(not ST.is_dir(), reason=f"the real deployed models are not here ({ST})")
MNV2 = "mobilenet_v2_1.0_224_int8_per_tensor"
MNV1 = "mobilenet_v1_0.5_128_quant"


def _photos(size: int) -> np.ndarray:
    """chelsea (a cat: ImageNet 281-285) and coffee (espresso: 967), resized to size x size, uint8 NHWC."""
    import cv2
    from skimage import data

    return np.stack([cv2.resize(getattr(data, n)(), (size, size), interpolation=cv2.INTER_AREA) for n in ("chelsea", "coffee")])


@needs_st
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_surgery_exposes_the_scores_before_the_softmax_and_the_cam_tensor_and_changes_nothing(fmt: str, tmp_path: Path) -> None:
    src = ST / f"{MNV2}.{fmt}"
    ends = endpoints(src, fmt)
    assert ends.softmax and ends.logits != ends.output  # the file ends in a softmax: the scores are its input
    assert ends.features_layout == ("NCHW" if fmt == "onnx" else "NHWC")
    assert ends.features_shape == ((1280, 7, 7) if fmt == "onnx" else (7, 7, 1280))  # MobileNetV2's last 1x1 conv, before the pool
    dst = tmp_path / f"model.{fmt}"
    expose(src, dst, fmt, ends)
    x = _photos(224)
    proof = prove_surgery(src, dst, fmt, ends, x)
    assert proof["max_abs_diff"] == 0.0 and proof["top1_equal"] and proof["images"] == 2
    names = ["logits", "features"] if fmt == "onnx" else [ends.logits, ends.features]
    raw = native_outputs(dst, fmt, x, names)
    assert raw[names[1]].shape == (2, *ends.features_shape)
    top1 = raw[names[0]].reshape(2, -1).argmax(1)
    assert 281 <= top1[0] <= 285 and top1[1] == 967


@needs_st
def test_the_dequantized_reference_and_its_torch_head_agree_with_onnx_runtime(tmp_path: Path) -> None:
    """Weights folded and activation Q/DQ bypassed: the float graph keeps the int8 file's top-1 on the photos, and the
    onnx2torch head computes ONNX Runtime's logits from the same features (max |diff| < 1e-4)."""
    import onnx
    import torch

    from edgecam.explain.split import split_model

    src = ST / f"{MNV2}.onnx"
    ends = endpoints(src, "onnx")
    graph, facts = float_graph(src, ends)
    assert facts["weights_folded"] > 100 and facts["activation_qdq_bypassed"] > 100
    onnx.save(graph, str(tmp_path / "ref.onnx"))
    contract = {"layout": "NHWC", "features_layout": "NCHW"}
    x = ((_photos(224).astype(np.float32) - 127) / 127.5).transpose(0, 3, 1, 2)  # edgecam's NCHW input, normalised as the file says
    out = native_outputs(tmp_path / "ref.onnx", "onnx", contract_input(x, contract, quantize=False), ["logits", "features"])
    top1 = out["logits"].argmax(1)
    assert 281 <= top1[0] <= 285 and top1[1] == 967
    model, layer = host_module(graph, "NHWC", 0)
    split = split_model(model, layer)
    assert split.ok and split.verify(model, torch.from_numpy(x))
    with torch.no_grad():
        head = split.head(torch.from_numpy(out["features"])).numpy()
    assert np.abs(head - out["logits"]).max() < 1e-4


@needs_st
def test_a_quantize_node_s_saturation_is_kept_where_the_graph_has_no_relu6(tmp_path: Path) -> None:
    """MobileNetV1's QDQ graph clamps its activations only by the uint8 range of its QuantizeLinear nodes: without
    that saturation the float graph predicts one class for everything."""
    src = ST / f"{MNV1}.onnx"
    ends = endpoints(src, "onnx")
    import onnx

    graph, _ = float_graph(src, ends)
    onnx.save(graph, str(tmp_path / "ref.onnx"))
    x = ((_photos(128).astype(np.float32) - 128) / 128).transpose(0, 3, 1, 2)
    ref = native_outputs(tmp_path / "ref.onnx", "onnx", contract_input(x, {"layout": "NHWC"}, quantize=False), ["logits"])["logits"]
    q = native_outputs(src, "onnx", _photos(128), [ends.output])[ends.output]
    assert (ref.argmax(1) == q.argmax(1)).all() and ref.shape[1] == 1001  # a background class first
    assert 282 <= ref.argmax(1)[0] <= 286 and ref.argmax(1)[1] == 968


def test_contract_outputs_give_nchw_features_and_drop_the_background_class() -> None:
    out = contract_outputs({"logits": np.arange(6, dtype=np.float32).reshape(2, 3), "features": np.zeros((2, 4, 5, 7))},
                           {"features_layout": "NHWC", "label_offset": 1})
    assert out["logits"].tolist() == [[1, 2], [4, 5]] and out["features"].shape == (2, 7, 4, 5)
    q = contract_input(np.array([[[[-127 / 127.5, 0.0, 128 / 127.5]]]], np.float32), {"layout": "NCHW", "dtype": "uint8", "scale": 1 / 127.5, "zero_point": 127}, quantize=True)
    assert q.dtype == np.uint8 and q.ravel().tolist() == [0, 127, 255]


def _float_onnx(path: Path, pool: bool = True) -> Path:
    """A tiny float conv classifier (NCHW, 3 x 16 x 16, 5 classes), with or without a global pool before its scores."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if pool:
        nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
                 helper.make_node("GlobalAveragePool", ["r"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
                 helper.make_node("Gemm", ["f", "fc"], ["s"]), helper.make_node("Softmax", ["s"], ["prob"])]
        fc = rng.normal(size=(8, 5))
    else:
        nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "fc"], ["prob"])]
        fc = rng.normal(size=(3 * 16 * 16, 5))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 5])],
                              [numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w"),
                               numpy_helper.from_array(fc.astype(np.float32), "fc")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_float_onnx_s_cam_tensor_is_the_pool_s_input_and_its_reference_is_itself(tmp_path: Path) -> None:
    import torch

    src = _float_onnx(tmp_path / "tiny.onnx")
    ends = endpoints(src, "onnx")
    assert (ends.logits, ends.features, ends.features_layout, ends.softmax, ends.features_shape) == ("s", "r", "NCHW", True, (8, 16, 16))
    graph, facts = float_graph(src, ends)
    assert facts == {"weights_folded": 0, "activation_qdq_bypassed": 0}
    model, layer = host_module(graph, inspect_model_file(src).input.layout, 0)
    x = np.random.default_rng(1).normal(size=(3, 3, 16, 16)).astype(np.float32)
    want = native_outputs(src, "onnx", x, ["prob"])["prob"]
    with torch.no_grad():
        got = torch.softmax(model(torch.from_numpy(x)), 1).numpy()
    assert np.abs(got - want).max() < 1e-5 and layer == "net.edgecam_cam"


def test_a_graph_without_a_global_pool_and_no_named_tensor_is_refused(tmp_path: Path) -> None:
    src = _float_onnx(tmp_path / "mlp.onnx", pool=False)
    with pytest.raises(ArtifactError, match=r"mlp.onnx: no global pooling .* name the CAM tensor \(a 4-D activation\) with cam_tensor"):
        endpoints(src, "onnx")


def test_a_named_cam_tensor_that_is_not_in_the_graph_is_refused_with_the_graph_s_own(tmp_path: Path) -> None:
    src = _float_onnx(tmp_path / "tiny.onnx")
    with pytest.raises(ArtifactError, match=r"tiny.onnx: cam_tensor 'conv9' is not a tensor of the graph \(last 4-D tensors: c, r"):
        endpoints(src, "onnx", "conv9")
    with pytest.raises(ArtifactError, match=r"tiny.onnx: the CAM tensor 'f' has shape \[-1, 8\]|tiny.onnx: the CAM tensor 'f' has shape"):
        endpoints(src, "onnx", "f")
    assert endpoints(src, "onnx", "c").features == "c"  # a named 4-D tensor is taken as it is


@needs_st
def test_a_named_tflite_tensor_that_does_not_exist_is_refused() -> None:
    with pytest.raises(ArtifactError, match=r"cam_tensor 'nope' is not a tensor of the graph"):
        endpoints(ST / f"{MNV2}.tflite", "tflite", "nope")
