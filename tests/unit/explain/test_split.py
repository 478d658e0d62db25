"""The host model split at its CAM layer (explain/split.py) and the head-only mirror and reference CAMs built on
it: equal to the `grad-cam` package's own classes on the whole model, and a logged fallback where no split holds."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgecam.explain.cams import CamContext, _whole_model_cams, eigen_projection, gradient_cams, host_predictions
from edgecam.explain.metrics import cc
from edgecam.explain.split import split_model


def _model(name: str) -> tuple[Any, str]:
    import torch

    from edgecam.models import build_model

    torch.manual_seed(0)
    return build_model(name, 10)


def _device_features(model: Any, layer: str, x: np.ndarray, noise: float = 0.05) -> np.ndarray:
    """The target layer's output on `x`, perturbed as a quantized device's would be."""
    import torch

    got: list[np.ndarray] = []
    hook = model.get_submodule(layer).register_forward_hook(lambda _m, _i, o: got.append(o.detach().numpy().copy()))
    with torch.no_grad():
        model(torch.from_numpy(x))
    hook.remove()
    f = got[0]
    return (f + noise * float(np.abs(f).mean()) * np.random.default_rng(1).normal(size=f.shape)).astype(np.float32)


@pytest.mark.parametrize("name", ["tinycnn", "mobilenet_v2", "densenet121", "resnet50", "efficientnet_lite0"])
def test_split_reproduces_the_models_logits(name: str) -> None:
    import torch

    model, layer = _model(name)
    split = split_model(model, layer)
    assert split.ok, split.reason
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32))
    with torch.no_grad():
        assert torch.equal(split.head(split.body(x)), model(x))  # the same ops in the same order: bit for bit
    assert split.verify(model, x) and split.checked
    assert split_model(model, layer) is split  # traced once per model and layer


@pytest.mark.parametrize("name", ["tinycnn", "densenet121", "efficientnet_lite0"])
@pytest.mark.parametrize("kind", ["gradcampp", "gradcam", "layercam"])
def test_head_only_cams_equal_the_package_on_the_whole_model(name: str, kind: str) -> None:
    """Mirror (features injected) and reference (the host's own features, its own top-1) through the head only
    vs the `grad-cam` package's class on the whole model. DenseNet rectifies its CAM layer's output in place:
    the head path must take activations and gradients where the package's hooks take them."""
    model, layer = _model(name)
    x = np.random.default_rng(0).normal(size=(5, 3, 64, 64)).astype(np.float32)
    ctx = CamContext(model, layer, x)
    feats = _device_features(model, layer, x)
    before = feats.copy()
    targets = np.array([1, 3, 5, 7, 9])
    head = gradient_cams(ctx, kind, targets, feats)
    assert split_model(model, layer).ok  # the head path really ran
    assert np.array_equal(feats, before)  # nothing written into the caller's features
    whole = _whole_model_cams(ctx, kind, targets, feats)
    assert head.shape == whole.shape == (5, 64, 64)
    assert np.abs(head - whole).max() < 1e-4
    assert min(cc(head[i], whole[i]) for i in range(5) if np.ptp(whole[i]) > 0) >= 0.9999
    ref = gradient_cams(ctx, kind, None)  # targets None: the host model's own top-1
    ref_whole = _whole_model_cams(ctx, kind, host_predictions(model, x), None)
    assert np.abs(ref - ref_whole).max() < 1e-4


class _SkipAroundLayer:
    """A model whose output adds its input's mean back after the CAM layer: the head reads the input."""

    @staticmethod
    def build() -> Any:
        import torch
        from torch import nn

        class M(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.conv = nn.Conv2d(3, 8, 3, padding=1)
                self.fc = nn.Linear(8, 4)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                f = self.conv(x)
                return self.fc(f.mean((2, 3)) + x.mean((1, 2, 3))[:, None])

        torch.manual_seed(0)
        return M().eval()


def _flipping_model() -> Any:
    """A model whose Python-side state changes its output on every call: fx bakes the state it saw while
    tracing, so the split cannot reproduce the next call (the verification must catch it)."""
    import torch
    from torch import nn

    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc = nn.Linear(8, 4)
            self.flip = False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.flip = not self.flip
            return self.fc(self.conv(x).mean((2, 3))) * (2.0 if self.flip else 1.0)

    torch.manual_seed(0)
    return M().eval()


def _untraceable_model() -> Any:
    import torch
    from torch import nn

    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc = nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.conv(x)
            if f.sum() > 0:  # control flow on a value: fx cannot trace it
                f = f * 2
            return self.fc(f.mean((2, 3)))

    torch.manual_seed(0)
    return M().eval()


@pytest.mark.parametrize("build, why", [(_SkipAroundLayer.build, "also read the model's input"), (_untraceable_model, "torch.fx cannot trace"),
                                        (_flipping_model, "differs from the model's logits")])
def test_models_that_do_not_split_fall_back_to_the_whole_forward_with_a_reason(build: Any, why: str) -> None:
    model = build()
    x = np.random.default_rng(0).normal(size=(3, 3, 16, 16)).astype(np.float32)
    feats = _device_features(model, "conv", x)
    targets = [0, 1, 2]
    got = gradient_cams(CamContext(model, "conv", x), "gradcampp", targets, feats)
    split = split_model(model, "conv")
    assert not split.ok and why in (split.reason or ""), split.reason
    if build is not _flipping_model:  # (that model's own output changes per call: the two runs differ by design)
        assert np.allclose(got, _whole_model_cams(CamContext(model, "conv", x), "gradcampp", targets, feats), atol=1e-6)


def test_features_of_the_wrong_shape_are_refused_on_the_head_path() -> None:
    model, layer = _model("tinycnn")
    x = np.zeros((2, 3, 64, 64), np.float32)
    with pytest.raises(ValueError, match="do not match the target layer's output"):
        gradient_cams(CamContext(model, layer, x), "gradcampp", [0, 1], np.zeros((2, 3, 4, 4), np.float32))


def test_eigen_projection_equals_the_package_and_leaves_its_input_alone() -> None:
    """The Gram eigenpair of the whole batch vs the package's full SVD per map: CC >= 0.99999 per map, sign correction
    included, on ImageNet-sized features (1,280 x 7 x 7) and on a real network's; NaN read as 0 without writing
    into the caller's array; an image with Inf gets a NaN map, the others are unaffected."""
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

    rng = np.random.default_rng(0)
    big = np.maximum(rng.normal(size=(6, 1280, 7, 7)), 0).astype(np.float32) * rng.uniform(0.5, 2, size=(6, 1, 7, 7)).astype(np.float32)
    model, layer = _model("mobilenet_v2")
    real = _device_features(model, layer, rng.normal(size=(4, 3, 96, 96)).astype(np.float32), noise=0)
    for feats in (big, real):
        feats[0, 3, 2, 2] = np.nan
        before = feats.copy()
        ours = eigen_projection(feats)
        assert np.array_equal(feats, before, equal_nan=True)
        pkg = get_2d_projection_with_sign_correction(feats.copy())
        assert ours.shape == pkg.shape == (len(feats), *feats.shape[2:])
        assert min(cc(ours[i], pkg[i]) for i in range(len(feats))) >= 0.99999
        assert all(abs(ours[i].max()) >= abs(ours[i].min()) for i in range(len(feats)))  # the sign correction
    bad = big.copy()
    bad[2, 0, 0, 0] = np.inf
    out = eigen_projection(bad)
    assert np.isnan(out[2]).all() and np.isfinite(np.delete(out, 2, axis=0)).all()
