"""TensorRT's ONNX: explicit-quantization QDQ that follows TensorRT's rules, linted here and, when the optional
`tensorrt-rtx` extra is installed, parsed and built ahead of time by TensorRT-RTX's CPU-only builder.

The artifact is an ONNX file: TensorRT engines are built on the board that runs them (an engine is specific to
its GPU and TensorRT version), so what edgecam ships is the network TensorRT's parser reads. The rules it
follows (TensorRT developer guide, "Explicit quantization"; what TensorRT-RTX's parser rejects, probed here):

- int8 Q/DQ only (no uint8, no int16: TensorRT has none, NVIDIA/TensorRT#1907; no int32 bias DQ);
- zero points 0 (symmetric; non-zero ones are "only supported on DLA");
- activations per-tensor, weights per-channel on the output-channel axis;
- biases float (TensorRT fuses them into the layer), and Q/DQ on both inputs of every weighted layer.

TensorRT's 16-bit tier is fp16 (`precision_effective = "fp16"`): the fp32 graph with float16 weights and
compute, float32 inputs and outputs. The lint enforces the rules above; a successful TensorRT-RTX build
proves TensorRT's parser and builder take the network (RTX 1.7 also builds per-tensor weights, per-channel
activation scales and layers read in float), not that int8 kernels exist on a given GPU; no engine runs here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from edgecam.errors import ArtifactError
from edgecam.exporters.base import CalibData, ExportSpec, ModelInfo
from edgecam.exporters.onnx import OnnxExporter, calibration_batch, calibration_reader, finish_qdq, quiet

if TYPE_CHECKING:
    import onnx
    import torch

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# the compute capability TensorRT-RTX's CPU-only builder targets when it checks an artifact (an Ampere
# consumer GPU; the check is of the network, not of a board's kernels)
CHECK_COMPUTE_CAPABILITY = "SM86"
CHECK_MAX_BATCH = 32


def _output_channel_axis(layer: "onnx.NodeProto") -> int:
    """The weight axis that indexes output channels: 0 for Conv and Gemm(transB=1), 1 for Gemm(transB=0),
    MatMul ([K, N]) and ConvTranspose ([C_in, C_out / group, ...])."""
    if layer.op_type == "Conv":
        return 0
    if layer.op_type == "Gemm":
        return 0 if next((a.i for a in layer.attribute if a.name == "transB"), 0) else 1
    return 1


def _stored(dq: "onnx.NodeProto", inits: dict[str, "onnx.TensorProto"], producers: dict[str, "onnx.NodeProto"]) -> "onnx.TensorProto | None":
    """The constant a DequantizeLinear reads: an integer initializer, or the float one behind a Q."""
    if dq.input[0] in inits:
        return inits[dq.input[0]]
    q = producers.get(dq.input[0])
    return inits.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None


def _weight_dequantizers(graph: "onnx.GraphProto", inits: dict[str, "onnx.TensorProto"],
                         producers: dict[str, "onnx.NodeProto"]) -> dict[str, tuple["onnx.NodeProto", "onnx.TensorProto"]]:
    """Q / DQ node name -> (its layer, the weight) for the Q / DQ that read a weighted layer's constant weight,
    so the lint holds them to the weight rules (per-channel) and every other Q / DQ to the activation ones."""
    weight_dq: dict[str, tuple[onnx.NodeProto, onnx.TensorProto]] = {}  # Q / DQ node name -> (its layer, the weight)
    for layer in graph.node:
        if layer.op_type in WEIGHTED_OPS and len(layer.input) > 1:
            dq = producers.get(layer.input[1])
            w = _stored(dq, inits, producers) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if dq is not None and w is not None:  # a weight, not an activation multiplied by an activation
                weight_dq[dq.name] = (layer, w)
                q = producers.get(dq.input[0])
                if q is not None and q.op_type == "QuantizeLinear":
                    weight_dq[q.name] = (layer, w)
    return weight_dq


def _qdq_type_problems(n: "onnx.NodeProto", inits: dict[str, "onnx.TensorProto"]) -> list[str]:
    """A Q / DQ node's breaches of "int8 only, zero points 0": TensorRT has no other quantized type and
    takes symmetric quantization only."""
    import onnx
    from onnx import numpy_helper

    problems: list[str] = []
    zp = n.input[2] if len(n.input) > 2 and n.input[2] else ""
    output_dtype = next((a.i for a in n.attribute if a.name == "output_dtype"), 0)
    if n.op_type == "DequantizeLinear" and n.input[0] in inits:
        dtype = inits[n.input[0]].data_type
    elif zp in inits:
        dtype = inits[zp].data_type
    elif n.op_type == "QuantizeLinear":
        dtype = output_dtype or onnx.TensorProto.UINT8  # no zero point: `output_dtype`, else uint8 (ONNX spec)
    else:
        dtype = -1  # a DQ of a computed tensor without a zero point: its Q is checked
    if dtype != onnx.TensorProto.INT8 and dtype != -1:
        problems.append(f"{n.op_type} {n.name!r}: quantized type {onnx.TensorProto.DataType.Name(dtype)}, TensorRT takes int8 only")
    if zp in inits and np.any(numpy_helper.to_array(inits[zp]) != 0):
        problems.append(f"{n.op_type} {n.name!r}: non-zero zero point (TensorRT: symmetric only; non-zero is DLA-only)")
    return problems


def _qdq_scale_problems(n: "onnx.NodeProto", inits: dict[str, "onnx.TensorProto"], producers: dict[str, "onnx.NodeProto"],
                        weight_dq: dict[str, tuple["onnx.NodeProto", "onnx.TensorProto"]]) -> list[str]:
    """A Q / DQ node's breaches of the scale granularity: weights per-channel on the output-channel axis,
    activations per-tensor."""
    from onnx import numpy_helper

    problems: list[str] = []
    scale = numpy_helper.to_array(inits[n.input[1]]) if n.input[1] in inits else None
    if n.name in weight_dq:
        layer, init = weight_dq[n.name]
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        w = numpy_helper.to_array(init)
        want = _output_channel_axis(layer)
        if scale is None or scale.size == 1 or axis % w.ndim != want:
            problems.append(f"weight {n.op_type} {n.name!r} of {layer.op_type} {layer.name!r}: expected per-channel scales on axis {want} "
                            f"(the output channels), got {'per-tensor' if scale is None or scale.size == 1 else f'axis {axis}'} (TensorRT also takes "
                            "per-tensor weights; the tensorrt format quantizes them per channel)")
        elif scale.size != w.shape[want]:
            problems.append(f"weight {n.op_type} {n.name!r}: {scale.size} scales for {w.shape[want]} output channels")
    else:
        constant = _stored(n, inits, producers) is not None if n.op_type == "DequantizeLinear" else n.input[0] in inits
        if not constant and scale is not None and scale.size != 1:
            problems.append(f"{n.op_type} {n.name!r}: activation scales must be per-tensor, got {scale.size} values")
    return problems


def _layer_problems(layer: "onnx.NodeProto", producers: dict[str, "onnx.NodeProto"], quantized: bool) -> list[str]:
    """A weighted layer's breaches of "float biases, Q/DQ on both inputs" (the latter only in a quantized
    graph: an fp32 or fp16 one has no Q/DQ at all)."""
    problems: list[str] = []
    if len(layer.input) > 2 and layer.input[2]:
        bias = producers.get(layer.input[2])
        if bias is not None and bias.op_type == "DequantizeLinear":
            problems.append(f"{layer.op_type} {layer.name!r}: bias from DequantizeLinear {bias.name!r}; TensorRT takes float biases")
    if quantized:
        for idx, what in ((0, "input"), (1, "weight")):
            src = producers.get(layer.input[idx]) if len(layer.input) > idx else None
            if src is None or src.op_type != "DequantizeLinear":
                problems.append(f"{layer.op_type} {layer.name!r}: its {what} is not read through a DequantizeLinear (TensorRT needs Q/DQ on both "
                                "inputs of a weighted layer to run it in int8)")
    return problems


def lint(model: "onnx.ModelProto") -> list[str]:
    """Every way `model` breaks TensorRT's explicit-quantization rules (module docstring), one message per
    violation naming the node; empty when it follows them. Pure Python: no TensorRT needed."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    problems: list[str] = []
    weight_dq = _weight_dequantizers(g, inits, producers)
    quantized = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in g.node)
    for n in g.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        problems += _qdq_type_problems(n, inits)
        problems += _qdq_scale_problems(n, inits, producers, weight_dq)
    for layer in g.node:
        if layer.op_type not in WEIGHTED_OPS:
            continue
        problems += _layer_problems(layer, producers, quantized)
    return problems


def rtx_available() -> bool:
    """True when TensorRT-RTX's Python bindings (the `tensorrt-rtx` extra) import."""
    try:
        import tensorrt_rtx_bindings  # noqa: F401
    except ImportError:
        return False
    return True


def rtx_check(path: Path, max_batch: int = CHECK_MAX_BATCH) -> dict[str, Any]:
    """Parse `path` with TensorRT-RTX's ONNX parser and build a plan with its CPU-only ahead-of-time builder
    (compute capability CHECK_COMPUTE_CAPABILITY, batch 1..max_batch). Raises ArtifactError with the parser's or
    builder's messages; returns the manifest's record (versions, plan size, build time, the network's output
    types). Needs `rtx_available()`."""
    import tensorrt_rtx_bindings as trt

    class Collect(trt.ILogger):  # the builder's errors, for the exception (TensorRT prints them otherwise)
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity <= trt.ILogger.Severity.ERROR:
                self.errors.append(msg)

    logger = Collect()
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT-RTX networks are strongly typed: the ONNX's types decide
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(path).read_bytes()):
        errors = [parser.get_error(i).desc().split("\n")[0] for i in range(parser.num_errors)]
        raise ArtifactError(f"TensorRT-RTX {trt.__version__}'s ONNX parser rejects {path.name}: " + "; ".join(errors or logger.errors or ["no message"]))
    config = builder.create_builder_config()
    config.num_compute_capabilities = 1
    config.set_compute_capability(getattr(trt.ComputeCapability, CHECK_COMPUTE_CAPABILITY), 0)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        shape = tuple(inp.shape)[1:]
        profile.set_shape(inp.name, (1, *shape), (1, *shape), (max_batch, *shape))
    config.add_optimization_profile(profile)
    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    build_s = time.perf_counter() - t0
    if plan is None:
        raise ArtifactError(f"TensorRT-RTX {trt.__version__}'s CPU builder could not build {path.name}: " + "; ".join(logger.errors or ["no message"]))
    outputs = {network.get_output(i).name: str(network.get_output(i).dtype).split(".")[-1].lower() for i in range(network.num_outputs)}
    return {"checked_by": f"TensorRT-RTX {trt.__version__} ONNX parser + CPU-only AOT builder", "compute_capability": CHECK_COMPUTE_CAPABILITY,
            "max_batch": max_batch, "plan_bytes": int(plan.nbytes), "build_s": round(build_s, 3), "outputs": outputs}


class TensorRTExporter(OnnxExporter):
    """PyTorch -> ONNX (fp32) -> TensorRT's QDQ ONNX (int8) or float16 ONNX (the 16-bit tier), linted and
    checked by TensorRT-RTX when it is installed. Runs in ONNX Runtime on the host as QDQ emulation only."""

    format = "tensorrt"
    supported = ("fp32", "int16", "int8")
    host_simulation = False  # an emulation of TensorRT in ONNX Runtime is not what the board computes

    def quantize(self, fp32_path: Path, out_path: Path, spec: ExportSpec, calib_images: np.ndarray, calib: CalibData | None,
                 info: ModelInfo, progress: Callable[[str, float], None] | None) -> dict[str, Any]:
        """int8: ONNX Runtime's QDQ quantizer with TensorRT's rules (symmetric int8, per-channel weights, float
        biases), MinMax calibration; int16: float16 (TensorRT has no int16)."""
        import onnx

        if spec.precision == "int16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
            onnx.save(model, str(out_path))
            return {"method": "fp16", "weight_dtype": "float16", "activation_dtype": "float16",
                    "note": "TensorRT has no int16 (NVIDIA/TensorRT#1907): its 16-bit tier is fp16, float32 inputs and outputs"}
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        qdq = out_path.with_name("qdq" + self.suffix)
        with quiet():
            quantize_static(str(fp32_path), str(qdq), calibration_reader(calib_images, calibration_batch(fp32_path)), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True, calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": True, "QuantizeBias": False})
        info_out: dict[str, Any] = {"method": spec.quant, "activation_dtype": "int8", "weight_dtype": "int8", "weights": "per-channel symmetric",
                                    "activations": "per-tensor symmetric", "biases": "float",
                                    "calibration": f"MinMax on {len(calib_images)} calibration images (seed {spec.seed})"}
        # the same fine-tuning as the onnx format, on this graph: zero points stay 0 and biases float (the lint checks)
        info_out.update(finish_qdq(fp32_path, qdq, out_path, spec, calib, f"{info.name}-tensorrt-{spec.precision}", progress))
        return info_out

    def manifest_fields(self, model: "torch.nn.Module", info: ModelInfo, spec: ExportSpec, final_path: Path, quant_info: dict[str, Any]) -> dict[str, Any]:
        """The ONNX fields with `precision_effective` (fp16 for the 16-bit tier), the lint's verdict and the
        TensorRT-RTX check; a lint violation or a parser / builder rejection fails the export."""
        import onnx

        fields = super().manifest_fields(model, info, spec, final_path, quant_info)
        fields["precision_effective"] = {"fp32": "fp32", "int16": "fp16", "int8": "int8"}[spec.precision]
        problems = lint(onnx.load(str(final_path)))
        if problems:
            raise ArtifactError(f"{info.name} {spec.precision}: the TensorRT artifact breaks TensorRT's rules: " + "; ".join(problems[:5])
                                + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
        fields["tensorrt_lint"] = "passed"
        fields["tensorrt_check"] = rtx_check(final_path) if rtx_available() else {"checked_by": "not checked: the tensorrt-rtx extra is not installed"}
        return fields

    def versions(self) -> dict[str, str]:
        out = super().versions()
        if rtx_available():
            import tensorrt_rtx_bindings

            out["tensorrt_rtx"] = tensorrt_rtx_bindings.__version__
        return out
