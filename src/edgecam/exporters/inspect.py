"""What a deployed model file is, read from the file itself: an .onnx or .tflite that another toolchain produced
(issue 34: bring your own artifact). Its input contract (name, layout, fixed size, dtype, the input's own scale and
zero point), its class count, its real precision (the element types its weights and activations are quantized to,
per tensor or per channel) and its sha256 — before any work, so that a wrong file is refused with its name.

Precision vocabulary, as the exporters' `precision_effective`: "fp32", "fp16", "int8", "uint8", "int16x8"
(16-bit activations, 8-bit weights), "int16", or "mixed" (more than one integer width among the weights, or
weights of some layers left in float beside quantized ones)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecam.cache import sha256_file
from edgecam.errors import ArtifactError

#: the formats a model file is told apart by, from its extension
FORMATS = {".onnx": "onnx", ".tflite": "tflite"}


@dataclass(frozen=True)
class InputContract:
    """The one image input a classifier file takes."""

    name: str
    shape: tuple[int, ...]  # without the batch dimension, e.g. (224, 224, 3)
    layout: str  # "NCHW" or "NHWC"
    dtype: str  # numpy name: "float32", "uint8", "int8"
    scale: float | None = None  # an integer input's own quantization: real = scale * (q - zero_point)
    zero_point: int | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return (self.shape[1], self.shape[2]) if self.layout == "NCHW" else (self.shape[0], self.shape[1])

    @property
    def channels(self) -> int:
        return self.shape[0] if self.layout == "NCHW" else self.shape[2]

    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """The mean / std (on the 0-1 pixel scale) that make edgecam's normalised input quantize, with the input's own
        scale and zero point, to the pixel's 0-255 value: mean = zero point / 255, std = 1 / (255 x scale). None for a
        float input (its normalisation is not in the file)."""
        if self.scale is None or self.zero_point is None:
            return None
        return (self.zero_point / 255.0,) * self.channels, (1.0 / (255.0 * self.scale),) * self.channels


@dataclass(frozen=True)
class ModelFile:
    """A model file as read: its format, hash, input contract, class count and precision."""

    path: Path
    format: str
    sha256: str
    size_bytes: int
    input: InputContract
    n_classes: int
    precision: str
    granularity: str | None  # "per-tensor" / "per-channel" for quantized weights, None for float ones
    counts: dict[str, int] = field(default_factory=dict)  # what the precision was read from (tensors by element type)


def model_format(path: Path) -> str:
    """"onnx" or "tflite" from the extension; anything else is refused with the file named."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ArtifactError(f"{path}: not a model file edgecam reads (expected one of {', '.join(FORMATS)}, got {path.suffix or 'no extension'!r})")
    return fmt


def inspect_model_file(path: str | Path) -> ModelFile:
    """Read `path` (.onnx or .tflite): refused with ArtifactError naming the file when it is missing, not a model
    of its format, or has no single fixed-size 4-D image input and one 2-D output of class scores."""
    path = Path(path)
    fmt = model_format(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: model file not found")
    read = _read_onnx if fmt == "onnx" else _read_tflite
    contract, n_classes, precision, granularity, counts = read(path)
    return ModelFile(path, fmt, sha256_file(path), path.stat().st_size, contract, n_classes, precision, granularity, counts)


def _layout(path: Path, dims: tuple[int, ...]) -> str:
    """NCHW when the second of (C, H, W) / (H, W, C) is a channel count (1 or 3) and the last is not."""
    if len(dims) != 3:
        raise ArtifactError(f"{path}: the input has {len(dims) + 1} dimensions; edgecam explains image classifiers with one (batch, C, H, W) or (batch, H, W, C) input")
    if dims[0] in (1, 3) and dims[2] not in (1, 3):
        return "NCHW"
    if dims[2] in (1, 3):
        return "NHWC"
    raise ArtifactError(f"{path}: input shape {list(dims)} has no channel dimension of 1 or 3 first or last")


def _fixed(path: Path, name: str, dims: list[Any]) -> tuple[int, ...]:
    """The input's dimensions after the batch one, all fixed positive integers, or a clear refusal."""
    rest = dims[1:]
    if not all(isinstance(d, (int, np.integer)) and d > 0 for d in rest):
        raise ArtifactError(f"{path}: input {name!r} has a dynamic or unknown size {['?' if not isinstance(d, (int, np.integer)) or d <= 0 else int(d) for d in dims]}; "
                            "edgecam needs a fixed input size (export the model with one)")
    return tuple(int(d) for d in rest)


def _classes(path: Path, shapes: list[list[Any]]) -> int:
    """The class count: the last dimension of the one 2-D output."""
    two_d = [s for s in shapes if len(s) == 2]
    if len(two_d) != 1 or not isinstance(two_d[0][1], (int, np.integer)) or two_d[0][1] < 2:
        raise ArtifactError(f"{path}: expected one output of class scores (batch, classes); the outputs' shapes are {shapes}")
    return int(two_d[0][1])


def _precision(weights: dict[str, int], activations: dict[str, int], float_weights: int) -> str:
    """The precision label from the quantized weights' and activations' element types (counts by numpy name)
    and the number of float weight tensors of compute layers left unquantized."""
    w, a = set(weights), set(activations)
    if not w and not a:
        return "fp16" if float_weights == 0 else "fp32"
    if len(w) > 1 or (w and float_weights):
        return "mixed"
    if w <= {"int8", "uint8"} and a & {"int16", "uint16"}:
        return "int16x8"
    if w & {"int16", "uint16"}:
        return "int16"
    return next(iter(w or a))


def _through_layout_ops(graph: Any, name: str, limit: int = 4) -> str:
    """The tensor `name` becomes after the layout-only nodes that read it (Transpose, Reshape, Identity, ...): where
    a converter put its input's DequantizeLinear (tf2onnx transposes an NHWC input first)."""
    for _ in range(limit):
        nxt = [n for n in graph.node if n.input and n.input[0] == name and n.op_type in ("Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze")]
        if len(nxt) != 1:
            break
        name = nxt[0].output[0]
    return name


def _read_onnx(path: Path) -> tuple[InputContract, int, str, str | None, dict[str, int]]:
    import onnx
    from onnx import helper, numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # DecodeError and friends: whatever the protobuf parser raises on a damaged file
        raise ArtifactError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from exc
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ArtifactError(f"{path}: expected one image input, found {len(inputs)} ({', '.join(i.name for i in inputs) or 'none'})")
    inp = inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    rest = _fixed(path, inp.name, dims)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)).name
    scale = zero_point = None
    source = _through_layout_ops(graph, inp.name)
    for node in graph.node:  # an integer input is dequantized by the node that reads it (after any transpose): its own scale and zero point
        if node.op_type == "DequantizeLinear" and node.input[0] == source and node.input[1] in inits:
            scale = float(numpy_helper.to_array(inits[node.input[1]]).reshape(-1)[0])
            zero_point = int(numpy_helper.to_array(inits[node.input[2]]).reshape(-1)[0]) if len(node.input) > 2 and node.input[2] in inits else 0
    contract = InputContract(inp.name, rest, _layout(path, rest), dtype, scale, zero_point)
    outputs = [[d.dim_value if d.HasField("dim_value") else "batch" for d in o.type.tensor_type.shape.dim] for o in graph.output]
    n_classes = _classes(path, outputs)

    weights: dict[str, int] = {}
    activations: dict[str, int] = {}
    per_channel = False
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] == source:
            continue
        zp = inits.get(node.input[2]) if len(node.input) > 2 else None
        kind = np.dtype(helper.tensor_dtype_to_np_dtype(zp.data_type)).name if zp is not None else "uint8"  # the spec's default
        if kind == "int32":  # biases (scale = input scale x weight scale): not a precision of their own
            continue
        bucket = weights if node.input[0] in inits else activations
        bucket[kind] = bucket.get(kind, 0) + 1
        if node.input[0] in inits and node.input[1] in inits and np.unique(numpy_helper.to_array(inits[node.input[1]])).size > 1:
            per_channel = True  # one scale per channel that differ (a per-tensor scale may be written once per channel)
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    float_weights = sum(1 for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose")
                        for x in n.input[1:2] if x in inits and x not in dequantized and inits[x].data_type == onnx.TensorProto.FLOAT)
    if not weights and not activations:  # no Q/DQ: the weights' own element type
        kinds = {inits[x].data_type for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul") for x in n.input[1:2] if x in inits}
        float_weights = 0 if kinds == {onnx.TensorProto.FLOAT16} else max(1, float_weights)
    counts = {**{f"weights_{k}": v for k, v in weights.items()}, **{f"activations_{k}": v for k, v in activations.items()}, "float_weights": float_weights}
    granularity = ("per-channel" if per_channel else "per-tensor") if weights else None
    return contract, n_classes, _precision(weights, activations, float_weights), granularity, counts


def _read_tflite(path: Path) -> tuple[InputContract, int, str, str | None, dict[str, int]]:
    from edgecam.runtimes.litert import load_interpreter

    try:
        interp = load_interpreter(str(path), threads=1)
    except Exception as exc:  # LiteRT raises ValueError / RuntimeError on a file that is not a flatbuffer model
        raise ArtifactError(f"{path}: not a readable TFLite model ({type(exc).__name__}: {str(exc)[:200]})") from exc
    ins = interp.get_input_details()
    if len(ins) != 1:
        raise ArtifactError(f"{path}: expected one image input, found {len(ins)} ({', '.join(d['name'] for d in ins) or 'none'})")
    inp = ins[0]
    signature = [int(d) for d in inp.get("shape_signature", inp["shape"])]
    rest = _fixed(path, inp["name"], [signature[0]] + [d if d > 0 else None for d in signature[1:]])
    dtype = np.dtype(inp["dtype"]).name
    scale, zero_point = inp.get("quantization", (0.0, 0))
    quantized_input = dtype != "float32" and scale
    contract = InputContract(inp["name"], rest, _layout(path, rest), dtype, float(scale) if quantized_input else None,
                             int(zero_point) if quantized_input else None)
    n_classes = _classes(path, [[int(d) for d in o["shape"]] for o in interp.get_output_details()])

    io = {inp["index"], *(o["index"] for o in interp.get_output_details())}
    constants = _constant_tensors(path)
    weights: dict[str, int] = {}
    activations: dict[str, int] = {}
    per_channel = False
    float_weights = 0
    for t in interp.get_tensor_details():
        if t["index"] in io:
            continue
        kind = np.dtype(t["dtype"]).name
        scales = t.get("quantization_parameters", {}).get("scales", np.zeros(0))
        constant = t["index"] in constants
        if kind in ("int8", "uint8", "int16", "uint16", "int32") and len(scales):
            if kind == "int32":  # biases (int32, scale = input scale x weight scale): not a precision of their own
                continue
            bucket = weights if constant else activations
            bucket[kind] = bucket.get(kind, 0) + 1
            per_channel |= constant and np.unique(scales).size > 1  # a per-tensor scale may be written once per channel
        elif constant and kind in ("float32", "float16") and len(t["shape"]) >= 2:
            float_weights += 1 if kind == "float32" else 0
    counts = {**{f"weights_{k}": v for k, v in weights.items()}, **{f"activations_{k}": v for k, v in activations.items()}, "float_weights": float_weights}
    granularity = ("per-channel" if per_channel else "per-tensor") if weights else None
    return contract, n_classes, _precision(weights, activations, float_weights), granularity, counts


def _constant_tensors(path: Path) -> set[int]:
    """Indices of the first subgraph's tensors that hold data in the file (weights, biases): read from the
    flatbuffer, since LiteRT's tensor details do not say which tensors are constants."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    out = set()
    for i in range(graph.TensorsLength()):
        buffer = model.Buffers(graph.Tensors(i).Buffer())
        if buffer is not None and (buffer.DataLength() > 0 or buffer.Offset() > 1):  # inline data, or data past the flatbuffer (> 2 GB models)
            out.add(i)
    return out
