"""Tiny real artifacts for the runtime tests, built in milliseconds without torch or a converter.

Both graphs compute, from an input of 4 floats per sample, `logits = x + OFFSET` and `features = relu(x)`:
an ONNX graph (onnx.helper) and a .tflite flatbuffer written through LiteRT's own schema bindings (fp32, or
int8 with every tensor at SCALE / ZERO_POINT, so that (de)quantisation is exercised exactly).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

OFFSET = np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32)
SCALE, ZERO_POINT = 0.5, -1  # int8 grid: every multiple of 0.5 in [-63.5, 64.0] is exact


def expected(x: np.ndarray) -> dict[str, np.ndarray]:
    """What both graphs return for `x` (N, 4)."""
    return {"logits": x + OFFSET, "features": np.maximum(x, 0.0)}


def write_manifest(directory: Path, file: str, **extra: Any) -> None:
    (directory / "manifest.json").write_text(json.dumps({"file": file, **extra}))


def tiny_onnx(directory: Path, **manifest: Any) -> Path:
    """`directory/model.onnx` (dynamic batch; outputs named logits, features) and its manifest.json."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["input", "offset"], ["logits"]), helper.make_node("Relu", ["input"], ["features"])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4]), helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(OFFSET, "offset")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.onnx"
    onnx.save(model, str(path))
    write_manifest(directory, path.name, **manifest)
    return path


def tiny_tflite(directory: Path, int8: bool = False, **manifest: Any) -> Path:
    """`directory/model.tflite`: batch-1 graph, signature serving_default (input -> output_0 logits,
    output_1 features), fp32 or int8, and its manifest.json."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as tfl

    def tensor(name: str, buffer: int) -> Any:
        t = tfl.TensorT()
        t.name, t.shape, t.buffer = name, [1, 4], buffer
        t.type = tfl.TensorType.INT8 if int8 else tfl.TensorType.FLOAT32
        if int8:
            t.quantization = tfl.QuantizationParametersT()
            t.quantization.scale, t.quantization.zeroPoint = [SCALE], [ZERO_POINT]
        return t

    def buffer(data: bytes = b"") -> Any:
        b = tfl.BufferT()
        b.data = list(data) or None
        return b

    def opcode(code: int) -> Any:
        c = tfl.OperatorCodeT()
        c.builtinCode = c.deprecatedBuiltinCode = code
        c.version = 1
        return c

    def operator(code_index: int, inputs: list[int], outputs: list[int], options: Any = None) -> Any:
        op = tfl.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = code_index, inputs, outputs
        if options is not None:
            op.builtinOptionsType, op.builtinOptions = tfl.BuiltinOptions.AddOptions, options
        return op

    def tensor_map(name: str, index: int) -> Any:
        m = tfl.TensorMapT()
        m.name, m.tensorIndex = name, index
        return m

    offset = (np.round(OFFSET / SCALE) + ZERO_POINT).astype(np.int8) if int8 else OFFSET
    sub = tfl.SubGraphT()
    sub.tensors = [tensor("input", 0), tensor("offset", 1), tensor("logits", 0), tensor("features", 0)]
    sub.inputs, sub.outputs = [0], [2, 3]
    sub.operators = [operator(0, [0, 1], [2], tfl.AddOptionsT()), operator(1, [0], [3])]
    sub.name = "main"
    sig = tfl.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = "serving_default", 0
    sig.inputs, sig.outputs = [tensor_map("input", 0)], [tensor_map("output_0", 2), tensor_map("output_1", 3)]
    model = tfl.ModelT()
    model.version, model.description = 3, "edgecam tiny test model"
    model.operatorCodes = [opcode(tfl.BuiltinOperator.ADD), opcode(tfl.BuiltinOperator.RELU)]
    model.subgraphs, model.buffers, model.signatureDefs = [sub], [buffer(), buffer(offset.tobytes())], [sig]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.tflite"
    path.write_bytes(bytes(builder.Output()))
    write_manifest(directory, path.name, **manifest)
    return path
