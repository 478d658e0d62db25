"""The six architectures of arXiv 2403.09939 end to end, randomly initialised, at 64 x 64 (the smallest size
whose CAM layer still has a spatial map: 2 x 2 for most, 3 x 3 SqueezeNet, 4 x 4 VGG16): int8 ONNX and int8
TFLite export (PTQ calibration on scikit-image's bundled photos), a timed run of each artifact in ONNX
Runtime / LiteRT through the local device's agent (a separate process), and mirror Grad-CAM++ from the
device's features on 2 images, compared with the host fp32 Grad-CAM++.

Random weights with BatchNorm statistics from 48 photo views are a hard case for per-tensor int8
activations (channels that rarely fire become outliers after BatchNorm): measured int8-vs-fp32 feature
correlation r / mean Grad-CAM++ CC, ONNX and TFLite alike: SqueezeNet1.0 0.999 / 0.998, VGG16 0.999 / 0.999,
DenseNet121 0.93 / 0.75-0.98, EfficientNet-B0 0.88 / 0.68-0.81, MobileNetV2 0.63 / 0.54, ResNet50
0.56-0.58 / 0.94-0.98. The thresholds (0.4) sit below those and far above chance (r ~ 0).

SqueezeNet1.0 runs in `make test` (~20-50 s); the other five take 0.5 to 1.5 minutes each on a 2-core
machine (VGG16's 138M parameters dominate) and run in `make test-slow` (pytest -m slow).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from edgecam.data.image_folder import load_image_folder, write_skimage_folder
from edgecam.devices.local import LocalDevice
from edgecam.exporters.base import Artifact, CalibData, ExportSpec, ModelInfo
from edgecam.exporters.onnx import OnnxExporter, integer_weight_dtypes
from edgecam.exporters.tflite import TfliteExporter, tensor_dtypes
from edgecam.explain.cams import CamContext, cam_method, reference_cams
from edgecam.explain.metrics import cc, sim
from edgecam.models import build_model
from edgecam.models.train import recalibrate_batchnorm

SIZE = 64
CLASSES = 5  # the photo folder's classes
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SLOW = pytest.mark.slow
FEATURE_R_MIN = 0.4  # int8 vs fp32 CAM-layer activations, Pearson r (random weights: see the module doc)
CAM_CC_MIN = 0.4  # mean CC of the int8 mirror Grad-CAM++ with the fp32 one over the 2 images
ARCHS = [
    pytest.param("squeezenet1_0"),
    pytest.param("mobilenet_v2", marks=SLOW),
    pytest.param("resnet50", marks=SLOW),
    pytest.param("efficientnet_b0", marks=SLOW),
    pytest.param("densenet121", marks=SLOW),
    pytest.param("vgg16", marks=SLOW),
]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The six bundled photos at 64 x 64 (shorter side 73, centre crop 64), ImageNet-normalised; and for
    BatchNorm statistics and calibration, 48 views: the photos at four scales (shorter side 64, 73, 90,
    120, centre crop 64), each also mirrored."""
    paths = write_skimage_folder(tmp_path_factory.mktemp("photos"))
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(IMAGENET_STD, dtype=np.float32).reshape(1, 3, 1, 1)
    views = {r: load_image_folder(paths.images, boxes_dir=paths.boxes, resize=r, crop=SIZE) for r in (64, 73, 90, 120)}
    normalised = [((d.images - mean) / std).astype(np.float32) for d in views.values()]
    calib = np.ascontiguousarray(np.concatenate(normalised + [v[..., ::-1] for v in normalised]))
    labels = np.tile(views[73].labels, 2 * len(views))
    return {"x": normalised[1], "calib": calib, "calib_labels": labels}


def _host_reference(model: torch.nn.Module, layer: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    feats: list[torch.Tensor] = []
    hook = model.get_submodule(layer).register_forward_hook(lambda _m, _i, out: feats.append(out))
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    hook.remove()
    return logits, feats[0].numpy()


def _int8_tensors(fmt: str, art: Artifact) -> int:
    """How many int8 tensors the artifact stores; fails if a weight stayed float / wider."""
    if fmt == "onnx":
        dtypes = integer_weight_dtypes(art.path)
        weights = {k: v for k, v in dtypes.items() if "bias" not in k}
        assert set(weights.values()) == {"INT8"} and set(dtypes.values()) <= {"INT8", "INT32"}, dtypes
        return len(weights)
    by_type = tensor_dtypes(art.path)
    assert "int16" not in by_type, by_type.get("int16", [])[:5]
    return len(by_type.get("int8", []))


@pytest.mark.parametrize("name", ARCHS)
def test_architecture_int8_onnx_and_tflite_through_the_agent_with_mirror_gradcampp(name: str, photos: dict[str, Any], tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, layer = build_model(name, CLASSES)
    # random weights, BatchNorm statistics of the photos: activations at the scale a trained net has
    recalibrate_batchnorm(model, torch.from_numpy(photos["calib"]), batch_size=16)
    model.eval()
    info = ModelInfo(name, CLASSES, layer, (3, SIZE, SIZE), IMAGENET_MEAN, IMAGENET_STD, f"random-seed0-{name}")
    spec = ExportSpec("int8", quant="ptq", calib_samples=len(photos["calib"]))
    calib = CalibData(photos["calib"], photos["calib_labels"])
    x = photos["x"][:2]
    ref_logits, ref_feats = _host_reference(model, layer, x)
    targets = ref_logits.argmax(1)
    ctx = CamContext(model, layer, x)
    ref_cams = reference_cams(ctx, "gradcampp", targets)
    n_weight_layers = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in model.modules())
    device = LocalDevice(workdir=str(tmp_path / "device"))
    measured: dict[str, dict[str, Any]] = {}
    for fmt, exporter, runtime in (("onnx", OnnxExporter(), "onnxruntime"), ("tflite", TfliteExporter(), "litert")):
        art = exporter.export(model, info, spec, tmp_path / f"{name}-{fmt}-int8", calib)
        job = {"runtime": runtime, "runtime_options": {"threads": 2}, "mode": "run", "warmup": 1, "iterations": 3, "batch_size": 1}
        result, out = device.run_job(art.directory, x, job, timeout=300)
        cams = cam_method("gradcampp")(ctx, out["features"], targets)
        measured[fmt] = {
            "manifest": art.manifest,
            "int8_tensors": _int8_tensors(fmt, art),
            "samples": result["samples_s"],
            "out": out,
            "cams": cams,
            "feature_r": float(np.corrcoef(out["features"].ravel(), ref_feats.ravel())[0, 1]),
            "cam_cc": [cc(cams[i], ref_cams[i]) for i in range(len(x))],
            "cam_sim": [sim(cams[i], ref_cams[i]) for i in range(len(x))],
        }
        m = measured[fmt]
        print(f"{name} {fmt} int8: {m['int8_tensors']} int8 tensors, features r={m['feature_r']:.3f} vs fp32, Grad-CAM++ vs fp32 CC={np.round(m['cam_cc'], 3).tolist()} SIM={np.round(m['cam_sim'], 3).tolist()}")
    for fmt, m in measured.items():
        assert m["manifest"]["precision_effective"] == "int8"
        assert m["int8_tensors"] >= n_weight_layers, fmt
        assert len(m["samples"]) == 3 and all(s > 0 for s in m["samples"])
        out, cams = m["out"], m["cams"]
        assert out["logits"].shape == ref_logits.shape and out["features"].shape == ref_feats.shape, fmt
        assert np.isfinite(out["logits"]).all() and np.isfinite(out["features"]).all(), fmt
        assert cams.shape == (2, SIZE, SIZE) and np.isfinite(cams).all() and cams.min() >= 0 and cams.max() <= 1
        assert m["feature_r"] > FEATURE_R_MIN, (fmt, m["feature_r"])
        assert np.mean(m["cam_cc"]) > CAM_CC_MIN, (fmt, m["cam_cc"])
