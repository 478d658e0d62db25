"""TFLite exporter: fp32 round trip, int8 / 16x8 tensor types, agreement with fp32, bad-op errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import litert_outputs

from edgecam.errors import ArtifactError
from edgecam.exporters.base import Artifact, ExportSpec, ModelInfo
from edgecam.exporters.tflite import TfliteExporter, tensor_dtypes


def test_fp32_tflite_matches_pytorch(trained_tinycnn, tflite_tinycnn) -> None:
    x = trained_tinycnn.data.test_x[:32]
    out = litert_outputs(tflite_tinycnn["fp32"], x)
    feats: list[torch.Tensor] = []
    h = trained_tinycnn.model.get_submodule(trained_tinycnn.layer).register_forward_hook(lambda m, i, o: feats.append(o))
    with torch.no_grad():
        ref = trained_tinycnn.model(torch.from_numpy(x)).numpy()
    h.remove()
    assert np.abs(out["logits"] - ref).max() < TfliteExporter.atol_fp32
    assert np.abs(out["features"] - torch.cat(feats).numpy()).max() < TfliteExporter.atol_fp32


def test_int8_holds_int8_weights_and_int16_holds_int16_activations(tflite_tinycnn) -> None:
    int8 = tensor_dtypes(Artifact.load(tflite_tinycnn["int8"]).path)
    assert len(int8.get("int8", [])) >= 10 and "int16" not in int8 and "float32" not in int8
    int16 = tensor_dtypes(Artifact.load(tflite_tinycnn["int16"]).path)
    assert len(int16.get("int16", [])) >= 10  # activations
    assert len(int16.get("int8", [])) >= 5  # 16x8: weights stay int8
    manifest = Artifact.load(tflite_tinycnn["int16"]).manifest
    assert manifest["precision_effective"] == "int16x8" and manifest["quantization"]["quant_method"] == "ptq"


@pytest.mark.parametrize("precision", ["int8", "int16"])
def test_quantized_tflite_agrees_with_fp32(trained_tinycnn, tflite_tinycnn, precision: str) -> None:
    x = trained_tinycnn.data.test_x
    fp32 = litert_outputs(tflite_tinycnn["fp32"], x)["logits"].argmax(1)
    q = litert_outputs(tflite_tinycnn[precision], x)["logits"].argmax(1)
    assert (q == fp32).mean() >= 0.97


def test_xnnpack_switch_gives_the_same_answer(trained_tinycnn, tflite_tinycnn) -> None:
    x = trained_tinycnn.data.test_x[:8]
    a = litert_outputs(tflite_tinycnn["fp32"], x)["logits"]
    b = litert_outputs(tflite_tinycnn["fp32"], x, xnnpack=False)["logits"]
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_mirror_and_eigencam_work_on_litert_exactly_as_on_onnx(trained_tinycnn, tflite_tinycnn) -> None:
    """Same CAM code path for both formats: on fp32 artifacts the CAMs agree across formats."""
    from conftest import ort_outputs

    from edgecam.explain.cams import CamContext, cam_method
    from edgecam.explain.metrics import cc

    x = trained_tinycnn.data.test_x[:16]
    ctx = CamContext(trained_tinycnn.model, trained_tinycnn.layer, x)
    lt = litert_outputs(tflite_tinycnn["fp32"], x)
    ox = ort_outputs(trained_tinycnn.artifacts["fp32"], x)
    targets = ox["logits"].argmax(1)
    for method in ("gradcampp", "eigencam"):
        a = cam_method(method)(ctx, lt["features"], targets)
        b = cam_method(method)(ctx, ox["features"], targets)
        assert min(cc(a[i], b[i]) for i in range(16)) > 0.999, method


def test_unconvertible_model_names_model_and_leaves_nothing(tmp_path: Path) -> None:
    class Bad(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.svdvals(self.conv(x).flatten(2)).float()

    info = ModelInfo("svdnet", 4, "conv", (3, 16, 16), (0.5,) * 3, (0.25,) * 3, "x")
    with pytest.raises(ArtifactError, match="svdnet.*(svd|linalg)"):
        TfliteExporter().export(Bad().eval(), info, ExportSpec("fp32"), tmp_path / "bad")
    assert list(tmp_path.iterdir()) == []


def test_calibration_ranges_are_the_true_extrema_over_the_calibration_set(trained_tinycnn, tflite_tinycnn) -> None:
    """ai-edge-quantizer's own `calibrate` keeps a moving average of per-image extrema, which clips the test
    split; edgecam's calibration must hold the true min / max over every calibration image."""
    from ai_edge_quantizer import recipe

    from edgecam.exporters.tflite import calibrate_min_max

    images = trained_tinycnn.data.train_x[:24]
    fp32 = Artifact.load(tflite_tinycnn["fp32"]).path
    qsvs = calibrate_min_max(fp32, recipe.static_wi8_ai8(), images)
    feats = litert_outputs(tflite_tinycnn["fp32"], images)["features"]
    (key,) = [k for k in qsvs if "output_1" in k and "max" in qsvs[k]]
    assert float(np.max(qsvs[key]["max"])) == pytest.approx(float(feats.max()), rel=1e-6)
    assert float(np.min(qsvs[key]["min"])) == pytest.approx(float(feats.min()), abs=1e-6)
    per_image_max = feats.reshape(len(images), -1).max(1)
    assert per_image_max.min() < 0.95 * per_image_max.max()  # the images differ: an average would be lower
