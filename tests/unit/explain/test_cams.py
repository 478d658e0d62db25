"""CAM methods: the mirror reproduces the grad-cam package on the PyTorch model; Eigen-CAM from features."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ort_outputs

from edgecam.errors import UnknownNameError
from edgecam.explain.cams import CAM_METHODS, CamContext, cam_method, reference_cams
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
    assert np.mean([cc(a[i], b[i]) for i in range(8) if i != 7 - i]) < 0.9


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
    assert CAM_METHODS.get("eigencam").mode == "surrogate"
    assert CAM_METHODS.get("gradcampp").mode == "mirror"


def test_unknown_cam_method_lists_known() -> None:
    with pytest.raises(UnknownNameError, match="eigencam"):
        cam_method("nosuchcam")
