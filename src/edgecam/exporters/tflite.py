"""TFLite (LiteRT) exporter: PyTorch -> .tflite with `litert-torch` (no TensorFlow), then static quantization
with `ai-edge-quantizer`: int8 (`static_wi8_ai8`) and TFLite's 16x8 mode (`static_wi8_ai16`: int16
activations, int8 weights). Same two outputs, `logits` and `features`, same manifest as the ONNX exporter.

Scales come from MinMax calibration on a seeded subset of the training split (`quant_method = "ptq"`):
ai-edge-quantizer's calibration result is keyed by TFLite tensor names, which do not map onto the QDQ ONNX
graph's tensors, so the QAT-learned ranges are not carried over (yet); the manifest says so.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from edgecam.errors import ArtifactError
from edgecam.exporters.base import (
    EXPORTERS,
    Artifact,
    CalibData,
    Exporter,
    ExportSpec,
    ModelInfo,
    calibration_subset,
    common_manifest_fields,
    input_spec,
    staging_dir,
    two_output_module,
    write_manifest,
)
from edgecam.exporters.onnx import quiet

if TYPE_CHECKING:
    import torch

RECIPES = {"int8": "static_wi8_ai8", "int16": "static_wi8_ai16"}
SIGNATURE = "serving_default"
OUTPUT_NAMES = {"logits": "output_0", "features": "output_1"}  # litert-torch names tuple outputs in order


def _unsupported_op(message: str) -> str | None:
    """The op a converter error complains about, if it names one."""
    for pattern in (r"failed to legalize operation '([\w.]+)'", r"No conversion for (?:op|operator) '?([\w.:]+)", r"aten\.(\w+)", r"'(tfl\.[\w]+)' op"):
        match = re.search(pattern, message)
        if match:
            return match.group(1)
    return None


def convert_fp32(model: "torch.nn.Module", info: ModelInfo, path: Path) -> None:
    """Convert the two-output wrapper to an fp32 .tflite (batch fixed at 1, NCHW as in PyTorch)."""
    import torch

    wrapped = two_output_module(model, info.target_layer)
    try:
        import litert_torch

        with quiet(), torch.no_grad():
            edge = litert_torch.convert(wrapped, (torch.zeros((1, *info.input_shape)),))
            edge.export(str(path))
    except Exception as exc:
        op = _unsupported_op(str(exc))
        where = f" (unsupported op {op!r})" if op else ""
        raise ArtifactError(f"TFLite conversion of model {info.name!r} failed{where}: {type(exc).__name__}: {str(exc)[:2000]}") from exc
    finally:
        wrapped.handle.remove()


def quantize_tflite(fp32_path: Path, out_path: Path, precision: str, calib_images: np.ndarray) -> None:
    """ai-edge-quantizer static quantization with MinMax calibration on `calib_images` (one per call: batch 1)."""
    from ai_edge_quantizer import quantizer, recipe

    q = quantizer.Quantizer(str(fp32_path))
    q.load_quantization_recipe(getattr(recipe, RECIPES[precision])())
    with quiet():
        calibration = q.calibrate({SIGNATURE: [{"args_0": img[None].astype(np.float32)} for img in calib_images]}, num_threads=2)
        result = q.quantize(calibration, enable_progress_report=False)
    result.export_model(str(out_path), overwrite=True)


def tensor_dtypes(path: Path) -> dict[str, list[str]]:
    """dtype name -> names of the tensors of that type in a .tflite (what the acceptance tests read)."""
    from edgecam.runtimes.litert import load_interpreter

    interp = load_interpreter(str(path), threads=1)
    out: dict[str, list[str]] = {}
    for t in interp.get_tensor_details():
        out.setdefault(np.dtype(t["dtype"]).name, []).append(t["name"])
    return out


@EXPORTERS.register("tflite")
class TfliteExporter(Exporter):
    """PyTorch -> .tflite (fp32) -> int8 / 16x8 .tflite via ai-edge-quantizer."""

    format = "tflite"
    supported = ("fp32", "int16", "int8")
    atol_fp32 = 1e-4

    def export(
        self,
        model: "torch.nn.Module",
        info: ModelInfo,
        spec: ExportSpec,
        out_dir: Path,
        calib: CalibData | None = None,
        progress: Callable[[str, float], None] | None = None,
    ) -> Artifact:
        """Write `out_dir/model.tflite` + `manifest.json` atomically; nothing is left behind on failure."""
        out_dir = Path(out_dir)
        quant: dict[str, Any] = {"method": "none", "quant_method": "none"}
        with staging_dir(out_dir) as tmp:
            fp32 = tmp / "fp32.tflite"
            self.fp32_file(model, info, fp32, lambda p: convert_fp32(model, info, p))
            final = tmp / "model.tflite"
            if spec.precision == "fp32":
                fp32.rename(final)
            else:
                images = calibration_subset(calib, info, spec)
                try:
                    quantize_tflite(fp32, final, spec.precision, images)
                except Exception as exc:
                    raise ArtifactError(f"TFLite {spec.precision} quantization of model {info.name!r} failed: {type(exc).__name__}: {exc}") from exc
                fp32.unlink()
                quant = {
                    "method": "ptq",
                    "quant_method": "ptq",
                    "recipe": RECIPES[spec.precision],
                    "activation_dtype": spec.precision,
                    "weight_dtype": "int8",
                    "calibration": f"MinMax on {len(images)} training images (seed {spec.seed})",
                    "why_not_qat_ranges": "ai-edge-quantizer calibration is keyed by TFLite tensor names, not mapped from the QDQ ONNX graph",
                }
            fields = {
                **common_manifest_fields(model, info, spec),
                "format": "tflite",
                # TFLite's 16-bit tier is 16x8: int16 activations, int8 weights
                "precision_effective": {"fp32": "fp32", "int8": "int8", "int16": "int16x8"}[spec.precision],
                "output_names": OUTPUT_NAMES,
                "signature": SIGNATURE,
                "input": input_spec("args_0", [1, *info.input_shape], "float32" if spec.precision == "fp32" else spec.precision, info),
                "quantization": quant,
                "versions": _versions(),
            }
            write_manifest(tmp, final, fields)
        return Artifact.load(out_dir)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "litert-torch", "ai-edge-quantizer", "ai-edge-litert"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
