"""CAM methods over what a device returned.

- reference: the `grad-cam` package on the host fp32 PyTorch model (the ground truth for "vs fp32").
- mirror:    the device's `features` are injected into the host fp32 PyTorch graph at the target layer and
             gradients are taken through the host head; the CAM maths is the `grad-cam` package's.
- surrogate: needs nothing but the device's outputs, e.g. Eigen-CAM from `features` alone.

All CAMs come out as (N, H, W) float32 at the input resolution, min-max normalised, resized bilinearly
(`pytorch_grad_cam.utils.image.scale_cam_image`, cv2.INTER_LINEAR), as DESIGN.md's metric section requires.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from edgecam.registry import Registry

if TYPE_CHECKING:
    import torch


class CamMethod:
    """A CAM method; flags say what it needs (pytorch-grad-cam's `uses_gradients` idea)."""

    name: ClassVar[str]
    mode: ClassVar[str]  # "mirror" | "surrogate"
    needs_activations: ClassVar[bool] = True
    needs_gradients: ClassVar[bool] = False
    needs_forward: ClassVar[bool] = False

    def __call__(self, ctx: "CamContext", features: np.ndarray, targets: Sequence[int]) -> np.ndarray:
        raise NotImplementedError


@dataclass
class CamContext:
    """Host-side things a CAM method may use: the fp32 model, its target layer, the (normalised) inputs."""

    model: "torch.nn.Module"
    target_layer: str
    images: np.ndarray  # (N, C, H, W) normalised, as fed to the device
    batch_size: int = 32

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), the order cv2.resize wants."""
        return int(self.images.shape[3]), int(self.images.shape[2])


CAM_METHODS: Registry[type[CamMethod]] = Registry("CAM method")


def _package_cam(kind: str) -> Any:
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM

    return {"gradcam": GradCAM, "gradcampp": GradCAMPlusPlus, "xgradcam": XGradCAM, "layercam": LayerCAM, "hirescam": HiResCAM}[kind]


class _Injector:
    """Forward hook that replaces the target layer's output with given features (requires_grad for the
    grad-cam package's gradient hook, which is registered after this one and so sees the injected tensor)."""

    def __init__(self, layer: "torch.nn.Module") -> None:
        self.value: "torch.Tensor | None" = None
        self.handle = layer.register_forward_hook(self)

    def __call__(self, _module: Any, _inputs: Any, output: "torch.Tensor") -> "torch.Tensor | None":
        if self.value is None:
            return None
        if tuple(self.value.shape) != tuple(output.shape):
            raise ValueError(f"injected features {tuple(self.value.shape)} do not match the target layer's output {tuple(output.shape)}")
        return self.value


def gradient_cams(ctx: CamContext, kind: str, targets: Sequence[int], features: np.ndarray | None = None) -> np.ndarray:
    """Gradient CAM `kind` of the host model; with `features`, the mirror (device features injected)."""
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = ctx.model.get_submodule(ctx.target_layer)
    injector = _Injector(layer) if features is not None else None
    cam_cls = _package_cam(kind)
    out: list[np.ndarray] = []
    try:
        with cam_cls(model=ctx.model.eval(), target_layers=[layer]) as cam:
            for i in range(0, len(ctx.images), ctx.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(ctx.images[i : i + ctx.batch_size], dtype=np.float32))
                if injector is not None:
                    f = np.ascontiguousarray(features[i : i + ctx.batch_size], dtype=np.float32)  # type: ignore[index]
                    injector.value = torch.from_numpy(f).requires_grad_(True)
                tg = [ClassifierOutputTarget(int(c)) for c in targets[i : i + ctx.batch_size]]
                out.append(cam(input_tensor=x, targets=tg))
    finally:
        if injector is not None:
            injector.handle.remove()
    return np.concatenate(out).astype(np.float32)


def _mirror(kind: str, label: str) -> type[CamMethod]:
    class Mirror(CamMethod):
        name = f"{kind}"
        mode = "mirror"
        needs_gradients = True
        __doc__ = f"{label} with device features injected at the target layer, gradients through the host head."

        def __call__(self, ctx: CamContext, features: np.ndarray, targets: Sequence[int]) -> np.ndarray:
            return gradient_cams(ctx, kind, targets, features)

    Mirror.__name__ = f"Mirror_{kind}"
    return Mirror


for _kind, _label in [("gradcampp", "Grad-CAM++"), ("gradcam", "Grad-CAM"), ("xgradcam", "XGrad-CAM"), ("layercam", "LayerCAM"), ("hirescam", "HiResCAM")]:
    CAM_METHODS.add(_kind, _mirror(_kind, _label))


@CAM_METHODS.register("eigencam")
class EigenCam(CamMethod):
    """Eigen-CAM (Muhammad & Yeasin 2020): projection of the centred activations on their first principal
    component, sign-corrected so salient regions are positive (Seg-Eigen-CAM, Chung & Ying 2025, Eq. 13).
    Needs only the device's `features`: a surrogate CAM that never touches the host graph."""

    name = "eigencam"
    mode = "surrogate"

    def __call__(self, ctx: CamContext, features: np.ndarray, targets: Sequence[int]) -> np.ndarray:
        from pytorch_grad_cam.utils.image import scale_cam_image
        from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

        proj = get_2d_projection_with_sign_correction(np.asarray(features, dtype=np.float32))
        return scale_cam_image(np.maximum(proj, 0), ctx.size).astype(np.float32)


def cam_method(name: str) -> CamMethod:
    return CAM_METHODS.get(name)()


def reference_cams(ctx: CamContext, kind: str, targets: Sequence[int]) -> np.ndarray:
    """The `grad-cam` package's own CAM on the host model (no injection): the fp32 reference."""
    return gradient_cams(ctx, kind, targets, None)
