"""The quantized node groups of a QDQ ONNX model, and the graph surgery that leaves chosen groups in float.

A group is what one quantization decision of ONNX Runtime's QDQ quantizer put into the graph:

- an activation group: a QuantizeLinear on a computed tensor and the DequantizeLinear node(s) reading it;
- a weight group: the DequantizeLinear of a layer's integer weight, with the int32 bias DequantizeLinear of
  the same layer (the bias scale is input scale x weight scale: the two go back to float together).

`with_fallback` removes the chosen groups and restores what the fp32 graph computed there: the float weights
(from the fp32 model, the quantizer's input) and any activation the quantizer folded into the
QuantizeLinear (ONNX Runtime drops a Relu / Clip whose output is quantized: the Q's range clips it), so that
a model with every group in float computes what the fp32 model computes. The result is a normal ONNX model
(some layers in QDQ, some in float) that ONNX Runtime runs and `graph.OnnxGraphModule` simulates.

A float weight cannot stay float in ONNX Runtime while its Conv / Gemm still reads a per-tensor
DequantizeLinear: ONNX Runtime's `WeightBiasQuantization` graph transformer (basic level, on by default since
1.20) re-quantizes it at load time to 8 bits per tensor (measured here: a depthwise weight returned to float
that way flipped 3 of 40 EfficientNet-Lite0 top-1s that the int8 artifact kept). Such a weight goes back as
int16 per-channel symmetric instead (`WEIGHT_FALLBACK_BITS`), with its int32 bias re-scaled to input scale x
the int16 weight scale, which ONNX Runtime leaves alone; `fallback_precisions` says which groups are where.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgecam.errors import ArtifactError

# activations ONNX Runtime's QDQ quantizer folds into a following QuantizeLinear (onnxruntime/quantization/
# operators/activation.py, QDQRemovableActivation)
FOLDABLE_ACTIVATIONS = ("Relu", "Clip")


@dataclass(frozen=True)
class QdqGroup:
    """One quantized node group: its name (the float tensor or weight it quantizes), kind, Q / DQ nodes, the
    op that consumes it, and its position (index of its first node's consumer in graph order)."""

    name: str
    kind: str  # "activation" | "weight"
    nodes: tuple[str, ...]
    consumer: str  # op type(s) reading the group's output, e.g. "Conv" or "Conv+Add"
    position: int
    dtype: str  # element type of the quantized tensor, e.g. "INT8"


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: n for n in graph.node for out in n.output}


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for name in n.input:
            out.setdefault(name, []).append(n)
    return out


def _dtype(inits: dict[str, onnx.TensorProto], name: str) -> str:
    t = inits.get(name)
    return onnx.TensorProto.DataType.Name(t.data_type) if t is not None else "?"


def qdq_groups(model: onnx.ModelProto) -> list[QdqGroup]:
    """Every quantized node group of `model`, in graph order (see the module docstring)."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consumers = _consumers(g)
    order = {n.name: i for i, n in enumerate(g.node)}
    names = [n.name for n in g.node]
    if len(set(names)) != len(names) or "" in names:
        raise ArtifactError("the QDQ model's nodes need unique, non-empty names to be grouped")
    groups: list[QdqGroup] = []
    grouped_bias: set[str] = set()
    by_scale: dict[tuple[str, ...], list[onnx.NodeProto]] = {}
    for n in g.node:  # one activation group per (scale, zero point): ONNX Runtime gives a MaxPool / Reshape output
        # its input's scale, a lossless re-quantization that belongs to the same decision
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits:
            by_scale.setdefault(tuple(n.input[1:3]), []).append(n)
    for qs in by_scale.values():
        dqs = [c for q in qs for c in consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear"]
        readers = [c for dq in dqs for c in consumers.get(dq.output[0], [])]
        src = qs[0].input[0]
        name = src[: -len("_QuantizeLinear_Input")] if src.endswith("_QuantizeLinear_Input") else src
        zp = qs[0].input[2] if len(qs[0].input) > 2 else ""
        groups.append(QdqGroup(name, "activation", tuple(n.name for q in qs for n in (q, *[d for d in dqs if d.input[0] == q.output[0]])),
                               "+".join(sorted({r.op_type for r in readers})) or "output", min([order[q.name] for q in qs]), _dtype(inits, zp)))
    for n in g.node:
        if n.op_type != "DequantizeLinear" or n.input[0] not in inits or inits[n.input[0]].data_type == onnx.TensorProto.INT32:
            continue
        readers = consumers.get(n.output[0], [])
        nodes = [n.name]
        for layer in readers:  # the layer's int32 bias DQ goes with its weight
            if len(layer.input) > 2 and layer.input[2]:
                bias_dq = _producers(g).get(layer.input[2])
                if bias_dq is not None and bias_dq.op_type == "DequantizeLinear" and bias_dq.input[0] in inits:
                    nodes.append(bias_dq.name)
                    grouped_bias.add(bias_dq.name)
        qname = n.input[0]
        name = qname[: -len("_quantized")] if qname.endswith("_quantized") else qname
        groups.append(QdqGroup(name, "weight", tuple(nodes), "+".join(sorted({r.op_type for r in readers})), min(order[r.name] for r in readers) if readers else order[n.name],
                               _dtype(inits, qname)))
    for n in g.node:  # an int32 bias whose weight is float: a group of its own
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].data_type == onnx.TensorProto.INT32 and n.name not in grouped_bias:
            readers = consumers.get(n.output[0], [])
            qname = n.input[0]
            groups.append(QdqGroup(qname[: -len("_quantized")] if qname.endswith("_quantized") else qname, "weight", (n.name,),
                                   "+".join(sorted({r.op_type for r in readers})), min((order[r.name] for r in readers), default=order[n.name]), "INT32"))
    groups.sort(key=lambda q: (q.position, q.kind, q.name))
    seen: set[str] = set()
    for q in groups:
        if q.name in seen:
            raise ArtifactError(f"two quantized groups of the model are both named {q.name!r}")
        seen.add(q.name)
    return groups


def _fresh(name: str, taken: set[str]) -> str:
    out, i = name, 0
    while out in taken:
        i += 1
        out = f"{name}_{i}"
    taken.add(out)
    return out


WEIGHT_FALLBACK_BITS = 16
_QMAX16 = 2 ** (WEIGHT_FALLBACK_BITS - 1) - 1


def with_fallback(model: onnx.ModelProto, fp32: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A copy of the QDQ `model` with the groups named in `names` in higher precision, restored from `fp32`
    (the float model the quantizer started from): activations in float, weights in float or, where their layer
    still reads a per-tensor DequantizeLinear, int16 (module docstring). Unknown names raise, listing the
    groups."""
    groups = {q.name: q for q in qdq_groups(model)}
    wanted = list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in groups]
    if unknown:
        raise ArtifactError(f"no quantized group named {', '.join(map(repr, unknown))}; the model's groups: {', '.join(groups)}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    fp_inits = {i.name: i for i in fp32.graph.initializer}
    fp_prod = _producers(fp32.graph)
    by_name = {n.name: n for n in g.node}
    inits = {i.name: i for i in g.initializer}
    taken = {t for n in g.node for t in (*n.input, *n.output)} | set(inits) | {n.name for n in g.node}
    drop: set[str] = set()
    new_nodes: dict[str, list[onnx.NodeProto]] = {}  # inserted after the named node
    new_inits: list[onnx.TensorProto] = []
    for gname in wanted:
        q = groups[gname]
        if q.kind == "weight":
            for node_name in q.nodes:
                dq = by_name[node_name]
                base = dq.input[0][: -len("_quantized")] if dq.input[0].endswith("_quantized") else dq.input[0]
                if base not in fp_inits:
                    raise ArtifactError(f"group {gname!r}: the fp32 model has no initializer {base!r} to restore")
                new_inits.append(numpy_helper.from_array(numpy_helper.to_array(fp_inits[base]).astype(np.float32), dq.output[0]))
                drop.add(node_name)
            continue
        for qnode in (by_name[n] for n in q.nodes if by_name[n].op_type == "QuantizeLinear"):
            dqs = [by_name[n] for n in q.nodes if by_name[n].op_type == "DequantizeLinear" and by_name[n].input[0] == qnode.output[0]]
            _restore_activation(gname, qnode, dqs, g, fp_prod, fp_inits, taken, new_nodes, new_inits, drop)
    kept: list[onnx.NodeProto] = []
    for n in g.node:
        if n.name not in drop:
            kept.append(n)
        kept += new_nodes.get(n.name, [])
    del g.node[:]
    g.node.extend(_topological(kept, {i.name for i in g.input} | set(inits) | {i.name for i in new_inits}))
    replaced = {i.name for i in new_inits}
    used = {t for n in g.node for t in n.input}
    keep_inits = [i for i in g.initializer if i.name in used and i.name not in replaced]
    del g.initializer[:]
    g.initializer.extend(keep_inits + new_inits)
    del g.value_info[:]  # shapes / types of removed tensors would go stale; ONNX Runtime re-infers them
    _int16_where_requantized(g, {i.name for i in new_inits}, fp_inits, taken)
    return out


def _int16_where_requantized(g: onnx.GraphProto, restored: set[str], fp_inits: dict[str, onnx.TensorProto], taken: set[str]) -> None:
    """Restored float weights of Conv / ConvTranspose / Gemm layers that read a per-tensor DequantizeLinear (what
    ONNX Runtime's WeightBiasQuantization re-quantizes: onnxruntime/core/optimizer/qdq_transformer/
    weight_bias_quantization.cc) become int16 per-channel symmetric DequantizeLinear on the output channels, their
    restored float bias int32 at input scale x weight scale. Gemm(transB=0) weights are [K, N]: their output
    channels are axis 1."""
    producers = _producers(g)
    inits = {i.name: i for i in g.initializer}
    for layer in list(g.node):
        if layer.op_type not in ("Conv", "ConvTranspose", "Gemm") or len(layer.input) < 2 or layer.input[1] not in restored:
            continue
        src = producers.get(layer.input[0])
        if src is None or src.op_type != "DequantizeLinear" or src.input[1] not in inits or numpy_helper.to_array(inits[src.input[1]]).size != 1:
            continue  # ONNX Runtime leaves this float weight float
        if layer.op_type == "ConvTranspose":
            raise ArtifactError(f"layer {layer.name!r} (ConvTranspose): ONNX Runtime would re-quantize its float weight to 8 bits, and the int16 "
                                "fallback is built for Conv and Gemm weights only")
        axis = 1 if layer.op_type == "Gemm" and not next((a.i for a in layer.attribute if a.name == "transB"), 0) else 0
        w = numpy_helper.to_array(inits[layer.input[1]]).astype(np.float64)
        amax = np.abs(np.moveaxis(w, axis, 0)).reshape(w.shape[axis], -1).max(1)
        scale = np.where(amax > 0, amax, 1.0) / _QMAX16
        has_bias = len(layer.input) > 2 and layer.input[2] in restored
        if has_bias:  # a channel with tiny weights and a large bias: widen its weight scale until the bias fits
            # in half the int32 range (a margin of our choosing; ONNX Runtime's quantizer widens to the full range)
            in_scale = float(numpy_helper.to_array(inits[src.input[1]]))  # per-tensor activation scale
            bias = numpy_helper.to_array(inits[layer.input[2]]).astype(np.float64)
            scale = np.maximum(scale, np.abs(bias) / (in_scale * (2**30)))
        scale = scale.astype(np.float32)
        shape = tuple(-1 if i == axis else 1 for i in range(w.ndim))
        q = np.clip(np.round(w / scale.reshape(shape)), -_QMAX16, _QMAX16).astype(np.int16)
        wname = layer.input[1]
        parts = [_fresh(f"{wname}_int16{suffix}", taken) for suffix in ("", "_scale", "_zero_point")]
        new = [numpy_helper.from_array(q, parts[0]), numpy_helper.from_array(scale, parts[1]), numpy_helper.from_array(np.zeros(len(scale), np.int16), parts[2])]
        dq_out = _fresh(f"{wname}_int16_DequantizeLinear_Output", taken)
        nodes = [helper.make_node("DequantizeLinear", parts, [dq_out], name=_fresh(f"{wname}_int16_DequantizeLinear", taken), axis=axis)]
        if has_bias:
            bscale = (scale.astype(np.float64) * in_scale).astype(np.float32)
            qb = np.clip(np.round(bias / bscale.astype(np.float64)), -(2**31 - 1), 2**31 - 1)
            bname = layer.input[2]
            bparts = [_fresh(f"{bname}_int32{suffix}", taken) for suffix in ("", "_scale", "_zero_point")]
            new += [numpy_helper.from_array(qb.astype(np.int32), bparts[0]), numpy_helper.from_array(bscale, bparts[1]),
                    numpy_helper.from_array(np.zeros(len(bscale), np.int32), bparts[2])]
            b_out = _fresh(f"{bname}_int32_DequantizeLinear_Output", taken)
            nodes.append(helper.make_node("DequantizeLinear", bparts, [b_out], name=_fresh(f"{bname}_int32_DequantizeLinear", taken), axis=0))
            layer.input[2] = b_out
        layer.input[1] = dq_out
        at = list(g.node).index(layer)
        for i, n in enumerate(nodes):
            g.node.insert(at + i, n)
        g.initializer.extend(new)
    used = {t for n in g.node for t in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)


def fallback_precisions(planned: onnx.ModelProto, names: Iterable[str], base: onnx.ModelProto) -> dict[str, str]:
    """Per group of `base` named in `names`: where `with_fallback` put it in `planned` ("float" or "int16")."""
    groups = {q.name: q for q in qdq_groups(base)}
    outputs = {n.name: n.output[0] for n in base.graph.node}
    int16 = {i.name for i in planned.graph.initializer if i.data_type == onnx.TensorProto.INT16}
    return {n: "int16" if groups[n].kind == "weight" and f"{outputs[groups[n].nodes[0]]}_int16" in int16 else "float" for n in names}


def _restore_activation(gname: str, qnode: onnx.NodeProto, dqs: list[onnx.NodeProto], g: onnx.GraphProto, fp_prod: dict[str, onnx.NodeProto],
                        fp_inits: dict[str, onnx.TensorProto], taken: set[str], new_nodes: dict[str, list[onnx.NodeProto]], new_inits: list[onnx.TensorProto],
                        drop: set[str]) -> None:
    """Replace one QuantizeLinear and its DequantizeLinear(s) by the float tensor, re-inserting the activation
    the quantizer folded into the Q (the fp32 graph's Relu / Clip that produced the tensor)."""
    src = qnode.input[0]
    fp_node = _folded(qnode, _producers(g), fp_prod)
    if fp_node is not None:
        # the quantizer folded this activation into the QuantizeLinear: put it back
        act_out = _fresh(src + "_float", taken)
        extra = []
        for inp in fp_node.input[1:]:
            if inp and inp in fp_inits:
                renamed = _fresh(inp + "_restored", taken)
                new_inits.append(numpy_helper.from_array(numpy_helper.to_array(fp_inits[inp]), renamed))
                extra.append(renamed)
            elif inp:
                raise ArtifactError(f"group {gname!r}: the folded {fp_node.op_type}'s input {inp!r} is not a constant of the fp32 model")
            else:
                extra.append("")
        act = helper.make_node(fp_node.op_type, [src, *extra], [act_out], name=_fresh(f"{fp_node.name or fp_node.op_type}_restored", taken))
        act.attribute.extend(fp_node.attribute)
        new_nodes.setdefault(qnode.name, []).append(act)
        src = act_out
    for dq in dqs:  # an Identity keeps the DQ's output name (a graph output such as `features` stays named)
        new_nodes.setdefault(qnode.name, []).append(helper.make_node("Identity", [src], [dq.output[0]], name=_fresh(dq.name + "_float", taken)))
        drop.add(dq.name)
    drop.add(qnode.name)


def _folded(qnode: onnx.NodeProto, producers: dict[str, onnx.NodeProto], fp_prod: dict[str, onnx.NodeProto]) -> onnx.NodeProto | None:
    """The fp32 graph's Relu / Clip that the quantizer folded into `qnode` (its tensor's fp32 producer is one,
    the QDQ graph's is not), else None."""
    src = qnode.input[0]
    out_name = src[: -len("_QuantizeLinear_Input")] if src.endswith("_QuantizeLinear_Input") else src
    fp_node = fp_prod.get(out_name if out_name in fp_prod else src)
    producer = producers.get(src)
    if fp_node is not None and fp_node.op_type in FOLDABLE_ACTIVATIONS and (producer is None or producer.op_type != fp_node.op_type):
        return fp_node
    return None


def folded_activations(model: onnx.ModelProto, fp32: onnx.ModelProto) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Per activation group whose Relu / Clip the quantizer folded into its QuantizeLinear: that activation as
    a numpy function (the Q input is the tensor before it: an SQNR of Q input vs DQ output would count the
    clipped negatives as noise)."""
    fp_prod, fp_inits = _producers(fp32.graph), {i.name: numpy_helper.to_array(i) for i in fp32.graph.initializer}
    producers = _producers(model.graph)
    by_name = {n.name: n for n in model.graph.node}
    out: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    for q in qdq_groups(model):
        if q.kind != "activation":
            continue
        node = _folded(by_name[q.nodes[0]], producers, fp_prod)
        if node is None:
            continue
        if node.op_type == "Relu":
            out[q.name] = lambda x: np.maximum(x, 0)
        else:  # Clip(x, min, max): the bounds are inputs (opset >= 11), constants of the fp32 model
            bounds = [float(fp_inits[n]) if n in fp_inits else None for n in [*node.input[1:3], "", ""][:2]]
            out[q.name] = lambda x, lo=bounds[0], hi=bounds[1]: np.clip(x, lo, hi)
    return out


def _topological(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """`nodes` in an order where every input is produced first (ONNX requires it; inserted nodes may not be)."""
    ready = set(available) | {""}
    pending = list(nodes)
    out: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                out.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ArtifactError(f"graph surgery left node {rest[0].name!r} with an input nobody produces: {[i for i in rest[0].input if i not in ready]}")
        pending = rest
    return out


def float_groups_record(model: onnx.ModelProto, names: Iterable[str], planned: onnx.ModelProto) -> list[dict[str, object]]:
    """What a manifest records of the groups in higher precision: name, kind, consumer op, position, the base
    artifact's dtype and where the plan put it (`fallback`: "float" or "int16")."""
    groups = {q.name: q for q in qdq_groups(model)}
    names = list(names)
    where = fallback_precisions(planned, names, model)
    return [{"name": n, "kind": groups[n].kind, "consumer": groups[n].consumer, "position": groups[n].position, "dtype": groups[n].dtype,
             "fallback": where[n]} for n in names]
