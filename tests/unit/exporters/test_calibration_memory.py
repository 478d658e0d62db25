"""Bounded calibration memory: ONNX Runtime's MinMax calibration runs in batches sized by an activation budget
(`calibration_batch`), streamed from the caller's images, and gives the QDQ model that calibration in runs of
32 gives, bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest

from edgecam.exporters.onnx import CALIB_BATCH, activation_bytes_per_image, calibration_batch, calibration_reader, quantize_qdq

SHAPE = (3, 32, 32)
N_IMAGES = 40  # 32 + 8 before the bound


@pytest.fixture(scope="module")
def tiny_fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tinycnn-size two-output graph (conv 12 - pool - conv 24 - global pool - linear 10, `features` the
    second conv's activation), written directly (no torch export: milliseconds) and pre-processed as
    `export_fp32` does."""
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.shape_inference import quant_pre_process

    rng = np.random.default_rng(1)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["features"]),
        helper.make_node("GlobalAveragePool", ["features"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w3", "b3"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *SHAPE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10]),
         helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 24, 16, 16])],
        [init("w1", 12, 3, 3, 3), init("b1", 12), init("w2", 24, 12, 3, 3), init("b2", 24), init("w3", 10, 24), init("b3", 10)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    tmp = tmp_path_factory.mktemp("calib")
    onnx.save(model, str(tmp / "raw.onnx"))
    quant_pre_process(str(tmp / "raw.onnx"), str(tmp / "fp32.onnx"), skip_symbolic_shape=True)
    return tmp / "fp32.onnx"


def _images() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((N_IMAGES, *SHAPE)).astype(np.float32) * 2


def _calibrate(monkeypatch: pytest.MonkeyPatch, fp32: Path, out: Path, precision: str, budget: int) -> list[int]:
    """quantize_qdq with `budget`; the batch sizes ONNX Runtime's calibration session ran."""
    batches: list[int] = []
    run = onnxruntime.InferenceSession.run

    def spy(self: Any, output_names: Any, input_feed: dict[str, np.ndarray], *a: Any, **kw: Any) -> Any:
        batches.append(len(input_feed["input"]))
        return run(self, output_names, input_feed, *a, **kw)

    with monkeypatch.context() as m:
        m.setattr(onnxruntime.InferenceSession, "run", spy)
        quantize_qdq(fp32, out, precision, _images(), activation_budget=budget)
    return batches


@pytest.mark.parametrize("precision", ["int8", "int16"])
def test_bounded_calibration_gives_the_same_qdq_model(tiny_fp32: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str) -> None:
    per_image = activation_bytes_per_image(tiny_fp32)
    assert calibration_batch(tiny_fp32, 2**62) == CALIB_BATCH
    assert calibration_batch(tiny_fp32, 3 * per_image + 1) == 3
    unbounded = _calibrate(monkeypatch, tiny_fp32, tmp_path / "unbounded.onnx", precision, 2**62)
    bounded = _calibrate(monkeypatch, tiny_fp32, tmp_path / "bounded.onnx", precision, 3 * per_image + 1)
    assert unbounded == [32, 8]  # as before the bound
    assert bounded == [3] * 13 + [1]  # the bound reached ONNX Runtime's calibration session
    a, b = (onnx.load(str(tmp_path / f"{k}.onnx")) for k in ("unbounded", "bounded"))
    inits_a = {i.name: i.SerializeToString() for i in a.graph.initializer}
    inits_b = {i.name: i.SerializeToString() for i in b.graph.initializer}
    assert sum(k.endswith("_scale") for k in inits_a) >= 10 and sum(k.endswith("_zero_point") for k in inits_a) >= 10
    assert inits_a == inits_b  # weights, scales and zero points bit for bit
    assert [n.SerializeToString() for n in a.graph.node] == [n.SerializeToString() for n in b.graph.node]


def test_the_budget_bounds_the_batch(tiny_fp32: Path) -> None:
    per_image = activation_bytes_per_image(tiny_fp32)
    assert per_image == 4 * (2 * 12 * 32 * 32 + 12 * 16 * 16 + 2 * 24 * 16 * 16 + 24 + 24 + 10)  # every node output, float32
    assert calibration_batch(tiny_fp32, 0) == 1
    assert calibration_batch(tiny_fp32, 5 * per_image) == 5
    assert calibration_batch(tiny_fp32, 5 * per_image - 1) == 4


def test_reader_streams_batches_without_copying_the_set() -> None:
    x32 = _images()
    first = calibration_reader(x32, 16).get_next()["input"]
    assert first.dtype == np.float32 and np.shares_memory(first, x32)  # a view: no float32 copy of the set
    x64 = x32.astype(np.float64)
    reader = calibration_reader(x64, 16)
    got = []
    while (feed := reader.get_next()) is not None:
        got.append(feed["input"])
    assert [len(g) for g in got] == [16, 16, 8]
    assert all(g.dtype == np.float32 and g.flags.c_contiguous for g in got)
    np.testing.assert_array_equal(np.concatenate(got), x32)
