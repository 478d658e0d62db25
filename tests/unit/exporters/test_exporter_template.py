"""The Exporter template method: fp32 validation against PyTorch (a broken conversion is refused with a clear
error and leaves nothing behind), one conversion and validation per model, precision checks, and a format
that implements only the hooks."""

from __future__ import annotations

import copy
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from edgecam.errors import ArtifactError, ConfigError
from edgecam.exporters.base import Artifact, CalibData, Exporter, ExportSpec, ModelInfo, input_spec, two_output_module
from edgecam.exporters.onnx import OnnxExporter
from edgecam.exporters.tflite import TfliteExporter
from edgecam.models import build_model

SHAPE = (3, 32, 32)


def _tinycnn() -> tuple[torch.nn.Module, ModelInfo]:
    torch.manual_seed(0)
    model, layer = build_model("tinycnn", 10)
    return model.eval(), ModelInfo("tinycnn", 10, layer, SHAPE, (0.5,) * 3, (0.25,) * 3, "x")


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """A copy whose classifier bias moved by 0.5: same features, logits off by 0.5."""
    bad = copy.deepcopy(model)
    with torch.no_grad():
        bad.classifier.bias += 0.5
    return bad


def _with_broken_conversion(cls: type[Exporter]) -> type[Exporter]:
    """`cls` whose fp32 conversion exports a perturbed copy of the model (a converter bug, on purpose)."""

    class Broken(cls):  # type: ignore[valid-type,misc]
        def convert_fp32(self, model: torch.nn.Module, info: ModelInfo, spec: ExportSpec, path: Path) -> None:
            super().convert_fp32(_perturbed(model), info, spec, path)

    return Broken


@pytest.mark.parametrize("cls", [OnnxExporter, TfliteExporter], ids=["onnx", "tflite"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_conversion_that_differs_from_pytorch_is_refused_and_leaves_nothing(cls: type[Exporter], precision: str, tmp_path: Path) -> None:
    model, info = _tinycnn()
    calib = CalibData(np.random.default_rng(0).standard_normal((4, *SHAPE)).astype(np.float32), np.zeros(4, dtype=np.int64))
    out = tmp_path / "art"
    with pytest.raises(ArtifactError) as exc:
        _with_broken_conversion(cls)().export(model, info, ExportSpec(precision, quant="ptq"), out, calib)
    msg = str(exc.value)
    assert f"{cls.format} fp32 conversion of model 'tinycnn' does not match PyTorch" in msg, msg
    assert re.search(r"logits max abs diff 0\.5 > tolerance 0\.000\d+ \(atol_fp32 0\.0001 \+ rtol_fp32 0\.001 x max \|logits\| 0\.\d+\) on 2 probe images", msg), msg
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging directory either


@pytest.mark.parametrize("cls", [OnnxExporter, TfliteExporter], ids=["onnx", "tflite"])
def test_valid_export_records_validation_below_atol(cls: type[Exporter], tmp_path: Path) -> None:
    model, info = _tinycnn()
    art = cls().export(model, info, ExportSpec("fp32"), tmp_path / "art")
    v = art.manifest["validation"]
    assert v["atol"] == cls.atol_fp32 and v["rtol"] == cls.rtol_fp32 and v["probe_images"] == 2
    assert set(v["max_abs_diff"]) == set(v["tolerance"]) == {"logits", "features"}
    assert all(0 <= d < cls.atol_fp32 for d in v["max_abs_diff"].values()), v  # far inside the tolerance
    assert all(cls.atol_fp32 <= t for t in v["tolerance"].values()), v


def test_session_artifacts_carry_validation(trained_tinycnn, tflite_tinycnn) -> None:
    """Every precision records the validation of the fp32 conversion it was quantized from."""
    for fmt, arts in (("onnx", trained_tinycnn.artifacts), ("tflite", tflite_tinycnn)):
        for precision, directory in arts.items():
            v = Artifact.load(directory).manifest["validation"]
            assert all(v["max_abs_diff"][k] <= v["tolerance"][k] for k in ("logits", "features")), (fmt, precision, v)


class _Counting(OnnxExporter):
    """Counts conversions and validation runs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = {"convert": 0, "run": 0}

    def convert_fp32(self, model: torch.nn.Module, info: ModelInfo, spec: ExportSpec, path: Path) -> None:
        self.calls["convert"] += 1
        super().convert_fp32(model, info, spec, path)

    def run_fp32(self, path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls["run"] += 1
        return super().run_fp32(path, x)


def test_one_conversion_and_one_validation_per_model(tmp_path: Path) -> None:
    model, info = _tinycnn()
    calib = CalibData(np.random.default_rng(1).standard_normal((8, *SHAPE)).astype(np.float32), np.zeros(8, dtype=np.int64))
    exporter = _Counting()
    fp32 = exporter.export(model, info, ExportSpec("fp32"), tmp_path / "fp32", calib)
    int8 = exporter.export(model, info, ExportSpec("int8", quant="ptq"), tmp_path / "int8", calib)
    assert exporter.calls == {"convert": 1, "run": 1}
    assert int8.manifest["validation"] == fp32.manifest["validation"]
    assert fp32.manifest["quantization"] == {"method": "none"} and int8.manifest["quantization"]["method"] == "ptq"
    assert sorted(p.name for p in int8.directory.iterdir()) == ["manifest.json", "model.onnx"]  # no fp32 / qdq leftovers


def test_unsupported_precision_names_format_and_supported(tmp_path: Path) -> None:
    class Fp32Only(OnnxExporter):
        supported = ("fp32",)

    model, info = _tinycnn()
    with pytest.raises(ConfigError, match=r"format 'onnx' does not support precision 'int8'; supported: fp32$"):
        Fp32Only().export(model, info, ExportSpec("int8"), tmp_path / "art")
    assert list(tmp_path.iterdir()) == []


class TorchScriptExporter(Exporter):
    """A whole format in four hooks: what a new exporter (TensorRT, ...) has to write."""

    format = "torchscript"
    supported = ("fp32",)
    suffix = ".pt"

    def convert_fp32(self, model: torch.nn.Module, info: ModelInfo, spec: ExportSpec, path: Path) -> None:
        wrapped = two_output_module(model, info.target_layer)
        with torch.no_grad():
            traced = torch.jit.trace(wrapped, torch.zeros((1, *info.input_shape)))
        wrapped.handle.remove()
        traced.save(str(path))

    def run_fp32(self, path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            logits, feats = torch.jit.load(io.BytesIO(path.read_bytes()))(torch.from_numpy(x))
        return logits.numpy(), feats.numpy()

    def manifest_fields(self, model: torch.nn.Module, info: ModelInfo, spec: ExportSpec, final_path: Path, quant_info: dict[str, Any]) -> dict[str, Any]:
        return {"precision_effective": "fp32", "input": input_spec("x", ["batch", *info.input_shape], "float32", info)}

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}


def test_a_format_needs_only_the_hooks(tmp_path: Path) -> None:
    model, info = _tinycnn()
    art = TorchScriptExporter().export(model, info, ExportSpec("fp32"), tmp_path / "ts")
    m = art.manifest
    assert art.path.name == "model.pt" and m["format"] == "torchscript" and m["model"] == "tinycnn"
    assert m["output_shapes"] == {"logits": ["batch", 10], "features": ["batch", 96, 4, 4]}
    assert {"input", "precision_effective", "versions", "sha256", "export_spec"} <= set(m)
    assert m["quantization"] == {"method": "none"} and max(m["validation"]["max_abs_diff"].values()) < 1e-6
    with pytest.raises(ArtifactError, match="torchscript fp32 conversion of model 'tinycnn' does not match PyTorch: logits"):
        _with_broken_conversion(TorchScriptExporter)().export(model, info, ExportSpec("fp32"), tmp_path / "broken")
    assert not (tmp_path / "broken").exists()
