"""Run an ONNX graph (fp32 or QDQ) as a differentiable PyTorch module.

Quantization-aware training in edgecam happens on the very graph that will be deployed: the QDQ ONNX model
that ONNX Runtime's quantizer laid out (which tensors carry QuantizeLinear / DequantizeLinear, which
Relu / Clip it folded away) is interpreted op by op in PyTorch, with

- every activation QuantizeLinear -> DequantizeLinear pair turned into a fake-quant whose scale is a learned
  parameter (LSQ, Esser et al. 2020: round with a straight-through estimator, so d/ds flows through x/s and
  the final * s), the zero point fixed at the calibrated value. The scale is learned as log(s): int16 scales
  are ~1e-4, and an optimiser step must change them relatively, not by an absolute amount;
- every weight DequantizeLinear of an integer initializer turned into per-channel symmetric fake-quant of a
  float parameter, with the scale ONNX Runtime itself uses: max|w| / qmax over the channel's axis
  (`onnxruntime.quantization.quant_utils.compute_scale_zp`, symmetric range [-qmax, qmax]);
- everything else evaluated with the torch op of the same semantics (ONNX operator spec).

Writing the learned parameters back into the QDQ model (`write_back`) therefore yields an artifact whose
integer arithmetic is the one simulated during training, by construction; the "sim" CAM mode runs here too.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from edgecam.errors import ArtifactError

QRANGE = {  # ONNX element type -> (qmin, qmax) of the full range, used for activations
    onnx.TensorProto.INT8: (-128, 127),
    onnx.TensorProto.UINT8: (0, 255),
    onnx.TensorProto.INT16: (-32768, 32767),
    onnx.TensorProto.UINT16: (0, 65535),
}


WEIGHT_QMAX_KEY = "edgecam.weight_qmax"  # metadata_props key prefix: "<key>.int8" -> symmetric qmax of int8 weights

# int32 bias bound: 2**31 - 128 is the largest float32 below 2**31 (float32(2**31 - 1) rounds UP to 2**31,
# which wraps to -2**31 when cast)
INT32_MAX = float(2**31 - 2**7)
INT32_MIN = -INT32_MAX


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round() forward, identity backward (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def param_key(name: str) -> str:
    """Tensor name -> a valid nn.Module attribute name."""
    return "t_" + "".join(c if c.isalnum() else "_" for c in name)


def _pads(pads: list[int] | None, n: int = 2) -> tuple[list[int], bool]:
    """ONNX pads [b1, b2, e1, e2] -> F.pad order [b2, e2, b1, e1]; also whether begin == end."""
    pads = list(pads or [0] * (2 * n))
    begins, ends = pads[:n], pads[n:]
    torch_pad: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends)):
        torch_pad += [b, e]
    return torch_pad, begins == ends


def _float_original(qname: str, node: onnx.NodeProto, inits: dict[str, np.ndarray], fp32_weights: dict[str, np.ndarray]) -> np.ndarray:
    """Float values behind a quantized initializer: the unquantized original (ORT names the integer tensor
    `<name>_quantized`), else the dequantized integers."""
    base = qname[: -len("_quantized")] if qname.endswith("_quantized") else qname
    values = fp32_weights.get(base)
    if values is None:
        s = inits[node.input[1]].astype(np.float32)
        zp = inits[node.input[2]].astype(np.float32) if len(node.input) > 2 and node.input[2] else np.float32(0.0)
        shape = [1] * inits[qname].ndim
        if s.ndim:
            shape[int(_attrs(node).get("axis", 1))] = -1
        values = (inits[qname].astype(np.float32) - np.reshape(zp, shape)) * np.reshape(s, shape)
    return np.array(values, dtype=np.float32)


class OnnxGraphModule(nn.Module):
    """Evaluate an ONNX graph with torch ops; QDQ pairs become trainable fake-quant (see module docstring).

    `fp32_weights` maps a weight's original name to its float values; ONNX Runtime names the integer
    initializer `<name>_quantized`, so the float parameter resumes from the unquantized weights.
    """

    def __init__(self, model: onnx.ModelProto, fp32_weights: dict[str, np.ndarray] | None = None, name: str = "model") -> None:
        super().__init__()
        self.name = name
        self.graph = model.graph
        self.nodes = list(model.graph.node)
        self.input_names = [i.name for i in model.graph.input]
        self.output_names = [o.name for o in model.graph.output]
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        fp32_weights = fp32_weights or {}
        # symmetric weight range per integer type, e.g. {"int8": 64} for ORT's reduce_range (7-bit weights)
        weight_qmax = {k[len(WEIGHT_QMAX_KEY) + 1 :]: int(p.value) for p in model.metadata_props for k in [p.key] if k.startswith(WEIGHT_QMAX_KEY + ".")}
        self.params = nn.ParameterDict()
        self.consts: dict[str, torch.Tensor] = {}
        self.weight_dq: dict[str, tuple[str, int, int]] = {}  # quantized init -> (param key, axis, qmax)
        self.act_scales: set[str] = set()
        self.bias_dq: dict[str, tuple[str, str, str]] = {}  # int32 bias init -> (param key, input scale, weight init)
        trainable_float: set[str] = set()
        producer = {out: n for n in self.nodes for out in n.output}
        for node in self.nodes:
            if node.op_type in ("Conv", "Gemm", "ConvTranspose"):
                trainable_float.update(n for n in node.input[1:3] if n in inits and inits[n].dtype == np.float32)
            if node.op_type == "QuantizeLinear" and node.input[0] not in inits:
                self.act_scales.add(node.input[1])
            if node.op_type == "DequantizeLinear" and node.input[0] in inits:
                qname = node.input[0]
                if inits[qname].dtype != np.int32:
                    self.params[param_key(qname)] = nn.Parameter(torch.from_numpy(_float_original(qname, node, inits, fp32_weights)))
                    qmin, qmax = QRANGE[onnx.helper.np_dtype_to_tensor_dtype(inits[qname].dtype)]
                    qmax = weight_qmax.get(str(inits[qname].dtype), min(-qmin, qmax))
                    self.weight_dq[qname] = (param_key(qname), int(_attrs(node).get("axis", 1)), qmax)
        for node in self.nodes:  # int32 biases: scale = input scale x weight scale (ORT quantize_bias_static)
            if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 and node.input[2] in producer:
                x_dq, w_dq, b_dq = (producer.get(n) for n in node.input[:3])
                if b_dq is None or b_dq.op_type != "DequantizeLinear" or b_dq.input[0] not in inits or inits[b_dq.input[0]].dtype != np.int32:
                    continue
                if x_dq is None or x_dq.op_type != "DequantizeLinear" or w_dq is None or w_dq.input[0] not in self.weight_dq:
                    continue  # a layer whose input or weight a mixed-precision plan left in float: the stored int32 values stand
                self.bias_dq[b_dq.input[0]] = (param_key(b_dq.input[0]), x_dq.input[1], w_dq.input[0])
                self.params[param_key(b_dq.input[0])] = nn.Parameter(torch.from_numpy(_float_original(b_dq.input[0], b_dq, inits, fp32_weights)))
        for name in trainable_float:
            self.params[param_key(name)] = nn.Parameter(torch.from_numpy(np.array(inits[name], dtype=np.float32)))
        for name in self.act_scales:  # learned in the log domain (see module docstring)
            self.params[param_key(name)] = nn.Parameter(torch.from_numpy(np.asarray(np.log(np.array(inits[name], dtype=np.float32)), dtype=np.float32)))
        for name, arr in inits.items():
            if param_key(name) not in self.params:
                self.consts[name] = torch.from_numpy(np.array(arr))
        self.quant: bool = True  # False: QDQ pairs pass values through (the model's float behaviour)

    # -- tensors -------------------------------------------------------------------------------------------
    def _get(self, env: dict[str, torch.Tensor], name: str) -> torch.Tensor | None:
        if name == "":
            return None
        if name in env:
            return env[name]
        key = param_key(name)
        if key in self.params:
            return self.params[key].exp() if name in self.act_scales else self.params[key]
        if name in self.consts:
            return self.consts[name]
        raise ArtifactError(f"{self.name}: tensor {name!r} is used before it is produced")

    def forward(self, x: torch.Tensor, keep: set[str] | None = None) -> dict[str, torch.Tensor]:
        """Run the graph on input `x`; returns the graph outputs (and any tensor named in `keep`)."""
        env: dict[str, torch.Tensor] = {self.input_names[0]: x}
        for node in self.nodes:
            fn = _OPS.get(node.op_type)
            if fn is None:
                raise ArtifactError(
                    f"{self.name}: ONNX op {node.op_type!r} (node {node.name!r}) is not supported by edgecam's "
                    f"graph simulator; supported ops: {', '.join(sorted(_OPS))}"
                )
            outs = fn(self, node, [self._get(env, n) for n in node.input], _attrs(node))
            for name, value in zip(node.output, outs if isinstance(outs, tuple) else (outs,)):
                env[name] = value
        wanted = list(self.output_names) + sorted(keep or ())
        return {n: env[n] for n in wanted}

    # -- quantization ---------------------------------------------------------------------------------------
    def weight_scale(self, qname: str) -> torch.Tensor:
        """Per-channel symmetric scale of a quantized weight: max|w| / qmax (ORT's compute_scale_zp)."""
        key, axis, qmax = self.weight_dq[qname]
        w = self.params[key].detach()
        if w.ndim == 0:
            amax = w.abs()
        else:
            dims = [d for d in range(w.ndim) if d != axis]
            amax = w.abs().amax(dim=dims) if dims else w.abs()
        scale = amax / qmax
        return torch.where(scale > 0, scale, torch.ones_like(scale))

    def bias_scale(self, qname: str) -> torch.Tensor:
        """Scale of an int32 bias: its layer's input scale x weight scale (what QLinearConv assumes), raised
        where that would overflow int32 (int16 layers: s_in x s_w ~ 1e-9; ORT runs them in fp32 anyway)."""
        key_b, x_scale, w_qname = self.bias_dq[qname]
        sx = self.params[param_key(x_scale)].exp() if x_scale in self.act_scales else self.consts[x_scale].float()
        product = (sx * self.weight_scale(w_qname)).detach()
        return torch.maximum(product, self.params[key_b].detach().abs() / INT32_MAX)

    def quantized_weight(self, qname: str) -> tuple[np.ndarray, np.ndarray]:
        """(integer weight, float32 scale) as they are written into the QDQ model."""
        key, axis, qmax = self.weight_dq[qname]
        w = self.params[key].detach()
        s = self.weight_scale(qname)
        shape = [1] * w.ndim
        if s.ndim:
            shape[axis] = -1
        q = torch.clamp(torch.round(w / s.reshape(shape)), -qmax, qmax)
        return q.numpy(), s.numpy().astype(np.float32)

    def write_back(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """Copy of `model` with the learned weights, weight scales and activation scales written in."""
        out = onnx.ModelProto()
        out.CopyFrom(model)
        by_name = {i.name: i for i in out.graph.initializer}
        scale_of = {n.input[0]: n.input[1] for n in out.graph.node if n.op_type == "DequantizeLinear"}
        for qname in self.bias_dq:
            b = self.params[param_key(qname)].detach()
            sb = self.bias_scale(qname)
            q = torch.clamp(torch.round(b / sb), INT32_MIN, INT32_MAX).numpy().astype(np.int32)
            by_name[qname].CopyFrom(numpy_helper.from_array(q, qname))
            sname = scale_of[qname]
            by_name[sname].CopyFrom(numpy_helper.from_array(sb.numpy().astype(np.float32).reshape(numpy_helper.to_array(by_name[sname]).shape), sname))
        for qname in self.weight_dq:
            q, s = self.quantized_weight(qname)
            old = numpy_helper.to_array(by_name[qname])
            by_name[qname].CopyFrom(numpy_helper.from_array(q.astype(old.dtype), qname))
            sname = scale_of[qname]
            by_name[sname].CopyFrom(numpy_helper.from_array(s.reshape(numpy_helper.to_array(by_name[sname]).shape), sname))
        for name in by_name:
            if name in self.weight_dq or name in self.bias_dq or param_key(name) not in self.params:
                continue
            value = self.scale(name) if name in self.act_scales else self.params[param_key(name)].detach().numpy()
            by_name[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
        return out

    def scale(self, name: str) -> np.ndarray:
        """The current value of an activation scale (float32, as stored in the QDQ model)."""
        return self.params[param_key(name)].detach().exp().numpy().astype(np.float32)


# -- op implementations (ONNX operator spec semantics) -----------------------------------------------------
Op = Callable[[OnnxGraphModule, onnx.NodeProto, list, dict], Any]
_OPS: dict[str, Op] = {}


def _op(*names: str) -> Callable[[Op], Op]:
    def deco(fn: Op) -> Op:
        for n in names:
            _OPS[n] = fn
        return fn

    return deco


@_op("QuantizeLinear")
def _quantize(m: OnnxGraphModule, node: onnx.NodeProto, x: list, a: dict) -> torch.Tensor:
    """y = saturate(round(x / s) + zp); kept in float so gradients flow (STE)."""
    if not m.quant:
        return x[0]
    data, s, zp = x[0], x[1], x[2]
    qmin, qmax = QRANGE[onnx.helper.np_dtype_to_tensor_dtype(zp.numpy().dtype)]
    s = torch.clamp(s, min=1e-12)
    return torch.clamp(round_ste(data / s) + zp.float(), qmin, qmax)


@_op("DequantizeLinear")
def _dequantize(m: OnnxGraphModule, node: onnx.NodeProto, x: list, a: dict) -> torch.Tensor:
    """x = (q - zp) * s; for an integer weight initializer, per-channel symmetric fake-quant of its float param."""
    qname = node.input[0]
    if qname in m.bias_dq:
        b = m.params[m.bias_dq[qname][0]]
        if not m.quant:
            return b
        sb = m.bias_scale(qname)
        return torch.clamp(round_ste(b / sb), INT32_MIN, INT32_MAX) * sb
    if qname in m.weight_dq:
        key, axis, qmax = m.weight_dq[qname]
        w = m.params[key]
        if not m.quant:
            return w
        s = m.weight_scale(qname)
        shape = [1] * w.ndim
        if s.ndim:
            shape[axis] = -1
        s = s.reshape(shape)
        return torch.clamp(round_ste(w / s), -qmax, qmax) * s
    if not m.quant and node.input[0] not in m.consts:
        return x[0]
    data, s = x[0], x[1]
    zp = x[2] if len(x) > 2 and x[2] is not None else torch.zeros((), dtype=torch.int32)
    axis = int(a.get("axis", 1))
    if s.ndim:
        shape = [1] * data.ndim
        shape[axis] = -1
        s, zp = s.reshape(shape), zp.reshape(shape)
    return (data.float() - zp.float()) * s


@_op("Conv")
def _conv(m: OnnxGraphModule, node: onnx.NodeProto, x: list, a: dict) -> torch.Tensor:
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ArtifactError(f"{m.name}: Conv {node.name!r} uses auto_pad, which the simulator does not support")
    torch_pad, sym = _pads(a.get("pads"))
    data = x[0] if sym else F.pad(x[0], torch_pad)
    padding = tuple(a.get("pads", [0, 0, 0, 0])[:2]) if sym else 0
    return F.conv2d(data, x[1], x[2] if len(x) > 2 else None, tuple(a.get("strides", [1, 1])), padding, tuple(a.get("dilations", [1, 1])), int(a.get("group", 1)))


@_op("Gemm")
def _gemm(m: OnnxGraphModule, node: onnx.NodeProto, x: list, a: dict) -> torch.Tensor:
    A = x[0].transpose(-1, -2) if a.get("transA", 0) else x[0]
    B = x[1].transpose(-1, -2) if a.get("transB", 0) else x[1]
    y = a.get("alpha", 1.0) * (A @ B)
    return y + a.get("beta", 1.0) * x[2] if len(x) > 2 and x[2] is not None else y


@_op("MatMul")
def _matmul(m: OnnxGraphModule, node: onnx.NodeProto, x: list, a: dict) -> torch.Tensor:
    return x[0] @ x[1]


@_op("Relu")
def _relu(m: OnnxGraphModule, node: onnx.NodeProto, x: list, a: dict) -> torch.Tensor:
    return F.relu(x[0])


@_op("Clip")
def _clip(m: OnnxGraphModule, node: onnx.NodeProto, x: list, a: dict) -> torch.Tensor:
    lo = x[1] if len(x) > 1 and x[1] is not None else a.get("min")
    hi = x[2] if len(x) > 2 and x[2] is not None else a.get("max")
    return torch.clamp(x[0], None if lo is None else float(lo), None if hi is None else float(hi))


@_op("Sigmoid")
def _sigmoid(m: OnnxGraphModule, node: onnx.NodeProto, x: list, a: dict) -> torch.Tensor:
    return torch.sigmoid(x[0])


@_op("HardSigmoid")
def _hardsigmoid(m: OnnxGraphModule, node: onnx.NodeProto, x: list, a: dict) -> torch.Tensor:
    return torch.clamp(a.get("alpha", 0.2) * x[0] + a.get("beta", 0.5), 0.0, 1.0)


@_op("Add")
def _add(m: OnnxGraphModule, node: onnx.NodeProto, x: list, a: dict) -> torch.Tensor:
    return x[0] + x[1]


@_op("Sub")
def _sub(m: OnnxGraphModule, node: onnx.NodeProto, x: list, a: dict) -> torch.Tensor:
    return x[0] - x[1]


@_op("Mul")
def _mul(m: OnnxGraphModule, node: onnx.NodeProto, x: list, a: dict) -> torch.Tensor:
    return x[0] * x[1]


@_op("Div")
def _div(m: OnnxGraphModule, node: onnx.NodeProto, x: list, a: dict) -> torch.Tensor:
    return x[0] / x[1]


@_op("MaxPool")
def _maxpool(m: OnnxGraphModule, node: onnx.NodeProto, x: list, a: dict) -> torch.Tensor:
    torch_pad, sym = _pads(a.get("pads"))
    data = x[0] if sym else F.pad(x[0], torch_pad, value=float("-inf"))
    padding = tuple(a.get("pads", [0, 0, 0, 0])[:2]) if sym else 0
    return F.max_pool2d(data, tuple(a["kernel_shape"]), tuple(a.get("strides", [1, 1])), padding, tuple(a.get("dilations", [1, 1])), bool(a.get("ceil_mode", 0)))


@_op("AveragePool")
def _avgpool(m: OnnxGraphModule, node: onnx.NodeProto, x: list, a: dict) -> torch.Tensor:
    torch_pad, sym = _pads(a.get("pads"))
    if not sym:
        raise ArtifactError(f"{m.name}: AveragePool {node.name!r} with asymmetric pads is not supported")
    padding = tuple(a.get("pads", [0, 0, 0, 0])[:2])
    return F.avg_pool2d(x[0], tuple(a["kernel_shape"]), tuple(a.get("strides", [1, 1])), padding, bool(a.get("ceil_mode", 0)), bool(a.get("count_include_pad", 0)))


@_op("GlobalAveragePool")
def _gap(m: OnnxGraphModule, node: onnx.NodeProto, x: list, a: dict) -> torch.Tensor:
    return x[0].mean(dim=(2, 3), keepdim=True)


@_op("ReduceMean")
def _reducemean(m: OnnxGraphModule, node: onnx.NodeProto, x: list, a: dict) -> torch.Tensor:
    axes = x[1].tolist() if len(x) > 1 and x[1] is not None else a.get("axes")
    keep = bool(a.get("keepdims", 1))
    if axes is None:
        return x[0].mean() if not keep else x[0].mean(dim=tuple(range(x[0].ndim)), keepdim=True)
    return x[0].mean(dim=tuple(int(v) for v in axes), keepdim=keep)


@_op("Flatten")
def _flatten(m: OnnxGraphModule, node: onnx.NodeProto, x: list, a: dict) -> torch.Tensor:
    axis = int(a.get("axis", 1))
    return x[0].reshape(int(np.prod(x[0].shape[:axis])), -1)


@_op("Reshape")
def _reshape(m: OnnxGraphModule, node: onnx.NodeProto, x: list, a: dict) -> torch.Tensor:
    shape = [int(v) for v in x[1].tolist()]
    if not a.get("allowzero", 0):
        shape = [x[0].shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return x[0].reshape(shape)


@_op("Concat")
def _concat(m: OnnxGraphModule, node: onnx.NodeProto, x: list, a: dict) -> torch.Tensor:
    return torch.cat(x, dim=int(a["axis"]))


@_op("BatchNormalization")
def _bn(m: OnnxGraphModule, node: onnx.NodeProto, x: list, a: dict) -> torch.Tensor:
    return F.batch_norm(x[0], x[3], x[4], x[1], x[2], False, 0.0, float(a.get("epsilon", 1e-5)))


@_op("Identity", "Dropout")
def _identity(m: OnnxGraphModule, node: onnx.NodeProto, x: list, a: dict) -> torch.Tensor:
    return x[0]


@_op("Constant")
def _constant(m: OnnxGraphModule, node: onnx.NodeProto, x: list, a: dict) -> torch.Tensor:
    return torch.from_numpy(np.array(numpy_helper.to_array(a["value"])))
