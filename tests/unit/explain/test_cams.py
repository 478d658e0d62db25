"""CAM methods: the mirror reproduces the grad-cam package on the PyTorch model; Eigen-CAM from features."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ort_outputs

from edgecam.errors import UnknownNameError
from edgecam.explain.cams import CAM_METHODS, CamContext, HostForward, cam_method, gradient_method_names, reference_cams
from edgecam.explain.metrics import cc


def test_mirror_gradcampp_on_fp32_artifact_reproduces_package(trained_tinycnn) -> None:
    """Device features of the fp32 ONNX artifact injected into the host graph -> the package's own
    GradCAMPlusPlus on the PyTorch model, CC >= 0.999 per image."""
    x = trained_tinycnn.data.test_x[:40]
    out = ort_outputs(trained_tinycnn.artifacts["fp32"], x)
    ctx = CamContext(trained_tinycnn.model, trained_tinycnn.layer, x)
    targets = out["logits"].argmax(1)
    mirror = cam_method("gradcampp")(ctx, out["features"], targets)
    ref = reference_cams(ctx, "gradcampp", targets)
    assert mirror.shape == (40, 64, 64)
    scores = [cc(mirror[i], ref[i]) for i in range(len(x))]
    assert min(scores) >= 0.999, min(scores)


def test_mirror_uses_the_injected_features(trained_tinycnn) -> None:
    """Injecting different features changes the CAM: the mirror really explains what the device returned."""
    x = trained_tinycnn.data.test_x[:8]
    out = ort_outputs(trained_tinycnn.artifacts["fp32"], x)
    ctx = CamContext(trained_tinycnn.model, trained_tinycnn.layer, x)
    targets = out["logits"].argmax(1)
    shuffled = out["features"][::-1].copy()
    a = cam_method("gradcampp")(ctx, out["features"], targets)
    b = cam_method("gradcampp")(ctx, shuffled, targets)
    # image i's CAM from image 7-i's features: every pair differs (8 images: no image is its own mirror)
    assert np.mean([cc(a[i], b[i]) for i in range(8)]) < 0.9


def test_mirror_survives_an_inplace_op_after_the_target_layer_and_leaves_features_alone() -> None:
    """DenseNet applies `F.relu(..., inplace=True)` right after its CAM layer (features.norm5): the injected
    features must not be a leaf the in-place op trips on, nor the caller's array it writes into."""
    import torch

    from edgecam.models import build_model

    torch.manual_seed(0)
    model, layer = build_model("densenet121", 4)
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    feats: list[torch.Tensor] = []
    hook = model.get_submodule(layer).register_forward_hook(lambda _m, _i, o: feats.append(o.detach().clone()))
    with torch.no_grad():
        targets = model(torch.from_numpy(x)).argmax(1).numpy()
    hook.remove()
    device_features = feats[0].numpy()
    before = device_features.copy()
    ctx = CamContext(model, layer, x)
    mirror = cam_method("gradcampp")(ctx, device_features, targets)
    ref = reference_cams(ctx, "gradcampp", targets)
    assert np.array_equal(device_features, before) and (before < 0).any()  # the ReLU did not write into it
    assert min(cc(mirror[i], ref[i]) for i in range(2)) > 0.999


def test_injection_shape_mismatch_is_reported(trained_tinycnn) -> None:
    x = trained_tinycnn.data.test_x[:2]
    ctx = CamContext(trained_tinycnn.model, trained_tinycnn.layer, x)
    with pytest.raises(ValueError, match="do not match"):
        cam_method("gradcampp")(ctx, np.zeros((2, 3, 4, 4), np.float32), [0, 1])


def test_eigencam_from_features_only(trained_tinycnn) -> None:
    x = trained_tinycnn.data.test_x[:16]
    out = ort_outputs(trained_tinycnn.artifacts["int8"], x)
    ctx = CamContext(trained_tinycnn.model, trained_tinycnn.layer, x)
    cams = cam_method("eigencam")(ctx, out["features"], [0] * 16)
    assert cams.shape == (16, 64, 64)
    assert cams.min() >= 0 and cams.max() <= 1 + 1e-6
    # the digit is what the network looks at: Eigen-CAM correlates with the ground-truth mask on average
    masks = trained_tinycnn.data.test_masks[:16]
    assert np.nanmean([cc(cams[i], masks[i]) for i in range(16)]) > 0.2
    assert CAM_METHODS.get("eigencam").modes == ("surrogate",)
    assert CAM_METHODS.get("gradcampp").modes == ("mirror", "sim")
    assert CAM_METHODS.get("gradcampp").default_mode() == "mirror"


def test_unknown_cam_method_lists_known() -> None:
    with pytest.raises(UnknownNameError, match="eigencam"):
        cam_method("nosuchcam")


def _ort_session(artifact_dir):  # the device session a surrogate CAM sends its masked inputs through
    calls: list[int] = []

    def forward(x: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(len(x))
        return ort_outputs(artifact_dir, x)

    return HostForward(forward), calls


@pytest.mark.parametrize("kind", ["gradcam", "xgradcam", "layercam"])
def test_mirror_methods_on_fp32_artifact_reproduce_package(trained_tinycnn, kind: str) -> None:
    x = trained_tinycnn.data.test_x[:24]
    out = ort_outputs(trained_tinycnn.artifacts["fp32"], x)
    ctx = CamContext(trained_tinycnn.model, trained_tinycnn.layer, x)
    targets = out["logits"].argmax(1)
    mirror = cam_method(kind)(ctx, out["features"], targets)
    ref = reference_cams(ctx, kind, targets)
    scores = [cc(mirror[i], ref[i]) for i in range(len(x)) if np.ptp(ref[i]) > 0]
    assert len(scores) >= 20 and min(scores) >= 0.999, (kind, min(scores))


def test_surrogate_scorecam_on_fp32_artifact_reproduces_package(trained_tinycnn) -> None:
    """Score-CAM from the ORT session alone (masked inputs batched through it) vs the `grad-cam` package's
    ScoreCAM on the PyTorch model: CC >= 0.99 per image."""
    import torch
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = trained_tinycnn.data.test_x[:6]
    art = trained_tinycnn.artifacts["fp32"]
    out = ort_outputs(art, x)
    forward, calls = _ort_session(art)
    ctx = CamContext(trained_tinycnn.model, trained_tinycnn.layer, x, forward=forward)
    targets = out["logits"].argmax(1)
    ours = cam_method("scorecam")(ctx, out["features"], targets)
    layer = trained_tinycnn.model.get_submodule(trained_tinycnn.layer)
    with ScoreCAM(model=trained_tinycnn.model.eval(), target_layers=[layer]) as pkg:
        ref = pkg(input_tensor=torch.from_numpy(x), targets=[ClassifierOutputTarget(int(t)) for t in targets])
    scores = [cc(ours[i], ref[i]) for i in range(len(x))]
    assert min(scores) >= 0.99, scores
    channels = out["features"].shape[1]
    assert sum(calls) == len(x) * channels and len(calls) == 1  # one batched device call for all six images
    assert CAM_METHODS.get("scorecam").modes == ("surrogate",) and CAM_METHODS.get("scorecam").needs_forward


def test_scorecam_without_a_device_session_says_so(trained_tinycnn) -> None:
    x = trained_tinycnn.data.test_x[:1]
    ctx = CamContext(trained_tinycnn.model, trained_tinycnn.layer, x)
    with pytest.raises(ValueError, match="device session"):
        cam_method("scorecam")(ctx, np.zeros((1, 96, 8, 8), np.float32), [0])


def test_rise_is_seeded_and_finds_the_digit(trained_tinycnn) -> None:
    from edgecam.explain.cams import rise_masks

    x = trained_tinycnn.data.test_x[:4]
    art = trained_tinycnn.artifacts["fp32"]
    out = ort_outputs(art, x)
    forward, calls = _ort_session(art)
    ctx = CamContext(trained_tinycnn.model, trained_tinycnn.layer, x, forward=forward, options={"rise_masks": 400}, seed=3)
    targets = out["logits"].argmax(1)
    a = cam_method("rise")(ctx, out["features"], targets)
    b = cam_method("rise")(ctx, out["features"], targets)
    assert np.array_equal(a, b) and a.shape == (4, 64, 64)
    assert calls == [400] * 8
    masks = trained_tinycnn.data.test_masks[:4]
    assert np.mean([cc(a[i], masks[i]) for i in range(4)]) > 0.2  # black-box, but it looks at the digit
    m = rise_masks(50, 8, (64, 64), 0.5, seed=0)
    assert m.shape == (50, 64, 64) and 0.35 < m.mean() < 0.65 and m.min() >= 0 and m.max() <= 1


def test_sim_mode_on_fp32_graph_reproduces_the_reference_and_differs_at_int8(trained_tinycnn) -> None:
    """"sim": the CAM computed in the artifact's own (fake-quant) graph. On the fp32 artifact it is the
    package's Grad-CAM++ on the PyTorch model; on int8 it is the host simulation 2403.09939 used."""
    import onnx

    from edgecam.exporters.quantize.graph import OnnxGraphModule

    x = trained_tinycnn.data.test_x[:16]
    targets = ort_outputs(trained_tinycnn.artifacts["fp32"], x)["logits"].argmax(1)
    ref = reference_cams(CamContext(trained_tinycnn.model, trained_tinycnn.layer, x), "gradcampp", targets)
    sims = {}
    for precision in ("fp32", "int8"):
        graph = OnnxGraphModule(onnx.load(str(trained_tinycnn.artifacts[precision] / "model.onnx"))).eval()
        ctx = CamContext(trained_tinycnn.model, trained_tinycnn.layer, x, sim_module=graph)
        sims[precision] = cam_method("gradcampp", mode="sim")(ctx, np.empty(0), targets)
    assert min(cc(sims["fp32"][i], ref[i]) for i in range(16)) >= 0.999
    int8 = [cc(sims["int8"][i], ref[i]) for i in range(16)]
    assert 0.5 < np.mean(int8) < 0.99999  # close to fp32, not identical: the fake-quant is really there


def test_capabilities_route_the_methods() -> None:
    """The flags on the classes are the single source: gradient methods (the ones a host reference may use)
    are exactly those declaring needs_gradients, and a mode a method does not declare is refused."""
    assert gradient_method_names() == ["gradcam", "gradcampp", "hirescam", "layercam", "xgradcam"]
    assert not any(CAM_METHODS.get(n).needs_gradients for n in ("eigencam", "scorecam", "rise"))
    assert cam_method("layercam", "sim").run_mode == "sim" and cam_method("layercam").run_mode == "mirror"
    with pytest.raises(ValueError, match="eigencam.*surrogate.*not 'sim'"):
        cam_method("eigencam", "sim")


def test_reference_body_in_onnx_runtime_equals_the_torch_body(trained_tinycnn) -> None:
    """`OnnxBody` on the fp32 export: accepted by its check, and the reference CAMs it gives equal the torch body's
    (CC >= 0.9999 per image); the int8 export's features differ beyond the tolerance, so its check refuses it
    with a reason and the reference falls back to the torch body."""
    import torch

    from edgecam.explain.split import OnnxBody, split_model

    x = trained_tinycnn.data.test_x[:16]
    body = OnnxBody(trained_tinycnn.artifacts["fp32"] / "model.onnx", threads=1)
    with_ort = reference_cams(CamContext(trained_tinycnn.model, trained_tinycnn.layer, x, body=body), "gradcampp", None)
    assert body.checked and body.reason is None
    torch_only = reference_cams(CamContext(trained_tinycnn.model, trained_tinycnn.layer, x), "gradcampp", None)
    assert min(cc(with_ort[i], torch_only[i]) for i in range(len(x))) >= 0.9999
    bad = OnnxBody(trained_tinycnn.artifacts["int8"] / "model.onnx", threads=1)
    split = split_model(trained_tinycnn.model, trained_tinycnn.layer)
    assert not bad.check(split, torch.from_numpy(np.ascontiguousarray(x[:2], dtype=np.float32)))
    assert "differ from the torch body" in (bad.reason or "")


def test_a_device_forward_method_must_state_its_device_work() -> None:
    """`needs_forward` is read where a method is defined: the run's work estimate asks every such method for its
    device forwards and bytes, so one that does not say fails at its definition, not as a silent zero."""
    from edgecam.explain.cams import CamMethod

    with pytest.raises(TypeError, match="runs inputs through the device \\(needs_forward\\) but does not define device_work"):
        type("Silent", (CamMethod,), {"name": "silent", "modes": ("surrogate",), "needs_forward": True})
    stated = type("Stated", (CamMethod,), {"name": "stated", "modes": ("surrogate",), "needs_forward": True,
                                           "device_work": classmethod(lambda cls, n, i, f, o: (n, 0))})
    assert stated.device_work(3, (3, 8, 8), (4, 2, 2), {}) == (3, 0)
