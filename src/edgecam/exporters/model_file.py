"""A deployed model file (.onnx / .tflite another toolchain produced) made into an edgecam artifact (issue 34).

What an edgecam artifact has that a user's file lacks, added without changing what the file computes:
- two more outputs, by graph surgery: `logits` (the class scores before a final softmax, which such files often
  end with) and `features` (the CAM tensor: the last 4-D activation that feeds the global pool, or one the user
  names). ONNX gets two Identity nodes and graph outputs; TFLite gets the two tensors appended to the subgraph's
  outputs in the flatbuffer. `prove_surgery` runs the original and the modified file on the same inputs and
  reports the largest difference of the file's own output (0 on every file tested);
- a manifest with the input contract (layout, dtype, the input's own scale and zero point), the features' layout
  and the class offset, which the runtimes read to take and give edgecam's NCHW float arrays.

A differentiable host graph for mirror CAMs comes from an fp32 ONNX (the user's `reference`) or, when the user has
only quantized files, from a QDQ ONNX made float: weight DequantizeLinear nodes folded into float initialisers and
activation Q / DQ pairs bypassed (`float_graph`, "dequantized" reference). `host_module` converts it with onnx2torch
and wraps it to take edgecam's NCHW input.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecam.errors import ArtifactError

if TYPE_CHECKING:
    import torch

#: the outputs every edgecam artifact has (`exporters.base.two_output_module`'s names)
LOGITS, FEATURES = "logits", "features"
#: the name of the node that carries the CAM tensor in a float reference graph: its onnx2torch module is the host
#: model's CAM layer (`host_module`)
CAM_NODE = "edgecam_cam"
# ops that only move or (de)quantize values between a file's last compute op and its output
_PASSTHROUGH_ONNX = ("QuantizeLinear", "DequantizeLinear", "Reshape", "Squeeze", "Flatten", "Identity", "Cast")
_POOLS_ONNX = ("GlobalAveragePool", "AveragePool", "ReduceMean", "GlobalMaxPool")


@dataclass(frozen=True)
class Endpoints:
    """Where, in a file's graph, the class scores and the CAM tensor are."""

    output: str  # the file's own (first) output: what the surgery proof compares
    logits: str  # the class scores before a final softmax (the output itself when there is none)
    features: str  # the CAM tensor (4-D)
    features_layout: str  # "NCHW" or "NHWC"
    softmax: bool  # whether the file's output is a softmax of `logits`
    features_shape: tuple[int, ...] = ()  # per image, in `features_layout`


# ----------------------------------------------------------------------------------------------- ONNX


def _onnx_producers(graph: Any) -> dict[str, Any]:
    return {o: n for n in graph.node for o in n.output}


def _onnx_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """Static shapes of the graph's tensors (shape inference; unknown dims as -1)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - shape inference is best effort: a graph it cannot infer still runs
        inferred = model
    out: dict[str, tuple[int, ...]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]:
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
    return out


def onnx_endpoints(path: Path, model: Any, cam_tensor: str | None = None) -> Endpoints:
    """The logits and CAM tensor of an ONNX classifier: the softmax's input when the output is a softmax, and the
    input of the last global pool the logits depend on (or `cam_tensor`, which must be a 4-D tensor of the graph)."""
    graph = model.graph
    producers = _onnx_producers(graph)
    shapes = _onnx_shapes(model)
    output = graph.output[0].name
    logits, softmax = output, False
    name = output
    while name in producers and producers[name].op_type in (*_PASSTHROUGH_ONNX, "Softmax"):
        node = producers[name]
        if node.op_type == "Softmax":
            logits, softmax = node.input[0], True
            break
        name = node.input[0]
    if cam_tensor is not None:
        if cam_tensor not in producers:
            known = [o for n in graph.node for o in n.output if len(shapes.get(o, ())) == 4][-8:]
            raise ArtifactError(f"{path}: cam_tensor {cam_tensor!r} is not a tensor of the graph (last 4-D tensors: {', '.join(known) or 'none'})")
        features, layout = cam_tensor, "NCHW"  # ONNX convolutions are NCHW
    else:
        features, layout = _onnx_pool_input(path, graph, producers, logits)
    shape = shapes.get(features, ())
    if len(shape) != 4:
        raise ArtifactError(f"{path}: the CAM tensor {features!r} has shape {list(shape) or 'unknown'}, not 4-D (batch, C, H, W); name another with cam_tensor")
    return Endpoints(output, logits, features, layout, softmax, tuple(shape[1:]))


def _nearest_upstream(start: Any, producers: dict[Any, Any], wanted: Any, inputs: Any) -> Any:
    """The first node, breadth first from the producer of `start` back through what it reads (`inputs(node)`), for
    which `wanted(node)` holds; None if none does. Shared by the ONNX and TFLite graphs (tensor names / indices)."""
    seen, todo = set(), [start]
    while todo:
        tensor = todo.pop(0)
        if tensor in seen or tensor not in producers:
            continue
        seen.add(tensor)
        node = producers[tensor]
        if wanted(node):
            return node
        todo.extend(inputs(node))
    return None


def _onnx_pool_input(path: Path, graph: Any, producers: dict[str, Any], logits: str) -> tuple[str, str]:
    """The input of the global pool nearest the logits (breadth first over what they depend on), and its layout."""
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in graph.initializer}
    node = _nearest_upstream(logits, producers, lambda n: n.op_type in _POOLS_ONNX, lambda n: [i for i in n.input if i and i not in inits])
    if node is not None:
        layout = "NCHW"
        if node.op_type == "ReduceMean":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            axes = list(attrs.get("axes", []))
            if not axes and len(node.input) > 1 and node.input[1] in inits:
                axes = [int(a) for a in numpy_helper.to_array(inits[node.input[1]]).reshape(-1)]
            layout = "NHWC" if sorted(a % 4 for a in axes) == [1, 2] else "NCHW"
        return node.input[0], layout
    raise ArtifactError(f"{path}: no global pooling (GlobalAveragePool, ReduceMean, AveragePool) found before the class scores; "
                        "name the CAM tensor (a 4-D activation) with cam_tensor")


def expose_onnx(src: Path, dst: Path, ends: Endpoints) -> None:
    """Copy of `src` with two more graph outputs, `logits` and `features` (Identity nodes: nothing computed changes)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(src))
    graph = model.graph
    for out_name, tensor in ((LOGITS, ends.logits), (FEATURES, ends.features)):
        graph.node.append(helper.make_node("Identity", [tensor], [out_name], name=f"edgecam_{out_name}"))
        graph.output.append(helper.make_empty_tensor_value_info(out_name))
    onnx.save(model, str(dst))


def float_graph(src: Path, ends: Endpoints) -> tuple[Any, dict[str, Any]]:
    """The ONNX model of `src` in float, with `logits` and `features` as its outputs and the CAM tensor carried by an
    Identity node named CAM_NODE: a QDQ graph's weight DequantizeLinear nodes folded into float initialisers (scale x
    (q - zero point), per channel along `axis`), its activation QuantizeLinear / DequantizeLinear nodes bypassed (each
    reads as its float input), an integer graph input made float (it then takes the dequantized values). An fp32 graph
    is kept as it is. Returns (model, facts: what was folded and bypassed)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    alias: dict[str, str] = {}
    resolve = lambda n: alias.get(n, n)  # noqa: E731
    kept, folded, bypassed = [], [], 0
    new_inits: list[Any] = []
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float64)
            scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
            zero = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64) if len(node.input) > 2 and node.input[2] in inits else np.zeros_like(scale)
            axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
            if scale.size > 1:  # per channel: broadcast along `axis`
                shape = [1] * q.ndim
                shape[axis % q.ndim] = -1
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            new_inits.append(numpy_helper.from_array(((q - zero) * scale).astype(np.float32), node.output[0]))
            folded.append(node.output[0])
        elif node.op_type == "QuantizeLinear" and node.input[1] in inits:
            clip = _saturation(node, inits, resolve)  # rounding removed, the integer type's range kept: QDQ graphs from
            bypassed += 1  # TFLite often have no Relu6 node, the uint8 range clamps at 6
            if clip is None:
                alias[node.output[0]] = resolve(node.input[0])
            else:
                kept.append(clip[0])
                new_inits.extend(clip[1:])
        elif node.op_type in ("DequantizeLinear", "QuantizeLinear"):
            alias[node.output[0]] = resolve(node.input[0])
            bypassed += 1
        elif node.op_type == "Identity":  # TorchScript's export shares equal initialisers through Identity nodes, which onnx2torch cannot read
            alias[node.output[0]] = resolve(node.input[0])
        elif node.op_type == "Reshape" and node.input[1] in inits:  # a batch fixed at 1 in a target shape: the batch's own size
            shape = numpy_helper.to_array(inits[node.input[1]]).astype(np.int64)
            node.input[:] = [resolve(node.input[0]), node.input[1]]
            if shape.size and shape[0] == 1:
                shape = shape.copy()
                shape[0] = 0 if -1 in shape[1:] else -1
                name = f"{node.input[1]}_batch"
                new_inits.append(numpy_helper.from_array(shape, name))
                node.input[1] = name
            kept.append(node)
        else:
            node.input[:] = [resolve(i) for i in node.input]
            kept.append(node)
    logits, features = resolve(ends.logits), resolve(ends.features)
    for node in kept:  # the CAM tensor's readers read it through the CAM node (the host model's CAM layer)
        node.input[:] = [FEATURES if i == features else i for i in node.input]
    if logits == features:
        raise ArtifactError(f"{src}: the CAM tensor is the class scores")
    cam = helper.make_node("Identity", [features], [FEATURES], name=CAM_NODE)
    out = helper.make_node("Identity", [FEATURES if logits == features else logits], [LOGITS], name="edgecam_logits")
    del graph.node[:]
    graph.node.extend(_toposorted([*kept, cam, out], {i.name for i in graph.input} | set(inits) | {t.name for t in new_inits}))
    used = {i for n in graph.node for i in n.input}
    keep_inits = [t for t in graph.initializer if t.name in used and t.name not in folded]
    del graph.initializer[:]
    graph.initializer.extend([*keep_inits, *(t for t in new_inits if t.name in used)])
    for inp in graph.input:
        if inp.name not in inits:
            inp.type.tensor_type.elem_type = TensorProto.FLOAT
            inp.type.tensor_type.shape.dim[0].dim_param = "batch"  # any batch (the host model runs shards)
    del graph.value_info[:]
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, None), helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, None)])
    for i, node in enumerate(graph.node):  # names onnx2torch can use as module names
        if node.name not in (CAM_NODE, "edgecam_logits"):
            node.name = f"n{i}"
    return model, {"weights_folded": len(folded), "activation_qdq_bypassed": bypassed}


def _saturation(node: Any, inits: dict[str, Any], resolve: Any) -> tuple[Any, ...] | None:
    """A Clip node (and its two bound initialisers) standing for the QuantizeLinear `node` without its rounding: the
    real values its integer type can hold, scale x ([qmin, qmax] - zero point). None for a per-channel one."""
    from onnx import helper, numpy_helper

    scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64).reshape(-1)
    zp = inits.get(node.input[2]) if len(node.input) > 2 else None
    if scale.size != 1 or (len(node.input) > 2 and zp is None):
        return None
    zero = float(numpy_helper.to_array(zp).reshape(-1)[0]) if zp is not None else 0.0
    info = np.iinfo(helper.tensor_dtype_to_np_dtype(zp.data_type) if zp is not None else np.uint8)
    lo, hi = ((info.min - zero) * scale[0], (info.max - zero) * scale[0])
    name = node.output[0]
    bounds = (numpy_helper.from_array(np.array(lo, np.float32), f"{name}_min"), numpy_helper.from_array(np.array(hi, np.float32), f"{name}_max"))
    return (helper.make_node("Clip", [resolve(node.input[0]), bounds[0].name, bounds[1].name], [name]), *bounds)


def _toposorted(nodes: list[Any], available: set[str]) -> list[Any]:
    """`nodes` in an order where every node comes after the nodes whose outputs it reads (onnx2torch needs it)."""
    done, order, todo = set(available), [], list(nodes)
    while todo:
        ready = [n for n in todo if all(not i or i in done for i in n.input)]
        if not ready:
            raise ArtifactError(f"the float graph has a cycle or reads a tensor nothing produces ({todo[0].name}: {list(todo[0].input)})")
        ids = {id(n) for n in ready}
        todo = [n for n in todo if id(n) not in ids]
        order += ready
        done.update(o for n in ready for o in n.output)
    return order


# --------------------------------------------------------------------------------------------- TFLite


def _tflite_model(path: Path) -> Any:
    from ai_edge_litert import schema_py_generated as schema

    return schema.ModelT.InitFromObj(schema.Model.GetRootAs(path.read_bytes(), 0))


@functools.lru_cache(maxsize=1)
def _builtin_names() -> dict[int, str]:
    """TFLite's builtin operator codes -> their names (the schema's enum, read once)."""
    from ai_edge_litert import schema_py_generated as schema

    return {v: k for k, v in vars(schema.BuiltinOperator).items() if isinstance(v, int) and not k.startswith("_")}


def _opname(model: Any, op: Any) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    value = max(code.builtinCode, code.deprecatedBuiltinCode)
    return _builtin_names().get(value, str(value))


def tflite_endpoints(path: Path, cam_tensor: str | None = None) -> Endpoints:
    """As `onnx_endpoints`, in a .tflite's first subgraph (activations are NHWC there)."""
    model = _tflite_model(path)
    graph = model.subgraphs[0]
    producers = {o: op for op in graph.operators for o in op.outputs}
    name_of = lambda i: graph.tensors[i].name.decode() if isinstance(graph.tensors[i].name, bytes) else str(graph.tensors[i].name)  # noqa: E731
    shape_of = lambda i: tuple(int(d) for d in graph.tensors[i].shape)  # noqa: E731
    output = int(graph.outputs[0])
    logits, softmax, idx = output, False, output
    while idx in producers and _opname(model, producers[idx]) in ("QUANTIZE", "DEQUANTIZE", "RESHAPE", "SQUEEZE", "SOFTMAX"):
        op = producers[idx]
        if _opname(model, op) == "SOFTMAX":
            logits, softmax = int(op.inputs[0]), True
            break
        idx = int(op.inputs[0])
    if cam_tensor is not None:
        found = [i for i in range(len(graph.tensors)) if name_of(i) == cam_tensor]
        if not found:
            known = [name_of(i) for i in sorted(producers) if len(shape_of(i)) == 4][-8:]
            raise ArtifactError(f"{path}: cam_tensor {cam_tensor!r} is not a tensor of the graph (last 4-D tensors: {', '.join(known) or 'none'})")
        features = found[0]
    else:
        features = _tflite_pool_input(path, model, graph, producers, logits)
    if len(shape_of(features)) != 4:
        raise ArtifactError(f"{path}: the CAM tensor {name_of(features)!r} has shape {list(shape_of(features))}, not 4-D (batch, H, W, C); name another with cam_tensor")
    return Endpoints(name_of(output), name_of(logits), name_of(features), "NHWC", softmax, shape_of(features)[1:])


def _tflite_pool_input(path: Path, model: Any, graph: Any, producers: dict[int, Any], logits: int) -> int:
    op = _nearest_upstream(logits, producers, lambda o: _opname(model, o) in ("MEAN", "AVERAGE_POOL_2D", "REDUCE_MAX"), lambda o: [int(i) for i in o.inputs if i >= 0])
    if op is not None:
        return int(op.inputs[0])
    raise ArtifactError(f"{path}: no global pooling (MEAN, AVERAGE_POOL_2D) found before the class scores; name the CAM tensor (a 4-D activation) with cam_tensor")


def expose_tflite(src: Path, dst: Path, ends: Endpoints) -> None:
    """Copy of `src` whose first subgraph also outputs the logits and CAM tensors (appended to its outputs)."""
    import flatbuffers

    model = _tflite_model(src)
    graph = model.subgraphs[0]
    names = {(t.name.decode() if isinstance(t.name, bytes) else str(t.name)): i for i, t in enumerate(graph.tensors)}
    outputs = [int(i) for i in graph.outputs]
    for name in (ends.logits, ends.features):
        if names[name] not in outputs:
            outputs.append(names[name])
    graph.outputs = outputs
    builder = flatbuffers.Builder(src.stat().st_size + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    dst.write_bytes(bytes(builder.Output()))


# ------------------------------------------------------------------------------------ shared by both


def endpoints(path: Path, fmt: str, cam_tensor: str | None = None) -> Endpoints:
    """The logits and CAM tensor of a model file (format from `inspect.model_format`)."""
    if fmt == "onnx":
        import onnx

        return onnx_endpoints(path, onnx.load(str(path)), cam_tensor)
    return tflite_endpoints(path, cam_tensor)


def expose(src: Path, dst: Path, fmt: str, ends: Endpoints) -> None:
    (expose_onnx if fmt == "onnx" else expose_tflite)(src, dst, ends)


def native_outputs(path: Path, fmt: str, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """The tensors `names` of a model file on inputs `x` already in the file's own layout and dtype, one image per
    call (files often fix the batch at 1), raw: what the file itself computes, for the surgery proof."""
    got: dict[str, list[np.ndarray]] = {n: [] for n in names}
    if fmt == "onnx":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0].name
        for i in range(len(x)):
            for n, a in zip(names, sess.run(names, {inp: x[i : i + 1]})):
                got[n].append(a)
    else:
        from edgecam.runtimes.litert import load_interpreter

        interp = load_interpreter(str(path))
        detail = interp.get_input_details()[0]
        index = {d["name"]: d["index"] for d in interp.get_output_details()}
        for i in range(len(x)):
            interp.set_tensor(detail["index"], x[i : i + 1])
            interp.invoke()
            for n in names:
                got[n].append(np.array(interp.get_tensor(index[n])))
    return {n: np.concatenate(v) for n, v in got.items()}


def prove_surgery(original: Path, modified: Path, fmt: str, ends: Endpoints, x: np.ndarray) -> dict[str, Any]:
    """The file's own output from the original and the modified file on the same inputs (`x`, native layout and
    dtype): the surgery must not change what the file computes. Returns the record for the manifest."""
    out_name = ends.output
    a = native_outputs(original, fmt, x, [out_name])[out_name]
    b = native_outputs(modified, fmt, x, [out_name])[out_name]
    diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
    return {"output": out_name, "images": int(len(x)), "max_abs_diff": diff, "top1_equal": bool((a.argmax(-1) == b.argmax(-1)).all())}


def host_module(model: Any, layout: str, label_offset: int) -> tuple["torch.nn.Module", str]:
    """The float reference graph (`float_graph`) as a torch module taking edgecam's NCHW float input and giving its
    class scores (`label_offset` leading ones dropped), and the name of its CAM layer (the CAM node's module)."""
    import copy

    import torch
    from onnx import helper
    from onnx2torch import convert

    logits_only = copy.deepcopy(model)
    graph = logits_only.graph
    del graph.output[:]
    graph.output.extend([o for o in model.graph.output if o.name == LOGITS])
    for inp in graph.input:  # onnx2torch names its placeholder after the input: a Python identifier
        if not inp.name.isidentifier():
            old = inp.name
            inp.name = "image"
            for node in graph.node:
                node.input[:] = ["image" if i == old else i for i in node.input]
    net = convert(logits_only)

    class FileHost(torch.nn.Module):
        """The file's float graph, fed NCHW (permuted to the file's layout), giving the class scores."""

        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            if layout == "NHWC":
                x = x.permute(0, 2, 3, 1)
            y = self.net(x)
            return y[:, label_offset:] if label_offset else y

    host = FileHost().eval()
    if not hasattr(host.net, CAM_NODE):
        raise ArtifactError(f"onnx2torch did not keep the CAM node {CAM_NODE!r} as a module")
    return host, f"net.{CAM_NODE}"
