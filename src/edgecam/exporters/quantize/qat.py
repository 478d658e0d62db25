"""Quantization-aware fine-tuning of a QDQ ONNX graph (LSQ-style learned activation scales).

The calibrated QDQ model from ONNX Runtime's quantizer is loaded into `OnnxGraphModule`, fine-tuned with
cross-entropy on the training split (weights and activation scales learned together, per-channel symmetric
weight scales recomputed from the weights each step, as ORT does), and the learned values are written back
into the same graph. Calibration only initialises the scales; the artifact's scales are the learned ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from edgecam.exporters.base import CalibData, ExportSpec
from edgecam.exporters.quantize.graph import OnnxGraphModule, param_key


def load_graph_module(qdq_path: Path, fp32_path: Path | None = None, name: str = "model") -> tuple[OnnxGraphModule, onnx.ModelProto]:
    """Build the trainable simulator of `qdq_path`; float weights resume from `fp32_path` when given."""
    qdq = onnx.load(str(qdq_path))
    weights: dict[str, np.ndarray] = {}
    if fp32_path is not None:
        weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(fp32_path)).graph.initializer}
    return OnnxGraphModule(qdq, weights, name=name), qdq


def minibatch_epochs(
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    opt: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    batch_size: int,
    gen: torch.Generator,
    progress: Callable[[str, float], None] | None = None,
    label: str = "QAT",
    after_step: Callable[[], None] | None = None,
    loss_of: Callable[[Callable[[torch.Tensor], torch.Tensor], torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> list[float]:
    """Cross-entropy fine-tuning (or `loss_of(logits_of, x, y)`, e.g. the saliency-guided loss): `epochs`
    passes over `images` in seeded random mini-batches (one `randperm` of `gen` per epoch), `after_step`
    after each optimiser step; returns the per-step losses."""
    steps = max(1, epochs * int(np.ceil(len(images) / batch_size)))
    losses: list[float] = []
    for _epoch in range(epochs):
        order = torch.randperm(len(images), generator=gen)
        for start in range(0, len(images), batch_size):
            idx = order[start : start + batch_size]
            if loss_of is None:
                loss = torch.nn.functional.cross_entropy(logits_of(images[idx]), labels[idx])
            else:
                loss = loss_of(logits_of, images[idx], labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(label, len(losses) / steps)
    return losses


def qat_finetune(
    fp32_path: Path,
    qdq_path: Path,
    out_path: Path,
    data: CalibData,
    spec: ExportSpec,
    name: str = "model",
    progress: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune the QDQ graph for `spec.qat_epochs` epochs and save the result to `out_path`."""
    torch.manual_seed(spec.seed)
    torch.set_flush_denormal(True)  # int16 scales put activations near denormals: 10x slower without this
    module, qdq = load_graph_module(qdq_path, fp32_path, name)
    scale_keys = {param_key(n) for n in module.act_scales}
    scales = [p for k, p in module.params.items() if k in scale_keys]
    others = [p for k, p in module.params.items() if k not in scale_keys]
    # log-scales: a step of lr changes a scale by ~lr relative (LSQ's per-tensor gradient scaling, simplified)
    opt = torch.optim.Adam([{"params": others, "lr": spec.qat_lr}, {"params": scales, "lr": spec.qat_lr * 10}])
    gen = torch.Generator().manual_seed(spec.seed)
    subset = torch.randperm(len(data.images), generator=gen)[: spec.qat_samples].numpy()
    images = torch.from_numpy(np.ascontiguousarray(data.images[subset], dtype=np.float32))
    labels = torch.from_numpy(np.array(data.labels[subset], dtype=np.int64))
    module.train()
    losses = minibatch_epochs(lambda x: module(x)["logits"], opt, images, labels, spec.qat_epochs, spec.qat_batch_size, gen, progress, f"QAT {name}")
    module.eval()
    onnx.save(module.write_back(qdq), str(out_path))
    return {
        "qat_epochs": spec.qat_epochs,
        "qat_steps": len(losses),
        "qat_final_loss": float(np.mean(losses[-10:])) if losses else None,
        "learned_activation_scales": len(scales),
    }
