"""PACT low-bit quantization-aware training (the set-up of arXiv 2411.05858: 2-bit, 4-bit and mixed 4/2-bit).

Activations, PACT (Choi et al. 2018, arXiv 1805.06085): every ReLU / ReLU6 becomes
    y   = clip(x, 0, alpha) = 0.5 * (|x| - |x - alpha| + alpha)                     (PACT Eq. 1)
    y_q = round(y / s) * s,  s = alpha / (2^k - 1)                                     (PACT Eq. 2)
with one learnable clipping level alpha per activation layer, the rounding passed straight through
(STE), so d y_q / d alpha = 1 where x >= alpha and 0 elsewhere (PACT Eq. 3), and an L2 penalty
lambda_alpha * alpha^2 on alpha (PACT Sec. 3.1).

Weights, DoReFa-style (Zhou et al. 2016, arXiv 1606.06160, Eq. 9): the weights are normalised by tanh,
w_n = tanh(w) / max|tanh(w)|, and quantized uniformly to k bits with an STE. The grid is the signed k-bit
integer grid, w_q = s_w * q / 2^(k-1), q in {-2^(k-1), ..., 2^(k-1) - 1}, s_w = max|tanh(w)| (DoReFa maps
to 2^k levels symmetric about 0 without a zero; this grid keeps 2^k levels but holds zero, so the weights are
exactly k-bit integers times one scale per layer, which is what ONNX INT4 tensors store). A layer's bit width
applies to its weights and to the activations it reads; the image the first layer reads is not quantized.

Mixed precision ("mixed"): the first and last weight layers (and their inputs) at 4 bits, the rest at 2.

The fine-tuned model runs in host simulation (PyTorch fake-quant) and is labelled so (`PactResult.execution`,
`HOST_SIMULATION`). `export_onnx_lowbit` writes the same model as an ONNX QDQ graph with INT4 weights and
UINT4 activations (opset 21) for ONNX Runtime, at the highest graph-optimisation level ORT loads it with
(recorded in the manifest), and raises `PrecisionUnsupported` (a labelled skip, never a fallback) where it
cannot: more than 4 bits, or an ORT build without INT4 / UINT4 QDQ on the CPU.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import nn

from edgecam.errors import ArtifactError, ConfigError, EdgecamError
from edgecam.exporters.quantize.graph import round_ste

if TYPE_CHECKING:
    from edgecam.exporters.base import Artifact, ModelInfo
    from edgecam.models.saliency_guided import SaliencyGuidance
    from edgecam.runtimes.onnxruntime import OnnxRuntime

HOST_SIMULATION = "host simulation (PyTorch fake-quant)"
SCHEMES = ("int2", "int4", "mixed")
_QUANT_LAYERS = (nn.Conv2d, nn.Linear)
_CLIP_ACTIVATIONS = (nn.ReLU, nn.ReLU6)
_OTHER_ACTIVATIONS = (nn.SiLU, nn.Hardswish, nn.GELU, nn.Sigmoid, nn.Hardsigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.Mish)


class PrecisionUnsupported(EdgecamError):
    """A runtime cannot execute the requested bit width here; the message says why (recorded as a skip)."""


@dataclass(frozen=True)
class PactSpec:
    """A PACT bit-width configuration and its fine-tuning recipe, validated on construction."""

    bits: int = 4  # weights and activations of every quantized layer
    first_last_bits: int | None = None  # mixed precision: bits of the first and last weight layers
    epochs: int = 2
    lr: float = 5e-4
    alpha_lr: float = 1e-2
    alpha_decay: float = 2e-4  # PACT's L2 regulariser on alpha (lambda_alpha)
    alpha_init_percentile: float = 99.0  # alpha starts at this percentile of the fp32 activation
    batch_size: int = 64
    samples: int = 2048  # training images per epoch (a seeded subset: fine-tuning, not training)
    seed: int = 0
    saliency_guided_k: float = 0.0  # saliency-guided QAT (models/saliency_guided.py): fraction masked; 0: off
    saliency_guided_lambda: float = 1.0
    version: int = 2  # 2: BatchNorm re-estimated on a seeded random subset

    def __post_init__(self) -> None:
        for name in ("bits", "first_last_bits"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or not 2 <= value <= 8):
                raise ConfigError(f"pact.{name}: expected an integer bit width in [2, 8], got {value!r}")
        for name in ("epochs", "batch_size", "samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "epochs" else 1):
                raise ConfigError(f"pact.{name}: expected a {'non-negative' if name == 'epochs' else 'positive'} integer, got {value!r}")
        if not (self.lr > 0 and self.alpha_lr > 0 and self.alpha_decay >= 0):
            raise ConfigError(f"pact: lr and alpha_lr must be > 0 and alpha_decay >= 0, got {self.lr}, {self.alpha_lr}, {self.alpha_decay}")
        if not 50.0 <= self.alpha_init_percentile <= 100.0:
            raise ConfigError(f"pact.alpha_init_percentile: expected a number in [50, 100], got {self.alpha_init_percentile}")
        self.guidance  # noqa: B018 - validates k and lambda

    @property
    def guidance(self) -> "SaliencyGuidance | None":
        """Saliency-guided QAT (Ismail et al. 2021, Algorithm 1, with the PACT model as f), None when off."""
        from edgecam.models.saliency_guided import SaliencyGuidance

        return None if self.saliency_guided_k == 0 else SaliencyGuidance(self.saliency_guided_k, self.saliency_guided_lambda)

    @classmethod
    def scheme(cls, name: str, **recipe: Any) -> "PactSpec":
        """The paper's configurations: "int2", "int4", "mixed" (first / last layers 4-bit, the rest 2-bit)."""
        bits = {"int2": (2, None), "int4": (4, None), "mixed": (2, 4)}
        if name not in bits:
            raise ConfigError(f"pact scheme: expected one of {', '.join(SCHEMES)}, got {name!r}")
        return cls(bits=bits[name][0], first_last_bits=bits[name][1], **recipe)

    @property
    def label(self) -> str:
        """Precision label for results: "int4", "int2", "mixed-int4/int2"."""
        if self.first_last_bits is None or self.first_last_bits == self.bits:
            return f"int{self.bits}"
        return f"mixed-int{self.first_last_bits}/int{self.bits}"

    def to_dict(self) -> dict[str, Any]:
        d = {**asdict(self), "label": self.label}
        if self.saliency_guided_k == 0:  # as before the option existed: the same job keys
            d.pop("saliency_guided_k"), d.pop("saliency_guided_lambda")
        return d


class _PactFn(torch.autograd.Function):
    """PACT Eq. 1-3 in one op: forward round(clip(x, 0, alpha) / s) * s with s = alpha / levels; backward
    (STE) d/dx = 1 on 0 < x < alpha, d/d alpha = 1 where x >= alpha (the step's own dependence on alpha is
    not differentiated, as in the paper). One fused op instead of six elementwise passes: QAT runs ~2x faster."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, alpha: torch.Tensor, levels: int) -> torch.Tensor:
        ctx.save_for_backward(x, alpha)
        scale = alpha / levels
        return torch.round(torch.clamp(x, min=0.0).clamp(max=alpha) / scale) * scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        x, alpha = ctx.saved_tensors
        above = x >= alpha
        grad_x = grad * ((x > 0) & ~above)
        grad_alpha = (grad * above).sum().reshape(alpha.shape)
        return grad_x, grad_alpha, None


class PactReLU(nn.Module):
    """PACT activation (Choi et al. 2018, Eq. 1-3): clip to [0, alpha], k-bit uniform quantization, STE."""

    def __init__(self, bits: int, alpha: float) -> None:
        super().__init__()
        self.bits = bits
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    @property
    def levels(self) -> int:
        return 2**self.bits - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _PactFn.apply(x, self.alpha, self.levels)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, alpha={float(self.alpha):.4g}"


class DorefaWeight(nn.Module):
    """Weight quantizer: DoReFa tanh normalisation (Zhou et al. 2016, Eq. 9), signed k-bit grid, STE."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def integer(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(q as float integers in [-2^(k-1), 2^(k-1) - 1] with an STE, the layer's step size)."""
        t = torch.tanh(w)
        half = 2 ** (self.bits - 1)
        step = (t.abs().max().detach() / half).clamp_min(1e-12)
        q = torch.clamp(round_ste(t / step), -half, half - 1)
        return q, step

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        q, step = self.integer(w)
        return q * step


class PactConv2d(nn.Conv2d):
    """Conv2d computing with its DoReFa k-bit weights (`weight` stays the float latent weight)."""

    weight_quant: DorefaWeight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight_quant(self.weight), self.bias)


class PactLinear(nn.Linear):
    """Linear computing with its DoReFa k-bit weights (`weight` stays the float latent weight)."""

    weight_quant: DorefaWeight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight_quant(self.weight), self.bias)


_PACT_LAYER = {nn.Conv2d: PactConv2d, nn.Linear: PactLinear}


def _pact_layers(model: nn.Module) -> dict[str, PactConv2d | PactLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (PactConv2d, PactLinear))}


@dataclass
class PactResult:
    """The fake-quant model (host simulation, eval mode) and what produced it."""

    model: nn.Module
    spec: PactSpec
    layer_bits: dict[str, int]  # weight layer -> bits
    activation_bits: dict[str, int]  # PACT activation -> bits
    alphas: dict[str, float]
    stats: dict[str, Any] = field(default_factory=dict)
    execution: str = HOST_SIMULATION

    @property
    def precision(self) -> str:
        return self.spec.label

    def describe(self) -> dict[str, Any]:
        """What a results manifest records about this variant."""
        return {
            "precision_requested": self.spec.label,
            "precision_effective": self.spec.label,
            "execution": self.execution,
            "method": "PACT activations (Choi et al. 2018) + DoReFa-style weights (Zhou et al. 2016), QAT fine-tune",
            "spec": self.spec.to_dict(),
            "layer_bits": dict(self.layer_bits),
            "activation_bits": dict(self.activation_bits),
            "alphas": dict(self.alphas),
            **self.stats,
        }


def plan_bits(model: nn.Module, spec: PactSpec) -> tuple[dict[str, int], dict[str, int]]:
    """(weight layer -> bits, activation -> bits) in module order: the first and last Conv2d / Linear get
    `first_last_bits` when set; an activation gets the bits of the next weight layer (the one reading it).
    Raises if the model has activations PACT cannot clip (SiLU, Hardswish, ...), naming them."""
    others = [n for n, m in model.named_modules() if isinstance(m, _OTHER_ACTIVATIONS)]
    if others:
        raise ConfigError(f"PACT quantizes ReLU / ReLU6 outputs; this model has other activations at {', '.join(others[:5])}{' ...' if len(others) > 5 else ''}")
    order = [(n, m) for n, m in model.named_modules() if isinstance(m, _QUANT_LAYERS + _CLIP_ACTIVATIONS)]
    layers = [n for n, m in order if isinstance(m, _QUANT_LAYERS)]
    if not layers:
        raise ConfigError("PACT: the model has no Conv2d / Linear layer to quantize")
    edge = spec.first_last_bits if spec.first_last_bits is not None else spec.bits
    layer_bits = {n: (edge if n in (layers[0], layers[-1]) else spec.bits) for n in layers}
    act_bits: dict[str, int] = {}
    pending: list[str] = []
    for name, module in order:
        if isinstance(module, _CLIP_ACTIVATIONS):
            pending.append(name)
        else:
            act_bits.update({a: layer_bits[name] for a in pending})
            pending = []
    act_bits.update({a: layer_bits[layers[-1]] for a in pending})
    if not act_bits:
        raise ConfigError("PACT: the model has no ReLU / ReLU6 module to clip (functional activations are not seen)")
    return layer_bits, act_bits


def _activation_percentiles(model: nn.Module, names: list[str], images: np.ndarray, q: float, batch: int = 64) -> dict[str, float]:
    """The `q`-th percentile of each named activation's positive outputs on `images` (fp32 model, no grad)."""
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    hooks = [model.get_submodule(n).register_forward_hook(lambda _m, _i, out, n=n: seen[n].append(out.detach().flatten())) for n in names]
    try:
        with torch.no_grad():
            model.eval()
            for i in range(0, len(images), batch):
                model(torch.from_numpy(np.ascontiguousarray(images[i : i + batch], dtype=np.float32)))
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for n, parts in seen.items():
        values = torch.cat(parts)
        values = values[values > 0]
        out[n] = float(torch.quantile(values[:1_000_000].float(), q / 100.0)) if values.numel() else 1.0
    return out


def pact_model(model: nn.Module, spec: PactSpec, calib_images: np.ndarray) -> tuple[nn.Module, dict[str, int], dict[str, int]]:
    """A fake-quant copy of `model` (left untouched): PactReLU in place of every ReLU / ReLU6 (alpha
    initialised at a percentile of its fp32 activation on `calib_images`), DoReFa weights on every
    Conv2d / Linear. Module paths do not change, so CAM target layers still resolve."""
    layer_bits, act_bits = plan_bits(model, spec)
    alphas = _activation_percentiles(model, list(act_bits), calib_images, spec.alpha_init_percentile)
    q = copy.deepcopy(model)
    for name, bits in act_bits.items():
        parent_name, _, attr = name.rpartition(".")
        parent = q.get_submodule(parent_name) if parent_name else q
        setattr(parent, attr, PactReLU(bits, max(alphas[name], 1e-3)))
    for name, bits in layer_bits.items():
        layer = q.get_submodule(name)
        if type(layer) not in _PACT_LAYER:
            raise ConfigError(f"PACT quantizes nn.Conv2d / nn.Linear layers; {name!r} is a {type(layer).__name__}")
        layer.__class__ = _PACT_LAYER[type(layer)]  # same parameters and state-dict keys, quantized forward
        layer.weight_quant = DorefaWeight(bits)
    return q, layer_bits, act_bits


def pact_finetune(
    model: nn.Module,
    spec: PactSpec,
    images: np.ndarray,
    labels: np.ndarray,
    progress: Callable[[str, float], None] | None = None,
) -> PactResult:
    """PACT QAT fine-tune of a trained fp32 `model` on normalised `images` (N, C, H, W) / `labels`.

    Adam on the weights (lr) and the alphas (alpha_lr, L2 `alpha_decay`), cross-entropy, `spec.epochs`
    epochs over a seeded subset of `spec.samples` images, then BatchNorm statistics re-estimated on the
    quantized model (`models.train.recalibrate_batchnorm`). Returns the fake-quant model in eval mode."""
    from edgecam.exporters.quantize.qat import minibatch_epochs
    from edgecam.models.train import recalibrate_batchnorm

    t0 = time.perf_counter()
    torch.manual_seed(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed)
    subset = torch.randperm(len(images), generator=gen)[: spec.samples].numpy()
    x = torch.from_numpy(np.ascontiguousarray(images[subset], dtype=np.float32))
    y = torch.from_numpy(np.asarray(labels[subset], dtype=np.int64))
    q, layer_bits, act_bits = pact_model(model, spec, images[subset[: 4 * spec.batch_size]])
    alphas = [m.alpha for m in q.modules() if isinstance(m, PactReLU)]
    alpha_ids = {id(p) for p in alphas}
    opt = torch.optim.Adam(
        [
            {"params": [p for p in q.parameters() if id(p) not in alpha_ids], "lr": spec.lr},
            {"params": alphas, "lr": spec.alpha_lr, "weight_decay": spec.alpha_decay},
        ]
    )

    def keep_alphas_positive() -> None:
        with torch.no_grad():
            for a in alphas:
                a.clamp_(min=1e-3)

    q.train()
    loss_of, guide_log = None, None
    if spec.guidance is not None:
        from edgecam.models.saliency_guided import GuidanceLog, guided_loss

        guidance, guide_log, mask_gen = spec.guidance, GuidanceLog([], []), torch.Generator().manual_seed(spec.seed + 1)

        def loss_of(f: Callable[[torch.Tensor], torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            return guided_loss(f, xb, yb, guidance, mask_gen, guide_log)

    losses = minibatch_epochs(q, opt, x, y, spec.epochs, spec.batch_size, gen, progress, f"PACT {spec.label}", keep_alphas_positive, loss_of)
    recalibrate_batchnorm(q, x, spec.batch_size)
    q.eval()
    stats = {"qat_steps": len(losses), "qat_final_loss": float(np.mean(losses[-10:])) if losses else None, "qat_seconds": time.perf_counter() - t0}
    if guide_log is not None:
        stats.update(guide_log.summary())
    return PactResult(q, spec, layer_bits, act_bits, pact_alphas(q), stats)


def pact_alphas(model: nn.Module) -> dict[str, float]:
    """PACT activation -> its learned clipping level alpha."""
    return {n: m.alpha.item() for n, m in model.named_modules() if isinstance(m, PactReLU)}


def integer_weights(model: nn.Module) -> dict[str, tuple[np.ndarray, float, int]]:
    """Weight layer -> (k-bit integer weights as int8, step size, bits) of a PACT model."""
    out = {}
    with torch.no_grad():
        for name, layer in _pact_layers(model).items():
            q, step = layer.weight_quant.integer(layer.weight)
            out[name] = (q.numpy().astype(np.int8), float(step), layer.weight_quant.bits)
    return out


def effective_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """Weight layer -> the weights the fake-quant model computes with (what 'at most 2^k values' is about)."""
    with torch.no_grad():
        return {name: layer.weight_quant(layer.weight).numpy().copy() for name, layer in _pact_layers(model).items()}


# -- ONNX Runtime: INT4 / UINT4 QDQ ---------------------------------------------------------------------


class _ClipExport(nn.Module):
    """PactReLU without the rounding, for export: y = clip(x, 0, alpha) (the Q / DQ pair is added in ONNX)."""

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, 0.0, self.alpha)


def ort_lowbit_support() -> str | None:
    """None if ONNX Runtime here runs an INT4-weight / UINT4-activation QDQ graph correctly, else why not."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    q = np.array([[-8, 7], [3, -1]], dtype=np.int8)
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], axis=0),
        helper.make_node("MatMul", ["x", "w"], ["y0"]),
        helper.make_node("QuantizeLinear", ["y0", "a_s", "a_z"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "a_s", "a_z"], ["y"]),
    ]
    inits = [
        helper.make_tensor("w_q", TensorProto.INT4, [2, 2], q.ravel().tolist()),
        onnx.numpy_helper.from_array(np.array([0.5, 0.25], dtype=np.float32), "w_s"),
        helper.make_tensor("w_z", TensorProto.INT4, [2], [0, 0]),
        onnx.numpy_helper.from_array(np.array(0.1, dtype=np.float32), "a_s"),
        helper.make_tensor("a_z", TensorProto.UINT4, [], [0]),
    ]
    graph = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"x": np.ones((1, 2), dtype=np.float32)})[0]
    except Exception as exc:  # ORT raises its own exception types (NOT_IMPLEMENTED, INVALID_GRAPH, ...)
        return f"onnxruntime {ort.__version__} cannot run INT4 / UINT4 QDQ (opset 21) on the CPU: {type(exc).__name__}: {exc}"
    expected = np.array([[0.0, 1.5]], dtype=np.float32)  # [-3.25, 3.25] through uint4 at scale 0.1: saturates
    if not np.allclose(got, expected):
        return f"onnxruntime {ort.__version__} runs INT4 / UINT4 QDQ but computes {got.tolist()}, expected {expected.tolist()}"
    return None


def _export_copy(result: PactResult) -> nn.Module:
    """The PACT model with the quantized weights baked in (plain float tensors) and PactReLU -> clip."""
    m = copy.deepcopy(result.model).eval()
    for layer in _pact_layers(m).values():
        with torch.no_grad():
            layer.weight.copy_(layer.weight_quant(layer.weight))
        del layer.weight_quant
        layer.__class__ = layer.__class__.__bases__[0]
    for name, module in list(m.named_modules()):
        if isinstance(module, PactReLU):
            parent_name, _, attr = name.rpartition(".")
            setattr(m.get_submodule(parent_name) if parent_name else m, attr, _ClipExport(module.alpha.item()))
    return m


def _channel_scales(folded: np.ndarray, q: np.ndarray, step: float, layer: str) -> np.ndarray:
    """Per-output-channel scales s_c with folded[c] == q[c] * s_c (BatchNorm folding multiplies each output
    channel by gamma / sigma); raises if the folded weights are not on the integer grid."""
    f = folded.reshape(len(folded), -1).astype(np.float64)
    qq = q.reshape(len(q), -1).astype(np.float64)
    denom = (qq * qq).sum(1)
    scales = np.where(denom > 0, (f * qq).sum(1) / np.maximum(denom, 1), step)
    err = np.abs(f - qq * scales[:, None]).max()
    if err > 1e-5 * max(1e-12, float(np.abs(f).max())):
        raise ArtifactError(f"ONNX low-bit export: layer {layer!r}'s exported weights are not its integer grid times a per-channel scale (max error {err:.3g})")
    return scales.astype(np.float32)


def _insert_weight_dq(model: Any, layers: dict[str, tuple[np.ndarray, float, int]]) -> None:
    from onnx import TensorProto, helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    new_nodes = []
    for layer, (q, step, _bits) in layers.items():
        name = f"model.{layer}.weight"
        if name not in inits:
            raise ArtifactError(f"ONNX low-bit export: weight initializer {name!r} of layer {layer!r} not found in the exported graph")
        folded = numpy_helper.to_array(inits[name])
        if folded.shape != q.shape:
            raise ArtifactError(f"ONNX low-bit export: {name!r} has shape {folded.shape}, the PACT layer {q.shape}")
        scales = _channel_scales(folded, q, step, layer)
        model.graph.initializer.remove(inits[name])
        model.graph.initializer.extend([
            helper.make_tensor(f"{name}_int4", TensorProto.INT4, list(q.shape), q.ravel().tolist()),
            numpy_helper.from_array(scales, f"{name}_scale"),
            helper.make_tensor(f"{name}_zero_point", TensorProto.INT4, [len(scales)], [0] * len(scales)),
        ])
        new_nodes.append(helper.make_node("DequantizeLinear", [f"{name}_int4", f"{name}_scale", f"{name}_zero_point"], [name], axis=0, name=f"{name}_DequantizeLinear"))
    for i, node in enumerate(new_nodes):
        model.graph.node.insert(i, node)


def _constant_value(model: Any, name: str) -> float | None:
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name == name:
            arr = numpy_helper.to_array(init)
            return float(arr) if arr.size == 1 else None
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            arr = numpy_helper.to_array(node.attribute[0].t)
            return float(arr) if arr.size == 1 else None
    return None


def _replace_clip_with_qdq(model: Any, clip: Any, levels: int, outputs: set[str]) -> None:
    """Clip(x, 0, alpha) -> QuantizeLinear / DequantizeLinear to UINT4, scale alpha / levels, zero point 0
    (PACT Eq. 1-2 exactly), the DQ taking over the name the readers (or a graph output) use.

    Two ONNX Runtime 1.32 limits shape this: (1) no Clip may feed a UINT4 QuantizeLinear (its Clip/Q fusion
    aborts session creation on a UINT4 zero point): at 4 bits the quantizer's saturation is the clip, below
    4 bits (a 2-bit grid in UINT4 storage) a Min clips above and the saturation below; (2) a DQ must not feed
    a MaxPool (QDQ propagation would run MaxPool on UINT4, which has no kernel): when the activation's only
    reader is a MaxPool, Q / DQ go after it, which yields the same values (max commutes with a monotone
    quantizer)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = model.graph.node
    name = clip.output[0]
    pre = f"{name}_pact"
    alpha = _constant_value(model, clip.input[2])
    scale = np.float32(alpha) / np.float32(levels)
    model.graph.initializer.extend([numpy_helper.from_array(np.array(scale, dtype=np.float32), f"{pre}_scale"), helper.make_tensor(f"{pre}_zero_point", TensorProto.UINT4, [], [0])])
    at = list(nodes).index(clip)
    nodes.remove(clip)
    q_in = clip.input[0]
    if levels < 15:
        nodes.insert(at, helper.make_node("Min", [q_in, clip.input[2]], [f"{pre}_min"], name=f"{pre}_Min"))
        q_in, at = f"{pre}_min", at + 1
    readers = [n for n in nodes if name in n.input]
    deq = name
    if name not in outputs and len(readers) == 1 and readers[0].op_type == "MaxPool":
        pool = readers[0]
        pool.input[list(pool.input).index(name)] = q_in
        deq = pool.output[0]
        pool.output[0] = q_in = f"{pre}_pooled"
        at = list(nodes).index(pool) + 1
    nodes.insert(at, helper.make_node("QuantizeLinear", [q_in, f"{pre}_scale", f"{pre}_zero_point"], [f"{pre}_q"], name=f"{pre}_QuantizeLinear"))
    nodes.insert(at + 1, helper.make_node("DequantizeLinear", [f"{pre}_q", f"{pre}_scale", f"{pre}_zero_point"], [deq], name=f"{pre}_DequantizeLinear"))


def _insert_activation_qdq(model: Any, alphas: dict[str, float], bits: dict[str, int]) -> None:
    """Every Clip(x, 0, alpha) of a PACT activation (found by its alpha) becomes UINT4 Q / DQ
    (`_replace_clip_with_qdq`); raises if an activation has no Clip in the graph."""
    by_alpha: dict[float, list[str]] = {}
    for name, a in alphas.items():
        by_alpha.setdefault(float(np.float32(a)), []).append(name)
    for names in by_alpha.values():
        if len({bits[n] for n in names}) > 1:
            raise ArtifactError(f"ONNX low-bit export: PACT activations {', '.join(names)} share alpha {alphas[names[0]]} but not a bit width; cannot tell their Clip nodes apart")
    matched: set[str] = set()
    outputs = {o.name for o in model.graph.output}
    for node in list(model.graph.node):
        if node.op_type != "Clip" or len(node.input) < 3:
            continue
        lo, hi = _constant_value(model, node.input[1]), _constant_value(model, node.input[2])
        if lo != 0.0 or hi is None or hi not in by_alpha:
            continue
        names = by_alpha[hi]
        matched.update(names)
        _replace_clip_with_qdq(model, node, 2 ** bits[names[0]] - 1, outputs)
    missing = sorted(set(alphas) - matched)
    if missing:
        raise ArtifactError(f"ONNX low-bit export: no Clip(0, alpha) found in the exported graph for PACT activation(s) {', '.join(missing)}")


ORT_LEVELS = ("all", "extended", "basic", "disable")  # the OnnxRuntime adapter's graph_optimization values


def _loadable_level(path: Path, precision: str) -> tuple[Any, str, dict[str, str]]:
    """(adapter, the highest ORT graph-optimization level that loads `path`, {rejected level: error}).
    ONNX Runtime 1.32's QDQ propagation runs MaxPool on UINT4 at "extended" and above (no kernel: the
    session fails); "basic" loads but quantizes Conv biases to int32 (scale = input scale x weight scale)."""
    import onnxruntime as ort

    from edgecam.runtimes.onnxruntime import OnnxRuntime

    rejected: dict[str, str] = {}
    for level in ORT_LEVELS:
        try:
            return OnnxRuntime(str(path), graph_optimization=level), level, rejected
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, NotImplemented)
            rejected[level] = f"{type(exc).__name__}: {str(exc)[:400]}"
    raise PrecisionUnsupported(f"onnxruntime {ort.__version__} cannot load the {precision} QDQ graph at any optimization level: {rejected}")


def _check_lowbit_exportable(result: PactResult) -> None:
    """Raise `PrecisionUnsupported` (a labelled skip, never a fallback) where the INT4 / UINT4 QDQ graph
    cannot hold or run `result`: a layer with more than 4 bits, or an ORT here without INT4 / UINT4 QDQ."""
    wide = {n: b for n, b in result.layer_bits.items() if b > 4}
    if wide:
        raise PrecisionUnsupported(f"{result.precision}: ONNX INT4 QDQ holds at most 4 bits; layers {', '.join(wide)} have more")
    reason = ort_lowbit_support()
    if reason is not None:
        raise PrecisionUnsupported(reason)


def _write_lowbit_graph(result: PactResult, export_model: nn.Module, info: "ModelInfo", tmp: Path) -> Path:
    """Export `export_model` to fp32 ONNX (opset 21) in `tmp`, put INT4 weight DQs and UINT4 activation Q / DQ
    into it, check it and save it as `tmp / "model.onnx"` (returned); the fp32 intermediate is removed."""
    import onnx

    from edgecam.exporters.onnx import export_fp32

    fp32 = tmp / "fp32.onnx"
    export_fp32(export_model, info, fp32, opset=21)
    graph = onnx.load(str(fp32))
    _insert_weight_dq(graph, integer_weights(result.model))
    _insert_activation_qdq(graph, pact_alphas(result.model), result.activation_bits)
    final = tmp / "model.onnx"
    onnx.checker.check_model(graph)
    onnx.save(graph, str(final))
    fp32.unlink()
    return final


def _check_vs_host_simulation(runtime: "OnnxRuntime", result: PactResult, check_images: np.ndarray | None, level: str) -> dict[str, Any]:
    """The exported graph's logits on `check_images` against the host simulation's (largest difference, top-1
    agreement) at graph-optimization `level`, for the manifest; empty without images."""
    if check_images is None:
        return {}
    x = np.ascontiguousarray(check_images, dtype=np.float32)
    got = runtime.run({"input": x})["logits"]
    with torch.no_grad():
        ref = result.model(torch.from_numpy(x)).numpy()
    return {"images": len(x), "graph_optimization": level, "max_abs_logit_diff": float(np.abs(got - ref).max()), "top1_agreement": float((got.argmax(1) == ref.argmax(1)).mean())}


def _lowbit_manifest_fields(result: PactResult, export_model: nn.Module, info: "ModelInfo", level: str, rejected: dict[str, str],
                            check: dict[str, Any]) -> dict[str, Any]:
    """The low-bit artifact's manifest: the common fields, the precision (grids under 4 bits said to be stored
    as INT4 / UINT4), the ORT level that loads it (and the errors of those that do not) and the check."""
    import onnx
    import onnxruntime as ort

    from edgecam.exporters.base import ExportSpec, common_manifest_fields, input_spec

    uniform = set(result.layer_bits.values()) == {4}
    return {
        **common_manifest_fields(export_model, info, ExportSpec()),
        "precision_requested": result.precision,
        "precision_effective": "int4" if uniform else f"{result.precision} (grids stored as INT4 / UINT4)",
        "export_spec": {"pact": result.spec.to_dict()},
        "format": "onnx",
        "opset": 21,
        "input": input_spec("input", ["batch", *info.input_shape], "float32", info),
        "runtime_options": {"graph_optimization": level},
        "quantization": {
            "method": "pact",
            "weights": "INT4 per-output-channel (BatchNorm folded), zero point 0",
            "activations": "UINT4 per-tensor, scale alpha / (2^k - 1), zero point 0",
            "layer_bits": dict(result.layer_bits),
            "activation_bits": dict(result.activation_bits),
            "execution": f"onnxruntime CPU at graph_optimization={level!r}: DequantizeLinear to float, float Conv / Gemm (no int4 kernels)",
            "ort_levels_rejected": rejected,
            "check_vs_host_simulation": check,
        },
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__},
    }


def export_onnx_lowbit(result: PactResult, info: "ModelInfo", out_dir: Path, check_images: np.ndarray | None = None) -> "Artifact":
    """Write `result`'s model as an ONNX QDQ artifact for ONNX Runtime: INT4 weights (per-output-channel
    scales: BatchNorm is folded into them), UINT4 activations with scale alpha / (2^k - 1), opset 21, the
    two outputs `logits` / `features`; `info` is the model's `exporters.base.ModelInfo`. Layers under 4 bits
    keep their 2-bit grid inside INT4 / UINT4 storage (the manifest says so).

    The graph is loaded here at every ONNX Runtime optimization level from "all" down; the highest that
    loads is written to the manifest (`runtime_options.graph_optimization`, which the OnnxRuntime adapter
    applies) with the errors of those that do not. Raises `PrecisionUnsupported` (record it as a skip) if a
    layer has more than 4 bits or no level loads. With `check_images` (normalised), the manifest records
    the largest logit difference from the host simulation at that level."""
    from edgecam.exporters.base import Artifact, staging_dir, write_manifest

    _check_lowbit_exportable(result)
    out_dir = Path(out_dir)
    export_model = _export_copy(result)
    with staging_dir(out_dir) as tmp:
        final = _write_lowbit_graph(result, export_model, info, tmp)
        runtime, level, rejected = _loadable_level(final, result.precision)
        check = _check_vs_host_simulation(runtime, result, check_images, level)
        runtime.close()
        write_manifest(tmp, final, _lowbit_manifest_fields(result, export_model, info, level, rejected, check))
    return Artifact.load(out_dir)
