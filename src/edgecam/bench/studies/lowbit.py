"""The low-bit study of arXiv 2411.05858: PACT QAT at 4-bit, 2-bit and mixed 4/2-bit (`exporters/quantize/
pact.py`), per bit width the top-1 accuracy and the Grad-CAM++ maps compared with the fp32 model's by
SIM / CC / KLD. No runtime executes 2-bit, so every row runs in host simulation and says so; int4 is also
exported as an ONNX INT4 / UINT4 QDQ graph and run on the device where ONNX Runtime loads it (otherwise the
row records why not: a labelled skip, or the device's error with the study going on; never a fallback). The
device path is `lowbit_device`, shared with the saliency-QAT study. Each bit width is a job of the run's store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

    from edgecam.bench.context import RunContext
    from edgecam.exporters.quantize.pact import PactResult


def lowbit_study(ctx: "RunContext", model: Any, layer: str, model_name: str, ckpt_sha: str) -> list[dict[str, Any]]:
    """One row per scheme of `ctx.cfg.lowbit` for one trained fp32 model (see the module docstring). The job keys
    name the device by its fingerprint (`ctx.device_id`), so the ONNX Runtime accuracy is the board's."""
    from edgecam.bench.store import Job, job_key
    from edgecam.exporters.quantize.pact import PactSpec

    cfg, data, lb = ctx.cfg, ctx.data, ctx.cfg.lowbit
    rows = []
    for scheme in lb.schemes:
        spec = PactSpec.scheme(scheme, epochs=lb.epochs, lr=lb.lr, samples=lb.samples, seed=cfg.train.seed)
        key = job_key(kind="lowbit", model=model_name, weights=ckpt_sha, spec=spec.to_dict(), data=data.fingerprint, cam=lb.cam, cam_images=lb.cam_images, onnx=lb.onnx,
                      device=ctx.device_id or ctx.device.name)
        job, _ = ctx.store.get_or_compute("lowbit", key, lambda: Job(_one_scheme(ctx, model, layer, model_name, spec)),
                                          lambda j: [float(j.meta[k]) for k in ("accuracy", "accuracy_fp32", "cc_mean")] + [str(j.meta[k]) for k in ("precision", "ort_status")])
        assert job is not None  # a scheme either raises or returns its row
        rows.append(job.meta)
        ctx.log(f"{model_name} {job.meta['precision']}: accuracy {job.meta['accuracy']:.4f} (fp32 {job.meta['accuracy_fp32']:.4f}), "
                f"CC vs fp32 CAM {job.meta['cc_mean']:.3f}; ONNX Runtime: {job.meta['ort_status']}")
    return rows


def _one_scheme(ctx: "RunContext", model: Any, layer: str, model_name: str, spec: Any) -> dict[str, Any]:
    from edgecam.bench.studies.lowbit_device import int4_on_device
    from edgecam.exporters.quantize.pact import pact_finetune

    data, lb = ctx.data, ctx.cfg.lowbit
    result = pact_finetune(model, spec, data.train_x, data.train_y)
    row = {"model": model_name, **evaluate(result, model, layer, data.test_x, data.test_y, lb.cam_images, lb.cam),
           "layer_bits": result.layer_bits, "qat_seconds": result.stats.get("qat_seconds"), "ort_accuracy": float("nan"), "ort_top1_agreement": float("nan")}
    if not lb.onnx:
        row["ort_status"] = "not asked (lowbit.onnx = false)"
        return row
    art_dir = ctx.out_dir / "artifacts" / f"{model_name}-onnx-{spec.label.replace('/', '_')}"
    row.update(int4_on_device(ctx, result, data, model_name, layer, art_dir, data.test_x, f"low-bit {model_name}"))
    return row


def evaluate(result: "PactResult", fp32: "torch.nn.Module", target_layer: str, images: np.ndarray, labels: np.ndarray, cam_images: int = 64, cam: str = "gradcampp") -> dict[str, Any]:
    """Top-1 accuracy of the fp32 and the fake-quant model on `images`, and the quantized model's CAMs
    (host simulation) against the fp32 CAMs on the first `cam_images` images: mean / std of SIM, CC and KLD
    (Bylinskii et al. 2018), each CAM targeting the fp32 model's predicted class."""
    import numpy as np
    import torch

    from edgecam.explain.cams import CamContext, reference_cams
    from edgecam.explain.metrics import compare, summarize
    from edgecam.models.train import accuracy

    x = np.ascontiguousarray(images[:cam_images], dtype=np.float32)
    with torch.no_grad():
        targets = fp32.eval()(torch.from_numpy(x)).argmax(1).numpy()
    ref = reference_cams(CamContext(fp32, target_layer, x), cam, targets)
    got = reference_cams(CamContext(result.model, target_layer, x), cam, targets)
    rows = [compare(got[i], ref[i]) for i in range(len(x))]
    out: dict[str, Any] = {
        "precision": result.precision,
        "execution": result.execution,
        "accuracy_fp32": accuracy(fp32, images, labels),
        "accuracy": accuracy(result.model, images, labels),
        "cam": cam,
        "cam_images": len(x),
    }
    for metric in ("sim", "cc", "kld"):
        s = summarize(np.array([r[metric] for r in rows], dtype=np.float64))
        out[f"{metric}_mean"], out[f"{metric}_std"] = s["mean"], s["std"]
    return out
