"""CAM throughput on the CPU (suite item 3): edgecam's CAMs vs the `grad-cam` package's on the PyTorch model,
on the same images, alternating rounds in one run so machine noise hits both alike (median round counts).

- mirror Grad-CAM++ (device features injected at the target layer, `edgecam.explain.cams`) vs
  `pytorch_grad_cam.GradCAMPlusPlus` on the fp32 model: target >= 0.8x (mirroring costs little).
- surrogate Score-CAM (channel masks composed on the device, forwards batched through the ONNX Runtime
  session by the local agent) vs `pytorch_grad_cam.ScoreCAM`: target >= 2x.
- Eigen-CAM from the device features alone vs `pytorch_grad_cam.EigenCAM` (forward + SVD): informational.

The device outputs (features, top-1) come from one fp32 ONNX Runtime run through the local agent first, as
in a sweep; every CAM is checked against the package's (CC per image) so the speed is not bought with a
different answer.

    .venv/bin/python benchmarks/cam_throughput.py [--images 64] [--rounds 3] [--models tinycnn]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from _common import THREADS, Model, Row, check, print_rows, setup

os.environ.setdefault("TQDM_DISABLE", "1")  # grad-cam's ScoreCAM draws a tqdm bar per image (tqdm >= 4.66 reads this)

# method -> (edgecam CAM method, grad-cam class, target op and bound); None: informational
METHODS: dict[str, tuple[str, str, tuple[str, float] | None]] = {
    "mirror Grad-CAM++": ("gradcampp", "GradCAMPlusPlus", (">=", 0.8)),
    "surrogate Score-CAM": ("scorecam", "ScoreCAM", (">=", 2.0)),
    "surrogate Eigen-CAM": ("eigencam", "EigenCAM", None),
}


def package_cams(model: Any, layer: Any, cls_name: str, x: np.ndarray, targets: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """The `grad-cam` package's CAM `cls_name` on the PyTorch model, `batch_size` images per call (as
    `edgecam.explain.cams.gradient_cams` batches the mirror)."""
    import pytorch_grad_cam
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    out = []
    with getattr(pytorch_grad_cam, cls_name)(model=model.eval(), target_layers=[layer]) as cam:
        for i in range(0, len(x), batch_size):
            out.append(cam(input_tensor=torch.from_numpy(x[i : i + batch_size]), targets=[ClassifierOutputTarget(int(c)) for c in targets[i : i + batch_size]]))
    return np.concatenate(out)


def _timed(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def compare(m: Model, x: np.ndarray, label: str, rounds: int, tmp: Path) -> Row:
    """One method on one model: edgecam vs grad-cam, `rounds` alternating rounds over the images `x`."""
    from edgecam.devices.session import DeviceSession
    from edgecam.devices.local import LocalDevice
    from edgecam.explain.cams import CamContext, cam_method
    from edgecam.explain.metrics import cc

    ours_name, pkg_name, target = METHODS[label]
    dev = LocalDevice(workdir=str(tmp / "dev"))
    job = {"runtime": "onnxruntime", "runtime_options": {"threads": THREADS}}
    out = DeviceSession(dev, m.onnx_fp32, job, outputs=None)(x)  # what the device run returns
    features, targets = out["features"], out["logits"].argmax(1)
    ctx = CamContext(m.model, m.layer, x, forward=DeviceSession(dev, m.onnx_fp32, job))
    layer = m.model.get_submodule(m.layer)
    run_ours = lambda: cam_method(ours_name)(ctx, features, targets)  # noqa: E731
    run_pkg = lambda: package_cams(m.model, layer, pkg_name, x, targets)  # noqa: E731
    warm = CamContext(m.model, m.layer, x[:2], forward=ctx.forward)
    cam_method(ours_name)(warm, features[:2], targets[:2])  # untimed: first-call costs (imports, allocator)
    package_cams(m.model, layer, pkg_name, x[:2], targets[:2])
    times: dict[str, list[float]] = {"edgecam": [], "grad-cam": []}
    for r in range(rounds):
        order = ("edgecam", "grad-cam") if r % 2 == 0 else ("grad-cam", "edgecam")
        for who in order:
            if who == "edgecam":
                t, ours = _timed(run_ours)
            else:
                t, ref = _timed(run_pkg)
            times[who].append(t)
    if ours_name == "eigencam":  # sign-corrected before the ReLU (Chung & Ying 2025, Eq. 13), the package's is not
        agree_txt = "maps differ by design (edgecam's Eigen-CAM is sign-corrected)"
    else:
        agree_txt = f"CC per image min {np.nanmin([cc(ours[i], ref[i]) for i in range(len(x))]):.4f}"
    ips = {k: len(x) / float(np.median(v)) for k, v in times.items()}
    ratio = ips["edgecam"] / ips["grad-cam"]
    met = check(ratio, *target) if target else None
    return Row("3", f"{label} images/s, edgecam / grad-cam {pkg_name}, {m.name}", ratio, "x", f"{target[0]} {target[1]:g}" if target else "", met,
               f"edgecam {ips['edgecam']:.3g} vs grad-cam {ips['grad-cam']:.3g} images/s; {len(x)} images x {rounds} rounds; edgecam vs grad-cam: {agree_txt}")


def run_items(models: dict[str, Model], x: np.ndarray, images: dict[str, dict[str, int]], rounds: int = 3) -> list[Row]:
    """Item 3: every method on every model; `images[model][label]` images each."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgecam-bench-") as tmp:
        for name, m in models.items():
            for label in METHODS:
                rows.append(compare(m, np.ascontiguousarray(x[: images[name][label]]), label, rounds, Path(tmp)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64, help="images per round (Score-CAM on mobilenet_v2: an eighth)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=["tinycnn", "mobilenet_v2"])
    args = ap.parse_args()
    import torch

    torch.set_num_threads(THREADS)
    s = setup(args.models)
    sizes = {name: {label: max(1, args.images // 8) if (name == "mobilenet_v2" and "Score" in label) else args.images for label in METHODS} for name in args.models}
    print_rows(run_items(s.models, s.data.test_x, sizes, args.rounds), "CAM throughput")


if __name__ == "__main__":
    main()
