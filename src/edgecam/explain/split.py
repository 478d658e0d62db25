"""The host model split at its CAM layer: a body (input -> target layer's output) and a head (target layer's
output -> logits), so that a mirror CAM runs only the head on the device's features.

Why: the mirror needs d logit / d features at the target layer. Injecting the device's features into a whole
forward (the `grad-cam` package's way) computes the entire backbone on the host for every quantized variant and
throws it away; at 224 px that backbone forward was 42% of the explain stage (issue 32's profile). The head of an
ImageNet CNN (a 1x1 conv or just pooling + a linear layer) costs a small fraction of it.

How: `torch.fx` traces the forwards of the target layer's ancestors, every other module kept as one call; the head is every node the output
needs past that call, the body every node the call needs. A model that fx cannot trace, whose head also reads
the input (a skip connection around the target layer), that calls the layer more than once, or whose split does
not reproduce the model's own logits on the first batch, is not split: callers fall back to the whole forward and
`Split.reason` says why.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

if TYPE_CHECKING:
    import torch

SPLIT_RTOL = 1e-4  # head(body(x)) vs model(x), relative to the logits' range: fx replays the same ops in the same
# order, so the split agrees bit for bit on every model tested; the tolerance only absorbs a kernel's choice of
# algorithm between batch sizes


@dataclass
class Split:
    """`body` and `head` GraphModules sharing the model's parameters, or `reason` why the model was not split.
    `checked` turns True once head(body(x)) matched model(x) on a real batch (`verify`)."""

    body: Optional["torch.nn.Module"] = None
    head: Optional["torch.nn.Module"] = None
    reason: Optional[str] = None
    checked: bool = False
    shapes: dict[tuple[int, ...], tuple[int, ...]] = field(default_factory=dict)  # per-image input -> feature shape

    @property
    def ok(self) -> bool:
        return self.head is not None and self.reason is None

    def verify(self, model: "torch.nn.Module", x: "torch.Tensor") -> bool:
        """Check once, on the caller's first batch, that the split computes the model's own logits; on a
        mismatch the split is dropped (reason set) and callers use the whole model."""
        import torch

        if not self.ok or self.checked:
            return self.ok
        assert self.body is not None and self.head is not None
        with torch.no_grad():
            want = model(x)
            feats = self.body(x)
            got = self.head(feats)
        self.shapes[tuple(x.shape[1:])] = tuple(feats.shape[1:])
        scale = float(torch.nan_to_num(want, nan=0.0, posinf=0.0, neginf=0.0).abs().max()) or 1.0
        if tuple(got.shape) != tuple(want.shape) or not bool(torch.allclose(got, want, rtol=0.0, atol=SPLIT_RTOL * scale, equal_nan=True)):
            err = float((got - want).abs().max()) if got.shape == want.shape else float("nan")
            self.reason = f"head(body(x)) differs from the model's logits (max |diff| {err:.3g} of {scale:.3g})"
            self.body = self.head = None
        self.checked = True
        return self.ok


    def feature_shape(self, x: "torch.Tensor") -> tuple[int, ...]:
        """Per-image shape of the target layer's output for inputs like `x` (the body run on one image once
        per input shape): what features given in the body's place must match."""
        import torch

        key = tuple(x.shape[1:])
        if key not in self.shapes:
            assert self.body is not None
            with torch.no_grad():
                self.shapes[key] = tuple(self.body(x[:1]).shape[1:])
        return self.shapes[key]


BODY_RTOL = 1e-4  # another runtime's body vs the torch body, relative to the features' range (ORT's fp32 kernels
# differ from torch's in summation order: ~1e-6 of the range on EfficientNet-Lite0)


class OnnxBody:
    """The body's features from ONNX Runtime on the host: the fp32 ONNX export's `features` output (the exporter's
    graph of the same weights, cut at the same layer). On CPU it costs a quarter of the torch body (EfficientNet-
    Lite0 at 224 px, 2 cores: 15 vs 59 ms per image), and the fp32 reference CAM runs it once per test image.
    Used only once `check` found it equal to the torch body on the caller's first batch; `reason` says why not."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        self.path, self.threads = Path(path), threads
        self.session: Any = None
        self.input_name = ""
        self.reason: Optional[str] = None
        self.checked = False

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.log_severity_level = 3
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-wait between calls: the host's
            # other work and the device's own threads share the cores
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
            self.input_name = self.session.get_inputs()[0].name
        return self.session.run(["features"], {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def check(self, split: Split, x: "torch.Tensor") -> bool:
        """Once: the ONNX features equal the torch body's on `x` (NaN where torch has NaN), else `reason` is set."""
        import torch

        if self.checked:
            return self.reason is None
        self.checked = True
        assert split.body is not None
        with torch.no_grad():
            want = split.body(x).numpy()
        try:
            got = self(x.numpy())
        except Exception as exc:  # noqa: BLE001 - a session that cannot load or run means "use the torch body"
            self.reason = f"ONNX Runtime cannot run {self.path} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            return False
        finite = want[np.isfinite(want)]
        scale = float(np.abs(finite).max()) if finite.size else 1.0
        if got.shape != want.shape or not np.allclose(got, want, rtol=0.0, atol=BODY_RTOL * (scale or 1.0), equal_nan=True):
            err = float(np.nanmax(np.abs(got - want))) if got.shape == want.shape else float("nan")
            self.reason = f"{self.path}'s features differ from the torch body's (shape {got.shape} vs {want.shape}, max |diff| {err:.3g} of {scale:.3g})"
        return self.reason is None


_CACHE: "weakref.WeakKeyDictionary[Any, dict[str, Split]]" = weakref.WeakKeyDictionary()


def split_model(model: "torch.nn.Module", target_layer: str) -> Split:
    """The model split at `target_layer` (cached per model object and layer: tracing costs ~0.1-1 s)."""
    per_model = _CACHE.setdefault(model, {})
    if target_layer not in per_model:
        per_model[target_layer] = _split(model, target_layer)
    return per_model[target_layer]


def _split(model: "torch.nn.Module", target_layer: str) -> Split:
    import torch.fx as fx

    class _Tracer(fx.Tracer):
        """Every module is one call except the target layer's ancestors, whose forwards are traced: only the
        code that routes data around the target layer needs to be traceable (timm's same-padding convs, for
        one, compute their padding in Python from the input size and cannot be traced inside)."""

        def is_leaf_module(self, m: "torch.nn.Module", qualname: str) -> bool:
            return not target_layer.startswith(qualname + ".")

    try:
        tracer = _Tracer()
        graph = tracer.trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure (control flow on values, untraceable calls) means "no split"
        return Split(reason=f"torch.fx cannot trace the model ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
    calls = [n for n in graph.nodes if n.op == "call_module" and n.target == target_layer]
    if len(calls) != 1:
        return Split(reason=f"the traced model calls {target_layer!r} {len(calls)} times (a split needs exactly one call)")
    layer_node = calls[0]
    output = next(n for n in graph.nodes if n.op == "output")
    head_nodes = _needed(output, stop=layer_node)
    if any(n.op == "placeholder" for n in head_nodes):
        return Split(reason=f"the layers after {target_layer!r} also read the model's input (e.g. a skip connection around it)")
    body_nodes = _needed(layer_node, stop=None)

    head = fx.Graph()
    env: dict[fx.Node, fx.Node] = {layer_node: head.placeholder("features")}
    for n in graph.nodes:
        if n in head_nodes and n is not layer_node:
            env[n] = head.node_copy(n, lambda a: env[a])
    body = fx.Graph()
    benv: dict[fx.Node, fx.Node] = {}
    for n in graph.nodes:
        if n in body_nodes:
            benv[n] = body.node_copy(n, lambda a: benv[a])
    body.output(benv[layer_node])
    root = tracer.root
    return Split(body=fx.GraphModule(root, body), head=fx.GraphModule(root, head))


def _needed(node: Any, stop: Any) -> set[Any]:
    """`node` and every node it depends on, not looking past `stop`."""
    seen: set[Any] = set()
    todo = [node]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        if n is not stop:
            todo.extend(n.all_input_nodes)
    return seen
