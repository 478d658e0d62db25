"""Score-CAM throughput: edgecam's surrogate Score-CAM (channel-masked inputs batched through the device
session: ONNX Runtime fp32 through the agent on the local device) vs the `grad-cam` package's ScoreCAM on
the PyTorch model, side by side on the same images, in one run. Also checks the two CAMs agree (CC).

    .venv/bin/python benchmarks/scorecam.py [--images 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from edgecam.bench.explain import DeviceSession
from edgecam.bench.sweep import build_artifact, load_data, prepare_model
from edgecam.config import ModelSpec, RunConfig
from edgecam.devices.local import LocalDevice
from edgecam.explain.cams import CamContext, cam_method
from edgecam.explain.metrics import cc
from edgecam.exporters.onnx import OnnxExporter


def main() -> None:
    import torch
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default="tinycnn")
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = RunConfig(models=(ModelSpec(args.model),))
    data = load_data(cfg)
    model, layer, meta = prepare_model(cfg.models[0], cfg, data)
    art, _ = build_artifact(model, cfg.models[0], layer, meta["sha256"], "onnx", "fp32", cfg, data, OnnxExporter())
    x = data.test_x[: args.images]
    times: dict[str, list[float]] = {"edgecam surrogate (ORT session)": [], "grad-cam ScoreCAM (PyTorch)": []}
    with tempfile.TemporaryDirectory() as tmp:
        dev = LocalDevice(workdir=str(Path(tmp) / "dev"))
        session = DeviceSession(dev, art, {"runtime": "onnxruntime", "runtime_options": {"threads": 2}})
        out = DeviceSession(dev, art, {"runtime": "onnxruntime", "runtime_options": {"threads": 2}}, outputs=None)(x)  # the run's outputs
        targets = out["logits"].argmax(1)
        ctx = CamContext(model, layer, x, forward=session)
        layer_mod = model.get_submodule(layer)
        for r in range(args.rounds):  # alternate the two so that machine noise hits both alike
            t = time.perf_counter()
            ours = cam_method("scorecam")(ctx, out["features"], targets)
            times["edgecam surrogate (ORT session)"].append(time.perf_counter() - t)
            t = time.perf_counter()
            with ScoreCAM(model=model.eval(), target_layers=[layer_mod]) as pkg:
                ref = pkg(input_tensor=torch.from_numpy(x), targets=[ClassifierOutputTarget(int(c)) for c in targets])
            times["grad-cam ScoreCAM (PyTorch)"].append(time.perf_counter() - t)
    agree = np.array([cc(ours[i], ref[i]) for i in range(len(x))])
    base = np.median(times["grad-cam ScoreCAM (PyTorch)"])
    table = Table(title=f"Score-CAM per image, {args.model}, {len(x)} images x {args.rounds} rounds, on {platform.machine()} ({platform.processor() or 'cpu'}), {torch.get_num_threads()} torch threads")
    for col in ("implementation", "median s / round", "ms / image", "images / s", "speed-up vs grad-cam"):
        table.add_column(col, justify="left" if col == "implementation" else "right")
    for name, ts in times.items():
        med = float(np.median(ts))
        table.add_row(name, f"{med:.3f}", f"{1e3 * med / len(x):.2f}", f"{len(x) / med:.1f}", f"{base / med:.2f}x")
    Console().print(table)
    print(f"CC(edgecam surrogate, grad-cam ScoreCAM) per image: min {agree.min():.4f}, mean {agree.mean():.4f}; device calls per round: 1 ({len(x)} images x {out['features'].shape[1]} channels)")


if __name__ == "__main__":
    main()
