"""ONNX exporter: fp32, int16 and int8 (QDQ) artifacts with two outputs, `logits` and `features`.

fp32: `torch.onnx.export(dynamo=True)` of the model wrapped so that the CAM target layer's activation is a
second output, then ONNX Runtime's quantization pre-processing (shape inference, Conv+BatchNorm folding).
int8 / int16: ONNX Runtime's static QDQ quantizer lays out the QuantizeLinear / DequantizeLinear pairs
(per-channel symmetric weights, int8 or int16 weights and activations); with `quant = "qat"` the scales and
weights are then learned by quantization-aware fine-tuning of that very graph (`quantize.qat`), with
`quant = "ptq"` they stay at the MinMax calibration.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from edgecam.errors import ArtifactError
from edgecam.exporters.base import CalibData, Exporter, ExportSpec, ModelInfo, input_spec, two_output_module

if TYPE_CHECKING:
    import torch


@contextlib.contextmanager
def quiet() -> Any:
    """Silence the exporters' prints, progress bars, warnings and native (absl / TFLite) logs: they would break
    edgecam's progress bars. File descriptors 1 and 2 go to a temporary file; if the block raises, what was
    captured is written back to stderr so that nothing needed for diagnosis is lost."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
                warnings.simplefilter("ignore")
                yield
        except BaseException:
            sys.stdout.flush()
            sink.seek(0)
            captured = sink.read().decode(errors="replace") + err.getvalue()
            os.write(saved[1], captured[-8000:].encode())
            raise
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def export_fp32(model: "torch.nn.Module", info: ModelInfo, path: Path, opset: int = 21) -> None:
    """Export the fp32 two-output ONNX graph (dynamic batch) and pre-process it for quantization."""
    import torch
    from onnxruntime.quantization.shape_inference import quant_pre_process

    wrapped = two_output_module(model, info.target_layer)
    example = torch.zeros((2, *info.input_shape), dtype=torch.float32)
    raw = path.with_suffix(".raw.onnx")
    try:
        with quiet(), torch.no_grad():
            torch.onnx.export(
                wrapped,
                (example,),
                str(raw),
                dynamo=True,
                opset_version=opset,
                input_names=["input"],
                output_names=["logits", "features"],
                dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}},
                external_data=False,
            )
            quant_pre_process(str(raw), str(path), skip_symbolic_shape=True)
    except Exception as exc:
        raise ArtifactError(f"ONNX export of model {info.name!r} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        wrapped.handle.remove()
        raw.unlink(missing_ok=True)
        for extra in path.parent.glob(raw.name + "*"):
            extra.unlink(missing_ok=True)


CALIB_BATCH = 32  # images per calibration run at most (what every calibration used before the memory bound)
# bytes of activations one calibration run may compute: ORT's MinMax calibrator runs an augmented graph
# (every float tensor gets a ReduceMin / ReduceMax) with its CPU arena and memory pattern, and holds about
# twice this per run (measured: 32 x 50 MiB per 224 px EfficientNet-Lite0 image -> 3.3 GiB; 5 images -> 0.5 GiB)
CALIB_ACTIVATION_BUDGET = 256 * 2**20


def activation_bytes_per_image(model_path: Path) -> int:
    """Bytes of every tensor the graph computes for one input (its value_info shapes, the batch dimension
    counted as 1); a tensor of unknown shape counts as large as the (first) input."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    infos = {v.name: v for v in (*graph.value_info, *graph.output, *graph.input)}

    def nbytes(vi: Any) -> int | None:
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is None or not tt.HasField("shape") or not tt.elem_type:
            return None
        dims = tt.shape.dim
        if any(not d.HasField("dim_value") for d in dims[1:]):
            return None
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).itemsize
        return int(np.prod([d.dim_value for d in dims[1:]], dtype=np.int64)) * itemsize

    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    default = (nbytes(inputs[0]) if inputs else None) or 0
    total = 0
    for node in graph.node:
        for name in node.output:
            size = nbytes(infos[name]) if name in infos else None
            total += default if size is None else size
    return total


def calibration_batch(model_path: Path, budget: int = CALIB_ACTIVATION_BUDGET, cap: int = CALIB_BATCH) -> int:
    """Images per calibration run so that one run's activations stay within `budget` bytes (1 to `cap`): the
    calibrator's peak then depends on the model and resolution only, not on the number of images. MinMax
    ranges are the min / max over all runs, so the batch size does not change them."""
    return max(1, min(cap, budget // max(1, activation_bytes_per_image(model_path))))


def calibration_reader(images: np.ndarray, batch: int = CALIB_BATCH, input_name: str = "input") -> Any:
    """ONNX Runtime's data reader over `images` in batches of `batch`, each made float32 as it is read (no
    float32 copy of the whole set)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._starts = iter(range(0, len(images), batch))

        def get_next(self) -> dict[str, np.ndarray] | None:
            i = next(self._starts, None)
            return None if i is None else {input_name: np.ascontiguousarray(images[i : i + batch], dtype=np.float32)}

    return Reader()


def x86_without_vnni() -> bool:
    """True on an x86 CPU without AVX-VNNI / AVX512-VNNI, where ONNX Runtime's int8 GEMM (vpmaddubsw) can
    saturate int16 partial sums of 8-bit weights; ORT's documented remedy is 7-bit weights (reduce_range)."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_vnni" not in flags and "avx_vnni" not in flags


def resolve_weight_range(spec_value: str) -> str:
    """"auto" -> "reduced" on x86 without VNNI (the local device is the build host), else "full"."""
    if spec_value == "auto":
        return "reduced" if x86_without_vnni() else "full"
    return spec_value


def quantize_qdq(fp32_path: Path, out_path: Path, precision: str, calib_images: np.ndarray, weight_range: str = "full",
                 activation_budget: int = CALIB_ACTIVATION_BUDGET, input_name: str = "input") -> None:
    """ONNX Runtime static QDQ quantization, per-channel symmetric weights, MinMax calibration.

    `weight_range = "reduced"` stores int8 weights in [-64, 64] (ORT's reduce_range), recorded in the model's
    metadata so that the QAT simulator uses the same range. Calibration runs in batches of at most
    `activation_budget` bytes of activations (`calibration_batch`); the ranges, hence the QDQ graph, are the
    same at any batch size. (Not ORT's `CalibMaxIntermediateOutputs`: what it bounds is the calibrator's
    list of ReduceMin / ReduceMax results, a few bytes per tensor and run, and up to ORT 1.32 it drops the
    collected ranges at each flush instead of merging them, microsoft/onnxruntime#18893.)"""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from edgecam.exporters.quantize.graph import WEIGHT_QMAX_KEY

    qtype = {"int8": QuantType.QInt8, "int16": QuantType.QInt16}[precision]
    with quiet():
        quantize_static(
            str(fp32_path),
            str(out_path),
            calibration_reader(calib_images, calibration_batch(fp32_path, activation_budget), input_name),
            quant_format=QuantFormat.QDQ,
            activation_type=qtype,
            weight_type=qtype,
            per_channel=True,
            reduce_range=precision == "int8" and weight_range == "reduced",
            calibrate_method=CalibrationMethod.MinMax,
            # biases become int32 DQ for both tiers: a float bias would be int32-quantized by ORT's own
            # BiasQuantization graph transformer at load time with s_in x s_w, which overflows at int16
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )
    if precision == "int8" and weight_range == "reduced":
        model = onnx.load(str(out_path))
        onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, f"{WEIGHT_QMAX_KEY}.int8": "64"})
        onnx.save(model, str(out_path))


def integer_weight_dtypes(path: Path) -> dict[str, str]:
    """Names -> element types of the integer initializers read by DequantizeLinear (the stored weights)."""
    import onnx

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            out[node.input[0]] = onnx.TensorProto.DataType.Name(inits[node.input[0]].data_type)
    return out


def finish_qdq(fp32_path: Path, qdq: Path, out_path: Path, spec: ExportSpec, calib: CalibData | None, name: str,
               progress: Callable[[str, float], None] | None) -> dict[str, Any]:
    """The calibrated QDQ graph `qdq` as the artifact `out_path`: fine-tuned first with `quant = "qat"` (scales and
    weights learned on this very graph, `quantize.qat`), as it is with "ptq". Returns the quantization fields."""
    if spec.quant == "qat":
        from edgecam.exporters.quantize.qat import qat_finetune

        assert calib is not None  # calibration_subset checked it
        stats = qat_finetune(fp32_path, qdq, out_path, calib, spec, name=name, progress=progress)
        qdq.unlink(missing_ok=True)
        return {**stats, "scales_from": "qat (learned, written into the QDQ graph)"}
    qdq.rename(out_path)
    return {"scales_from": "ptq calibration"}


class OnnxExporter(Exporter):
    """PyTorch -> ONNX (fp32) -> QDQ ONNX (int16 / int8) with QAT-learned or calibrated scales."""

    format = "onnx"
    supported = ("fp32", "int16", "int8")
    suffix = ".onnx"
    atol_fp32 = 1e-4
    host_simulation = True
    fp32_spec_fields = ("opset",)

    def convert_fp32(self, model: "torch.nn.Module", info: ModelInfo, spec: ExportSpec, path: Path) -> None:
        export_fp32(model, info, path, spec.opset)

    def run_fp32(self, path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ONNX Runtime (the deployed adapter, CPU provider, default optimisation) on the fp32 graph."""
        from edgecam.runtimes.onnxruntime import OnnxRuntime

        with OnnxRuntime(str(path)) as rt:
            out = rt.run({"input": x})
        return out["logits"], out["features"]

    def quantize(
        self,
        fp32_path: Path,
        out_path: Path,
        spec: ExportSpec,
        calib_images: np.ndarray,
        calib: CalibData | None,
        info: ModelInfo,
        progress: Callable[[str, float], None] | None,
    ) -> dict[str, Any]:
        """QDQ layout with MinMax scales, then (`quant = "qat"`) fine-tuned scales and weights."""
        qdq = out_path.with_name("qdq" + self.suffix)
        weight_range = resolve_weight_range(spec.int8_weight_range) if spec.precision == "int8" else "full"
        quantize_qdq(fp32_path, qdq, spec.precision, calib_images, weight_range)
        quant_info: dict[str, Any] = {
            "weight_range": weight_range,
            "method": spec.quant,
            "activation_dtype": spec.precision,
            "weight_dtype": spec.precision,
            "weights": "per-channel symmetric",
            "activations": "per-tensor asymmetric",
            "calibration": f"MinMax on {len(calib_images)} calibration images (seed {spec.seed})",
        }
        quant_info.update(finish_qdq(fp32_path, qdq, out_path, spec, calib, f"{info.name}-{spec.precision}", progress))
        return quant_info

    def manifest_fields(self, model: "torch.nn.Module", info: ModelInfo, spec: ExportSpec, final_path: Path, quant_info: dict[str, Any]) -> dict[str, Any]:
        import onnx

        opset = next((o.version for o in onnx.load(str(final_path), load_external_data=False).opset_import if o.domain in ("", "ai.onnx")), spec.opset)
        return {"precision_effective": spec.precision, "opset": opset, "input": input_spec("input", ["batch", *info.input_shape], "float32", info)}

    def versions(self) -> dict[str, str]:
        import onnx
        import onnxruntime
        import torch

        return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
