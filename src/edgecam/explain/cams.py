"""CAM methods over what a device returned.

- reference: the `grad-cam` package on the host fp32 PyTorch model (the ground truth for "vs fp32").
- mirror:    the device's `features` are injected into the host fp32 PyTorch graph at the target layer and
             gradients are taken through the host head; the CAM maths is the `grad-cam` package's.
- surrogate: needs nothing but the device: Eigen-CAM from `features` alone; Score-CAM and RISE send masked
             inputs through the device session (`CamContext.forward`) in batches.
- sim:       the whole CAM computed in the host's fake-quant graph of the artifact (the QDQ ONNX model run
             by `exporters.quantize.graph.OnnxGraphModule`), as 2403.09939 did; comparing it with "mirror"
             measures how far the paper's host simulation is from the device.

All CAMs come out as (N, H, W) float32 at the input resolution, min-max normalised, resized bilinearly
(`pytorch_grad_cam.utils.image.scale_cam_image`, cv2.INTER_LINEAR), as DESIGN.md's metric section requires.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Optional, Protocol, Sequence

import numpy as np

from edgecam.explain.split import OnnxBody, Split, split_model
from edgecam.perturb import softmax_rows
from edgecam.registry import Registry

if TYPE_CHECKING:
    import torch


class CamMethod:
    """A CAM method. Its flags say what it needs (pytorch-grad-cam's `uses_gradients` idea) and `modes` where
    it can run; the pipeline routes on these alone (no list of method names anywhere else).

    modes[0] is the default mode; a gradient method also runs in "sim" (the host fake-quant graph)."""

    name: ClassVar[str]
    modes: ClassVar[tuple[str, ...]]  # of "mirror" | "surrogate" | "sim"
    needs_activations: ClassVar[bool] = True
    needs_gradients: ClassVar[bool] = False
    needs_forward: ClassVar[bool] = False  # runs inputs through the device session (Score-CAM, RISE)
    #: the method's own settings, given as keys of the `[explain]` table (`config.ExplainSpec.method_options`),
    #: each with what it does; `check_options` validates them and fills in the defaults
    option_help: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A method that runs inputs through the device must state what that costs: the run's work estimate
        (`bench/estimate.py`) asks it, and a silent zero would hide its device time."""
        super().__init_subclass__(**kwargs)
        if cls.needs_forward and cls.device_work.__func__ is CamMethod.device_work.__func__:  # type: ignore[attr-defined]
            raise TypeError(f"CAM method {cls.__name__} runs inputs through the device (needs_forward) but does not define device_work")

    def __init__(self, mode: str | None = None) -> None:
        if mode is not None and mode not in self.modes:
            raise ValueError(f"CAM method {self.name!r} runs in mode(s) {', '.join(self.modes)}, not {mode!r}")
        self.run_mode = mode or self.modes[0]

    @classmethod
    def default_mode(cls) -> str:
        return cls.modes[0]

    def __call__(self, ctx: "CamContext", features: np.ndarray, targets: Sequence[int]) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """This method's options (the keys of `option_help` in `options`; others are other methods') validated,
        with the defaults filled in; a bad value raises ValueError "key: what was expected, got what"."""
        return {k: options[k] for k in cls.option_help if k in options}

    @classmethod
    def channels(cls, channels: int, options: Mapping[str, Any]) -> int:
        """How many of the CAM layer's `channels` a map of this method weighs (the `cam_channels` column)."""
        return channels

    @classmethod
    def device_work(cls, n_img: int, input_shape: tuple[int, ...], feature_shape: tuple[int, ...], options: Mapping[str, Any]) -> tuple[int, int]:
        """(device forwards, bytes pushed) this method costs on one variant for `n_img` images, beyond the
        outputs pass every method shares (the run's work estimate, `bench/estimate.py`): none unless the
        method runs inputs through the device (`needs_forward`)."""
        return 0, 0


def int_option(options: Mapping[str, Any], key: str, default: int, lowest: int, expected: str) -> int:
    """A method's integer option (`default` when absent), at least `lowest`; else ValueError "key: expected ..."."""
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise ValueError(f"{key}: expected {expected}, got {value}")
    return value


class ForwardSession(Protocol):
    """What a CAM method needs from a device: its outputs for any number of inputs, and the logits of
    images[i] * masks[i, k] composed wherever the session runs, and Score-CAM's from the channel maps at their
    own resolution (`devices.session.DeviceSession` composes them on the device; `HostForward` here, for a
    plain function)."""

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]: ...

    def masked(self, images: np.ndarray, masks: np.ndarray) -> np.ndarray: ...

    def scorecam(self, images: np.ndarray, maps: np.ndarray) -> np.ndarray: ...

    def rise(self, images: np.ndarray, targets: Sequence[int], n_masks: int, cells: int, p: float, seed: int) -> np.ndarray: ...


class HostForward:
    """A `ForwardSession` over a plain function `x -> {"logits", ...}` (tests, host models): masked inputs
    are composed on the host."""

    def __init__(self, fn: Callable[[np.ndarray], dict[str, np.ndarray]]) -> None:
        self.fn = fn

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return self.fn(x)

    def masked(self, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """(N * K, classes) logits of images[i] * masks[i, k], image-major."""
        return self.fn((images[:, None] * masks[:, :, None]).reshape(-1, *images.shape[1:]))["logits"]

    def scorecam(self, images: np.ndarray, maps: np.ndarray) -> np.ndarray:
        """(N * K, classes) logits of images[i] x the Score-CAM mask of maps[i, k] (`scorecam_masks`)."""
        return self.masked(images, scorecam_masks(maps, images.shape[2], images.shape[3]))

    def rise(self, images: np.ndarray, targets: Sequence[int], n_masks: int, cells: int, p: float, seed: int) -> np.ndarray:
        """(N, H, W) RISE saliency, Eq. 6: E[softmax(f(I * M))_c M] / p over the seeded masks (`rise_masks`)."""
        masks = rise_masks(n_masks, cells, (images.shape[3], images.shape[2]), p, seed)
        out = []
        for img, t in zip(images, targets):
            prob = softmax_rows(self.fn(img[None] * masks[:, None])["logits"])
            out.append(np.tensordot(prob[:, int(t)], masks, axes=1) / (len(masks) * p))
        return np.asarray(out, dtype=np.float32)


@dataclass
class CamContext:
    """Host-side things a CAM method may use: the fp32 model, its target layer, the (normalised) inputs."""

    model: "torch.nn.Module"
    target_layer: str
    images: np.ndarray  # (N, C, H, W) normalised, as fed to the device
    batch_size: int = 0  # images per host forward / backward; 0: `cam_batch_size` of the input size
    forward: Optional[ForwardSession] = None  # the device session (wrap a plain function in HostForward)
    sim_module: Optional["torch.nn.Module"] = None  # fake-quant graph of the artifact (ONNX QDQ), for "sim"
    seed: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)  # the methods' options (`CamMethod.option_help`); defaults where absent
    rise_cells: int = 8
    body: Optional[OnnxBody] = None  # the host fp32 body in ONNX Runtime, for the reference CAM (checked against torch)

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            self.batch_size = cam_batch_size(int(self.images.shape[2]), int(self.images.shape[3]))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), the order cv2.resize wants."""
        return int(self.images.shape[3]), int(self.images.shape[2])


CAM_METHODS: Registry[type[CamMethod]] = Registry("CAM method")

CAM_PIXEL_BUDGET = 8 * 224 * 224  # input pixels per host gradient batch: 8 images at 224 px (a MobileNetV2
# backward holds ~90 MB of activations per 224 px image), 32 at 64 px and below


HOST_FORWARD_PIXEL_BUDGET = 32 * 224 * 224  # input pixels per no-grad host forward: 32 images at 224 px (a
# MobileNetV2 forward at batch 256 and 224 px peaks at ~1.6 GB in its expanded layers), 256 at 64 px


def host_batch_size(height: int, width: int, cap: int = 256) -> int:
    """Images per no-grad host forward (accuracy, the reference CAM's classes): bounded by input pixels."""
    return max(1, min(cap, HOST_FORWARD_PIXEL_BUDGET // max(1, height * width)))


def cam_batch_size(height: int, width: int) -> int:
    """Images per host forward / backward of a gradient CAM: bounded by input pixels, so that host memory
    does not grow with the resolution (1 at 640 px, 8 at 224 px, 32 for the 64 px quickstart)."""
    return max(1, min(32, CAM_PIXEL_BUDGET // max(1, height * width)))


def _package_cam(kind: str) -> Any:
    """The `grad-cam` package's class for the gradient method registered as `kind`."""
    import pytorch_grad_cam

    return getattr(pytorch_grad_cam, CAM_METHODS.get(kind).package_class)


class _Injector:
    """Forward hook that replaces the target layer's output with given features (requires_grad for the
    grad-cam package's gradient hook, which is registered after this one and so sees the injected tensor).

    The hook returns a clone, a non-leaf tensor like the output it replaces: models that apply an in-place
    op right after the target layer (DenseNet's `F.relu(features, inplace=True)` after `features.norm5`)
    would otherwise fail on a leaf that requires grad, or write into the caller's features array."""

    def __init__(self, layer: "torch.nn.Module") -> None:
        self.value: "torch.Tensor | None" = None
        self.handle = layer.register_forward_hook(self)

    def __call__(self, _module: Any, _inputs: Any, output: "torch.Tensor") -> "torch.Tensor | None":
        if self.value is None:
            return None
        if tuple(self.value.shape) != tuple(output.shape):
            raise ValueError(f"injected features {tuple(self.value.shape)} do not match the target layer's output {tuple(output.shape)}")
        return self.value.clone()


def gradient_cams(ctx: CamContext, kind: str, targets: Sequence[int] | None, features: np.ndarray | None = None) -> np.ndarray:
    """Gradient CAM `kind` of the host model; with `features`, the mirror (the device's features in place of
    the target layer's output). `targets` None: each image's own top-1 (of the host model, or of the head on
    the given features).

    Where the model splits at the target layer (`explain.split`), only the head runs on the features (and,
    without features, the body once under no_grad); else the whole model runs with the features injected."""
    split = split_model(ctx.model.eval(), ctx.target_layer)
    finite = np.flatnonzero(np.isfinite(ctx.images).reshape(len(ctx.images), -1).all(1))[:2]  # verified on real inputs where any
    probe = ctx.images[finite] if len(finite) else ctx.images[:2]
    x = _batch(probe, 0, len(probe))
    if split.ok and split.verify(ctx.model, x):
        body = ctx.body if features is None and ctx.body is not None and ctx.body.check(split, x) else None
        return _head_cams(ctx, split, kind, targets, features, body)
    if targets is None:
        targets = host_predictions(ctx.model, ctx.images)
    return _whole_model_cams(ctx, kind, targets, features)


def _batch(a: np.ndarray, i: int, j: int) -> "torch.Tensor":
    import torch

    return torch.from_numpy(np.ascontiguousarray(a[i:j], dtype=np.float32))


def _head_cams(ctx: CamContext, split: Split, kind: str, targets: Sequence[int] | None, features: np.ndarray | None,
               body: OnnxBody | None = None) -> np.ndarray:
    """The head-only path: d logit / d features through `split.head`, weighted by the `grad-cam` package's
    formula (`package_weighted_cam`). Without `features` the body runs first: `body` (checked) or torch's. The
    activations and gradients are taken exactly where the package's hooks take them: on a copy of the features
    that the head consumes (so a head that rectifies in place, as DenseNet's does, gives the package's post-ReLU
    activations), its gradient by a tensor hook."""
    import torch

    assert split.body is not None and split.head is not None
    b = host_batch_size(int(ctx.images.shape[2]), int(ctx.images.shape[3]))
    out: list[np.ndarray] = []
    for i in range(0, len(ctx.images), b):
        j = min(len(ctx.images), i + b)
        if features is None and body is not None:
            f = torch.from_numpy(body(ctx.images[i:j]))
        elif features is None:
            with torch.no_grad():
                f = split.body(_batch(ctx.images, i, j))
        else:
            f = _batch(features, i, j)
            x1 = _batch(ctx.images, i, i + 1)
            if tuple(f.shape[1:]) != split.feature_shape(x1):
                raise ValueError(f"features {tuple(f.shape[1:])} per image do not match the target layer's output {split.feature_shape(x1)}")
        leaf = f.detach().requires_grad_(True)
        acts = leaf.clone()  # the head may write into it (in-place ReLU); never into the caller's array
        grads: list["torch.Tensor"] = []
        acts.register_hook(grads.append)
        logits = split.head(acts)
        idx = logits.detach().argmax(1) if targets is None else torch.as_tensor(np.asarray(targets[i:j], dtype=np.int64))
        torch.autograd.grad(logits.gather(1, idx[:, None]).sum(), leaf)
        out.append(package_weighted_cam(kind, acts.detach().numpy(), grads[0].numpy(), ctx.size))
    return np.concatenate(out) if out else np.zeros((0, *ctx.images.shape[2:]), np.float32)


def _whole_model_cams(ctx: CamContext, kind: str, targets: Sequence[int], features: np.ndarray | None) -> np.ndarray:
    """The `grad-cam` package's own CAM on the whole model, the features (if given) injected at the target layer."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = ctx.model.get_submodule(ctx.target_layer)
    injector = _Injector(layer) if features is not None else None
    cam_cls = _package_cam(kind)
    out: list[np.ndarray] = []
    try:
        with cam_cls(model=ctx.model.eval(), target_layers=[layer]) as cam:
            for i in range(0, len(ctx.images), ctx.batch_size):
                x = _batch(ctx.images, i, i + ctx.batch_size)
                if injector is not None:
                    injector.value = _batch(features, i, i + ctx.batch_size).requires_grad_(True)  # type: ignore[arg-type]
                tg = [ClassifierOutputTarget(int(c)) for c in targets[i : i + ctx.batch_size]]
                out.append(cam(input_tensor=x, targets=tg))
    finally:
        if injector is not None:
            injector.handle.remove()
    return np.concatenate(out).astype(np.float32)


def host_predictions(model: "torch.nn.Module", images: np.ndarray) -> np.ndarray:
    """Top-1 of the host model on (N, C, H, W) images, in no-grad batches bounded by input pixels."""
    import torch

    b = host_batch_size(images.shape[2], images.shape[3], cap=128)
    with torch.no_grad():
        return np.concatenate([model(_batch(images, i, i + b)).argmax(1).numpy() for i in range(0, len(images), b)]).astype(np.int64)


class GradientCam(CamMethod):
    """A gradient CAM of the `grad-cam` package. "mirror": the device's features injected at the target
    layer, gradients through the host head; "sim": everything in the artifact's host fake-quant graph
    (2403.09939's set-up). Subclasses set `name`, `kind` (the package's class) and `label`."""

    modes = ("mirror", "sim")
    needs_gradients = True
    kind: ClassVar[str]  # the registered name
    package_class: ClassVar[str]  # the `pytorch_grad_cam` class that computes it
    label: ClassVar[str]

    def __call__(self, ctx: "CamContext", features: np.ndarray, targets: Sequence[int]) -> np.ndarray:
        if self.run_mode == "sim":
            return sim_gradient_cams(ctx, self.kind, targets)
        return gradient_cams(ctx, self.kind, targets, features)


def gradient_cam(name: str, package_class: str, label: str) -> type[GradientCam]:
    """A `GradientCam` for the `grad-cam` package's `package_class`, registered as `name`."""
    doc = f"{label}: {GradientCam.__doc__}"
    return type(f"GradientCam_{name}", (GradientCam,), {"name": name, "kind": name, "package_class": package_class, "label": label, "__doc__": doc})


CAM_METHODS.add("gradcampp", gradient_cam("gradcampp", "GradCAMPlusPlus", "Grad-CAM++"))
CAM_METHODS.add("gradcam", gradient_cam("gradcam", "GradCAM", "Grad-CAM"))
CAM_METHODS.add("xgradcam", gradient_cam("xgradcam", "XGradCAM", "XGrad-CAM"))
CAM_METHODS.add("layercam", gradient_cam("layercam", "LayerCAM", "LayerCAM"))
CAM_METHODS.add("hirescam", gradient_cam("hirescam", "HiResCAM", "HiResCAM"))


@CAM_METHODS.register("eigencam")
class EigenCam(CamMethod):
    """Eigen-CAM (Muhammad & Yeasin 2020): projection of the centred activations on their first principal
    component, sign-corrected so salient regions are positive (Seg-Eigen-CAM, Chung & Ying 2025, Eq. 13).
    Needs only the device's `features`: a surrogate CAM that never touches the host graph."""

    name = "eigencam"
    modes = ("surrogate",)

    def __call__(self, ctx: CamContext, features: np.ndarray, targets: Sequence[int]) -> np.ndarray:
        from pytorch_grad_cam.utils.image import scale_cam_image

        return scale_cam_image(np.maximum(eigen_projection(features), 0), ctx.size).astype(np.float32)


def eigen_projection(features: np.ndarray) -> np.ndarray:
    """(N, h, w) projection of each image's centred (h*w, C) activations on their first right singular vector,
    sign-corrected (Chung & Ying 2025, Eq. 13: flipped where |min| > |max|): the `grad-cam` package's
    `get_2d_projection_with_sign_correction`, from the top eigenpair of each map's small Gram matrix, the whole
    batch in one LAPACK call (the package computes a full C x C V per map and keeps one row: 0.3 s per map at
    1,280 channels), and without writing into `features` (the package sets NaN to 0 in place). An image whose
    features hold Inf gets a NaN map instead of an exception that would end the shard."""
    f = np.asarray(features, dtype=np.float32)
    n, c = f.shape[:2]
    out = np.full((n, *f.shape[2:]), np.nan, dtype=np.float32)
    m = np.where(np.isnan(f), np.float32(0), f).reshape(n, c, -1).transpose(0, 2, 1)  # (N, h*w, C), a copy
    ok = np.isfinite(m).reshape(n, -1).all(1)
    if ok.any():
        m = m[ok] - m[ok].mean(axis=1, keepdims=True)
        # projection on the first right singular vector v1 = M^T u1 / s1 is M v1 = s1 u1, with (s1^2, u1) the top
        # eigenpair of the (h*w) x (h*w) Gram matrix M M^T: a 49 x 49 eigenproblem instead of a 49 x C SVD
        gram = np.matmul(m.astype(np.float64), m.astype(np.float64).transpose(0, 2, 1))
        lam, u = np.linalg.eigh(gram)  # ascending eigenvalues
        proj = (u[:, :, -1] * np.sqrt(np.maximum(lam[:, -1:], 0.0))).astype(np.float32)  # (N, h*w)
        flip = np.abs(proj.min(1)) > np.abs(proj.max(1))
        proj[flip] = -proj[flip]
        out[ok] = proj.reshape(len(proj), *f.shape[2:])
    return out


class _NoHooks:
    def release(self) -> None:
        """Nothing was hooked."""


def package_weighted_cam(kind: str, activations: np.ndarray, grads: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The `grad-cam` package's own weighting of (activations, gradients) for method `kind`, then ReLU and
    its min-max + bilinear resize (`BaseCAM.compute_cam_per_layer`). The classes' `get_cam_image` /
    `get_cam_weights` are pure numpy for these methods, so they run on an instance that hooks nothing."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    cam_obj = object.__new__(_package_cam(kind))
    cam_obj.activations_and_grads = _NoHooks()  # what BaseCAM.__del__ releases
    cam = cam_obj.get_cam_image(None, None, None, activations, grads, False)
    # BaseCAM normalises twice: per layer before the resize, and again after it (`aggregate_multi_layers`); the
    # second matters (the resized map's range is not [0, 1]), and mirror CAMs go through it
    return scale_cam_image(scale_cam_image(np.maximum(cam, 0), size)).astype(np.float32)


def sim_gradient_cams(ctx: CamContext, kind: str, targets: Sequence[int]) -> np.ndarray:
    """Gradient CAM `kind` computed entirely in the artifact's fake-quant graph (`ctx.sim_module`): its own
    features and d logit / d features, weighted by the `grad-cam` package's formula."""
    import torch

    if ctx.sim_module is None:
        raise ValueError("sim CAMs need the artifact's fake-quant graph (ONNX artifacts only)")
    out: list[np.ndarray] = []
    for i in range(0, len(ctx.images), ctx.batch_size):
        x = torch.from_numpy(np.ascontiguousarray(ctx.images[i : i + ctx.batch_size], dtype=np.float32))
        res = ctx.sim_module(x)
        feats, logits = res["features"], res["logits"]
        idx = torch.as_tensor(np.asarray(targets[i : i + ctx.batch_size], dtype=np.int64))
        (grads,) = torch.autograd.grad(logits.gather(1, idx[:, None]).sum(), feats)
        out.append(package_weighted_cam(kind, feats.detach().numpy(), grads.numpy(), ctx.size))
    return np.concatenate(out)


def _need_forward(ctx: CamContext, method: str) -> ForwardSession:
    if ctx.forward is None:
        raise ValueError(f"{method} needs a device session (CamContext.forward) to run masked inputs through")
    return ctx.forward


def _target_scores(logits: np.ndarray, target: int) -> np.ndarray:
    return np.asarray(logits, dtype=np.float64)[:, int(target)]


@CAM_METHODS.register("scorecam")
class ScoreCam(CamMethod):
    """Score-CAM (Wang et al., CVPRW 2020, Eq. 6-8) on the device: each activation channel, bilinearly
    upsampled (align_corners, as `torch.nn.UpsamplingBilinear2d`) and min-max normalised, masks the input;
    the target logits, softmaxed over channels, weight the channels. Follows the `grad-cam` package's
    `ScoreCAM` step by step (raw logit scores, softmax weights, ReLU, min-max + resize), so the two agree on
    fp32. The session composes the masks (`ForwardSession.scorecam`): only the channel maps at their own
    resolution travel, never a K x H x W array.

    The option `scorecam_top_k` > 0 caps the work at the k channels of highest mean activation per image
    (K device forwards per image become k; the softmax and the sum run over those k), an approximation the
    rows record (`cam_channels`); 0 uses every channel, as the paper does."""

    name = "scorecam"
    modes = ("surrogate",)
    needs_forward = True
    max_maps_per_call = 16384  # channel maps per session call: bounds what one request holds
    option_help = {"scorecam_top_k": "Score-CAM on the k most active channels per image (k device forwards, not C); 0: all"}

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        return {"scorecam_top_k": int_option(options, "scorecam_top_k", 0, 0, "0 (every channel) or a positive channel count")}

    @classmethod
    def channels(cls, channels: int, options: Mapping[str, Any]) -> int:
        k = cls.check_options(options)["scorecam_top_k"]
        return min(channels, k) if k > 0 else channels

    @classmethod
    def device_work(cls, n_img: int, input_shape: tuple[int, ...], feature_shape: tuple[int, ...], options: Mapping[str, Any]) -> tuple[int, int]:
        """One forward per weighed channel and image; the image and its channel maps at their own resolution
        travel (the device upsamples them)."""
        k = cls.channels(int(feature_shape[0]) if feature_shape else 0, options)
        return n_img * k, n_img * (int(np.prod(input_shape)) * 4 + k * int(np.prod(feature_shape[1:])) * 4)

    def __call__(self, ctx: CamContext, features: np.ndarray, targets: Sequence[int]) -> np.ndarray:
        forward = _need_forward(ctx, "Score-CAM")
        feats = np.asarray(features, dtype=np.float32)
        n, k = feats.shape[:2]
        top_k = self.check_options(ctx.options)["scorecam_top_k"]
        if 0 < top_k < k:  # per image, the top-k channels by mean activation
            top = np.sort(np.argsort(-feats.mean(axis=(2, 3)), axis=1, kind="stable")[:, :top_k], axis=1)
            feats = np.take_along_axis(feats, top[:, :, None, None], axis=1)
            k = feats.shape[1]
        per_call = max(1, self.max_maps_per_call // max(1, k))
        out: list[np.ndarray] = []
        for i in range(0, n, per_call):
            x = ctx.images[i : i + per_call].astype(np.float32)
            logits = forward.scorecam(x, feats[i : i + per_call]).reshape(len(x), k, -1)
            scores = np.stack([_target_scores(logits[j], targets[i + j]) for j in range(len(x))])
            weights = softmax_rows(scores)  # over the channels, Eq. 8
            cam = (weights[:, :, None, None] * feats[i : i + per_call]).sum(1)
            out.append(_scale(cam, ctx.size))
        return np.concatenate(out)


def scorecam_masks(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, K, height, width) Score-CAM masks from (N, K, h, w) channel maps: align-corners bilinear
    upsampling, then per-map min-max normalisation (`perturb.py`: what the device computes)."""
    from edgecam.perturb import scorecam_masks as masks

    return masks(maps, height, width)


def _scale(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from pytorch_grad_cam.utils.image import scale_cam_image

    return scale_cam_image(np.maximum(cam, 0), size).astype(np.float32)


def rise_masks(n: int, cells: int, size: tuple[int, int], p: float = 0.5, seed: int = 0) -> np.ndarray:
    """RISE masks (Petsiuk et al., BMVC 2018, Sec. 3.2): binary `cells` x `cells` grids with keep
    probability `p`, upsampled bilinearly to (cells+1) x cell size and cropped at a random offset; the
    device's own generator (`perturb.py`, pure numpy), so host and device draw the same masks."""
    from edgecam.perturb import rise_masks as masks

    return masks(n, cells, size, p, seed)


@CAM_METHODS.register("rise")
class Rise(CamMethod):
    """RISE (Petsiuk et al., BMVC 2018, Eq. 6): saliency = E[f_c(I * M) M] / p over seeded random masks,
    the fully black-box baseline: it uses nothing but the device's logits (softmax probabilities)."""

    name = "rise"
    modes = ("surrogate",)
    needs_activations = False
    needs_forward = True
    keep_p = 0.5
    option_help = {"rise_masks": "RISE's random masks per image (one device forward each)"}

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        return {"rise_masks": int_option(options, "rise_masks", 1000, 1, "a positive integer")}

    @classmethod
    def device_work(cls, n_img: int, input_shape: tuple[int, ...], feature_shape: tuple[int, ...], options: Mapping[str, Any]) -> tuple[int, int]:
        """One forward per mask and image; only the image travels (the device draws the seeded masks)."""
        return n_img * cls.check_options(options)["rise_masks"], n_img * int(np.prod(input_shape)) * 4

    def __call__(self, ctx: CamContext, features: np.ndarray, targets: Sequence[int]) -> np.ndarray:
        forward = _need_forward(ctx, "RISE")
        sal = forward.rise(np.asarray(ctx.images, dtype=np.float32), [int(t) for t in targets], self.check_options(ctx.options)["rise_masks"], ctx.rise_cells,
                           self.keep_p, ctx.seed)
        return np.concatenate([_scale(s[None], ctx.size) for s in sal]) if len(sal) else np.zeros((0, *ctx.images.shape[2:]), np.float32)


def cam_method(name: str, mode: str | None = None) -> CamMethod:
    """Instance of the CAM method `name` running in `mode` (default: the method's first mode)."""
    return CAM_METHODS.get(name)(mode)


def gradient_method_names() -> list[str]:
    """The registered methods that take gradients through the host graph (what a host reference may be)."""
    return [n for n in CAM_METHODS.names() if CAM_METHODS.get(n).needs_gradients]


def reference_cams(ctx: CamContext, kind: str, targets: Sequence[int] | None) -> np.ndarray:
    """The CAM of the host fp32 model itself (no injection): the reference. `targets` None: the host's top-1."""
    return gradient_cams(ctx, kind, targets, None)
