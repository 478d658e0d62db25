"""Model files read as they are (`exporters/inspect.py`): the real ST MobileNetV2 pair from another toolchain
(../shared/models, skipped with the reason where absent), an fp32 ONNX exported here, and every file that must be
refused before any work, with its name in the error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecam.errors import ArtifactError
from edgecam.exporters.inspect import inspect_model_file

ST = Path(__file__).resolve().parents[3].parent / "shared" / "models" / "st-mobilenet"
needs_st = pytest.mark.skipif(not ST.is_dir(), reason=f"the real deployed models are not here ({ST})")


@needs_st
def test_the_st_tflite_is_read_as_a_full_int8_nhwc_model_with_a_uint8_input() -> None:
    f = inspect_model_file(ST / "mobilenet_v2_1.0_224_int8_per_tensor.tflite")
    assert (f.format, f.n_classes, f.input.layout, f.input.shape, f.input.size, f.input.dtype) == ("tflite", 1000, "NHWC", (224, 224, 3), (224, 224), "uint8")
    assert f.input.scale == pytest.approx(1 / 127.5) and f.input.zero_point == 127  # the ST model card's input quantization
    assert (f.precision, f.granularity) == ("int8", "per-tensor") and f.counts["float_weights"] == 0
    assert f.sha256.startswith("45acdbb04fb497c0") and f.size_bytes == (ST / "mobilenet_v2_1.0_224_int8_per_tensor.tflite").stat().st_size


@needs_st
def test_the_st_qdq_onnx_is_read_with_the_same_contract() -> None:
    f = inspect_model_file(ST / "mobilenet_v2_1.0_224_int8_per_tensor.onnx")
    assert (f.format, f.n_classes, f.input.layout, f.input.shape, f.input.dtype) == ("onnx", 1000, "NHWC", (224, 224, 3), "uint8")
    assert f.input.scale == pytest.approx(1 / 127.5) and f.input.zero_point == 127  # from the DequantizeLinear that reads the input
    assert f.precision == "int8" and f.granularity == "per-tensor" and f.counts["float_weights"] == 0
    assert f.sha256.startswith("479b0a378ff25033")


def _onnx_classifier(path: Path, height: int | str = 16, inputs: int = 1) -> Path:
    """A tiny float conv classifier as ONNX, built with onnx.helper (NCHW, 3 channels, 5 classes)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["logits"])]
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, height, 16])]
    ins += [helper.make_tensor_value_info(f"extra{i}", TensorProto.FLOAT, [1, 3]) for i in range(inputs - 1)]
    graph = helper.make_graph(nodes, "tiny", ins, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])],
                              [numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w"),
                               numpy_helper.from_array(rng.normal(size=(8, 5)).astype(np.float32), "fc")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_an_fp32_onnx_is_read_as_fp32_nchw(tmp_path: Path) -> None:
    f = inspect_model_file(_onnx_classifier(tmp_path / "tiny.onnx"))
    assert (f.precision, f.granularity, f.n_classes, f.input.layout, f.input.shape, f.input.dtype, f.input.scale) == ("fp32", None, 5, "NCHW", (3, 16, 16), "float32", None)


def test_ort_quantized_per_channel_int8_is_read_as_such(tmp_path: Path) -> None:
    """ONNX Runtime's own static QDQ quantization of the float model: int8 weights per channel."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"x": np.random.default_rng(i).random((1, 3, 16, 16), dtype=np.float32)} for i in range(4)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    src = _onnx_classifier(tmp_path / "tiny.onnx")
    quantize_static(str(src), str(tmp_path / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    f = inspect_model_file(tmp_path / "q.onnx")
    assert (f.precision, f.granularity) == ("int8", "per-channel") and f.input.dtype == "float32" and f.input.scale is None


@pytest.mark.parametrize(("name", "content", "match"), [
    ("model.pt", b"x", r"model.pt: not a model file edgecam reads \(expected one of .onnx, .tflite, got '.pt'\)"),
    ("missing.onnx", None, r"missing.onnx: model file not found"),
    ("garbage.onnx", b"\x00\xffnot a protobuf" * 50, r"garbage.onnx: not a readable ONNX model"),
    ("garbage.tflite", b"not a flatbuffer" * 50, r"garbage.tflite: not a readable TFLite model"),
])
def test_a_file_that_is_not_a_model_is_refused_with_its_name(tmp_path: Path, name: str, content: bytes | None, match: str) -> None:
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(ArtifactError, match=match):
        inspect_model_file(tmp_path / name)


def test_a_dynamic_size_or_a_second_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"dynamic.onnx: input 'x' has a dynamic or unknown size \['\?', 3, '\?', 16\]"):
        inspect_model_file(_onnx_classifier(tmp_path / "dynamic.onnx", height="h"))
    with pytest.raises(ArtifactError, match=r"two.onnx: expected one image input, found 2 \(x, extra0\)"):
        inspect_model_file(_onnx_classifier(tmp_path / "two.onnx", inputs=2))


def test_edgecam_inspect_prints_each_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from edgecam.cli import main

    path = _onnx_classifier(tmp_path / "tiny.onnx")
    assert main(["inspect", str(path), "--json"]) == 0
    (got,) = json.loads(capsys.readouterr().out)
    assert (got["precision"], got["n_classes"], got["input"]["layout"], got["path"]) == ("fp32", 5, "NCHW", str(path))
    assert main(["inspect", str(path), str(tmp_path / "nope.tflite")]) == 2  # refused before anything is printed
    out = capsys.readouterr()
    assert out.out == "" and "nope.tflite: model file not found" in out.err


@needs_st
@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
def test_the_uint8_mobilenet_v1_pair_reads_alike_in_both_formats(suffix: str) -> None:
    """A uint8 QAT model with 1,001 outputs (background first): the ONNX one's input is dequantized after a
    Transpose (tf2onnx), and its int32 bias DequantizeLinears are no precision of their own."""
    f = inspect_model_file(ST / f"mobilenet_v1_0.5_128_quant{suffix}")
    assert (f.n_classes, f.input.layout, f.input.shape, f.input.dtype, f.precision, f.granularity) == (1001, "NHWC", (128, 128, 3), "uint8", "uint8", "per-tensor")
    assert f.input.scale == pytest.approx(1 / 128) and f.input.zero_point == 128
