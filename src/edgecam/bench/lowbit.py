"""The low-bit study of arXiv 2411.05858: PACT QAT at 4-bit, 2-bit and mixed 4/2-bit (`exporters/quantize/
pact.py`), per bit width the top-1 accuracy and the Grad-CAM++ maps compared with the fp32 model's by
SIM / CC / KLD. No runtime executes 2-bit, so every row runs in host simulation and says so; int4 is also
exported as an ONNX INT4 / UINT4 QDQ graph and run on the device where ONNX Runtime loads it (otherwise the
row records why not: a labelled skip, never a fallback). Each bit width is a job of the run's store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    from edgecam.bench.store import JobStore
    from edgecam.data.datasets import Datasets
    from edgecam.config import RunConfig


def lowbit_study(model: Any, layer: str, model_name: str, ckpt_sha: str, cfg: "RunConfig", data: "Datasets", out_dir: Path, device: Any,
                 device_job: dict[str, Any], store: "JobStore", log: Callable[[str], None], device_id: str = "") -> list[dict[str, Any]]:
    """One row per scheme of `cfg.lowbit` for one trained fp32 model (see the module docstring). `device_id`
    (`device_fingerprint`) keys the ONNX Runtime accuracy by the board and its runtime versions."""
    from edgecam.bench.store import Job, job_key
    from edgecam.exporters.quantize.pact import PactSpec

    lb = cfg.lowbit
    rows = []
    for scheme in lb.schemes:
        spec = PactSpec.scheme(scheme, epochs=lb.epochs, lr=lb.lr, samples=lb.samples, seed=cfg.train.seed)
        key = job_key(kind="lowbit", model=model_name, weights=ckpt_sha, spec=spec.to_dict(), data=data.fingerprint, cam=lb.cam, cam_images=lb.cam_images, onnx=lb.onnx, device=device_id)
        job, _ = store.get_or_compute("lowbit", key, lambda: Job(_one_scheme(model, layer, model_name, spec, cfg, data, out_dir, device, device_job, log)),
                                      lambda j: [float(j.meta[k]) for k in ("accuracy", "accuracy_fp32", "cc_mean")] + [str(j.meta[k]) for k in ("precision", "ort_status")])
        assert job is not None  # a scheme either raises or returns its row
        rows.append(job.meta)
        log(f"{model_name} {job.meta['precision']}: accuracy {job.meta['accuracy']:.4f} (fp32 {job.meta['accuracy_fp32']:.4f}), "
            f"CC vs fp32 CAM {job.meta['cc_mean']:.3f}; ONNX Runtime: {job.meta['ort_status']}")
    return rows


def _one_scheme(model: Any, layer: str, model_name: str, spec: Any, cfg: "RunConfig", data: "Datasets", out_dir: Path, device: Any,
                device_job: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    from edgecam.exporters.base import ModelInfo
    from edgecam.exporters.quantize.pact import PrecisionUnsupported, evaluate, export_onnx_lowbit, pact_finetune

    result = pact_finetune(model, spec, data.train_x, data.train_y)
    row = {"model": model_name, **evaluate(result, model, layer, data.test_x, data.test_y, cfg.lowbit.cam_images, cfg.lowbit.cam),
           "layer_bits": result.layer_bits, "qat_seconds": result.stats.get("qat_seconds"), "ort_accuracy": float("nan"), "ort_top1_agreement": float("nan")}
    if not cfg.lowbit.onnx:
        row["ort_status"] = "not asked (lowbit.onnx = false)"
        return row
    info = ModelInfo(model_name, data.n_classes, layer, data.input_shape, data.mean, data.std, "pact")  # type: ignore[arg-type]
    art_dir = out_dir / "artifacts" / f"{model_name}-onnx-{spec.label.replace('/', '_')}"
    try:
        export_onnx_lowbit(result, info, art_dir)
    except PrecisionUnsupported as exc:
        row["ort_status"] = f"skipped: {exc}"
        return row
    from edgecam.devices.session import DeviceSession

    with DeviceSession(device, art_dir, {**device_job, "runtime": "onnxruntime"}, cfg.bench.timeout_s) as session:
        logits = session(data.test_x)["logits"]
    import torch

    with torch.no_grad():
        host = torch.cat([result.model(torch.from_numpy(np.ascontiguousarray(data.test_x[i : i + 256]))) for i in range(0, len(data.test_x), 256)]).numpy()
    row.update(ort_accuracy=float((logits.argmax(1) == data.test_y).mean()), ort_top1_agreement=float((logits.argmax(1) == host.argmax(1)).mean()),
               ort_status=f"ran on {device.name} (ONNX INT4 / UINT4 QDQ)")
    return row

