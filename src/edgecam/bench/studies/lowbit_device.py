"""The one path by which the low-bit studies run a PACT 4-bit model on the run's device: exported as an ONNX
INT4 / UINT4 QDQ graph and run by ONNX Runtime there, or a labelled reason why not. A graph the exporter cannot
write is a skip; a device that fails on it is recorded and the study goes on (never a fallback, never the end of
the run)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecam.errors import EdgecamError

if TYPE_CHECKING:
    import torch

    from edgecam.bench.context import RunContext
    from edgecam.data.datasets import Datasets


def predictions(model: "torch.nn.Module", x: np.ndarray, batch: int = 512) -> np.ndarray:
    """Host top-1 of `model` on `x`, `batch` images at a time."""
    import torch

    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch], dtype=np.float32))).argmax(1).numpy() for i in range(0, len(x), batch)])


def onnx_device_job(ctx: "RunContext") -> dict[str, Any]:
    """The device job for ONNX Runtime: the settings of the run's ONNX runtime where it has one (threads,
    providers), else the first runtime's, with ONNX Runtime named (the 4-bit graph is ONNX)."""
    from edgecam.bench.measure import device_job
    from edgecam.runtimes import runtime_format

    spec = next((r for r in ctx.cfg.runtimes if runtime_format(r.name) == "onnx"), ctx.cfg.runtimes[0])
    return {**device_job(spec, ctx.dspec), "runtime": "onnxruntime"}


def int4_on_device(ctx: "RunContext", result: Any, data: "Datasets", model_name: str, layer: str, art_dir: Path, x: np.ndarray, what: str) -> dict[str, Any]:
    """`result` (a `pact.PactResult` at 4 bits, trained on `data`: the run's data set or a study's own)
    exported to `art_dir` and run on the device over `x` (the first len(x) test images of `data`):
    ``ort_status`` always; ``ort_accuracy`` and ``ort_top1_agreement`` (with the host simulation) when it ran.
    `what` names the model in the log."""
    from edgecam.devices.session import DeviceSession
    from edgecam.exporters.base import ModelInfo
    from edgecam.exporters.quantize.pact import PrecisionUnsupported, export_onnx_lowbit

    info = ModelInfo(model_name, data.n_classes, layer, data.input_shape, data.mean, data.std, "pact")  # type: ignore[arg-type]
    try:
        export_onnx_lowbit(result, info, art_dir)
    except PrecisionUnsupported as exc:
        return {"ort_status": f"skipped: {exc}"}
    try:
        with DeviceSession(ctx.device, art_dir, onnx_device_job(ctx), ctx.cfg.bench.timeout_s) as session:
            logits = session(x)["logits"]
    except (EdgecamError, OSError, TimeoutError) as exc:  # the board's runtime could not: recorded, the study goes on
        ctx.log(f"[yellow]{what} int4 on {ctx.device.name} failed: {type(exc).__name__}: {exc}[/yellow]")
        return {"ort_status": f"failed on {ctx.device.name}: {type(exc).__name__}: {str(exc)[:300]}"}
    host = predictions(result.model, x)
    return {"ort_status": f"ran on {ctx.device.name} (ONNX INT4 / UINT4 QDQ)", "ort_accuracy": float((logits.argmax(1) == data.test_y[: len(x)]).mean()),
            "ort_top1_agreement": float((logits.argmax(1) == host).mean())}
