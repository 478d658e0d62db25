"""Calibration memory: peak RSS of ONNX Runtime's static QDQ calibration (`edgecam.exporters.onnx.quantize_qdq`,
MinMax) of the real EfficientNet-Lite0 at 224 px, at each number of calibration images, as it ran before the
memory bound (every run 32 images, the images copied to float32 first) and as it runs now (runs of at most
`CALIB_ACTIVATION_BUDGET` bytes of activations, images made float32 batch by batch), side by side, each in a
fresh process; plus, for reference, a process with nothing but the fp32 model loaded (ONNX Runtime session,
one forward of one image) and the same images.

Peak RSS is the process's VmHWM (`edgecam.devices.agent.peak_rss_bytes`, as `explain_memory.py` reads it);
"calibration's own" is that peak minus the high-water mark just before the call, when the images (float32,
n x 3 x 224 x 224) are already held. Images: random crops and flips of scikit-image's photographs, resized to
224 px and normalised as EfficientNet-Lite0 expects (nothing downloaded). Targets: calibration's own peak at the
largest number of images within 10% of that at the smallest (flat in the number of images), and the bounded
QDQ model's initialisers (weights, scales, zero points) bit for bit those of the unbounded one.

    .venv/bin/python benchmarks/calib_memory.py [--images 100 500] [--precisions int8 int16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Row, check, print_rows  # noqa: E402

ITEM = "10"  # the suite's item number (benchmarks/suite.py)
MODEL = "efficientnet_lite0"
SIZE = 224
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
MEAN, STD = (127 / 255,) * 3, (128 / 255,) * 3  # EfficientNet-Lite0's own (edgecam.models.efficientnet_lite)
MODES = ("unbounded", "bounded")  # before the memory bound / now


def calib_images(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """`n` normalised float32 images (n, 3, size, size): random crops (60-100% of the short side) and flips
    of scikit-image's photographs, bilinear-resized to `size`."""
    from PIL import Image
    from skimage import data as skdata

    rng = np.random.default_rng(seed)
    sources = [np.asarray(getattr(skdata, name)())[..., :3] for name in PHOTOS]
    out = np.empty((n, 3, size, size), np.float32)
    mean, std = np.array(MEAN, np.float32)[:, None, None], np.array(STD, np.float32)[:, None, None]
    for i in range(n):
        src = sources[i % len(sources)]
        h, w = src.shape[:2]
        side = int(min(h, w) * rng.uniform(0.6, 1.0))
        y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        img = np.asarray(Image.fromarray(src[y0 : y0 + side, x0 : x0 + side]).resize((size, size), Image.BILINEAR), np.float32) / 255.0
        if rng.random() < 0.5:
            img = img[:, ::-1]
        out[i] = (img.transpose(2, 0, 1) - mean) / std
    return out


def export_model(path: Path) -> Path:
    """EfficientNet-Lite0 with its packaged ImageNet weights as edgecam's fp32 two-output ONNX graph."""
    from edgecam.exporters.base import ModelInfo
    from edgecam.exporters.onnx import export_fp32
    from edgecam.models import build_model

    model, layer = build_model(MODEL, 1000, pretrained=True)
    export_fp32(model, ModelInfo(MODEL, 1000, layer, (3, SIZE, SIZE), MEAN, STD, "bench"), path)
    return path


def child(fp32: str, n: int, precision: str, mode: str, out: str) -> dict[str, Any]:
    """In a fresh process: the images, then one quantize_qdq (`mode`), or only the fp32 model loaded and run
    once (`mode = "model"`); peak RSS before and after, in MB."""
    from edgecam.devices.agent import peak_rss_bytes

    x = calib_images(n)
    before = peak_rss_bytes()
    t = time.perf_counter()
    if mode == "model":
        import onnxruntime as ort

        sess = ort.InferenceSession(fp32, providers=["CPUExecutionProvider"])
        sess.run(None, {"input": x[:1]})
    else:
        from edgecam.exporters.onnx import quantize_qdq

        if mode == "unbounded":  # as before the bound: a float32 copy of the whole set, runs of 32 images
            quantize_qdq(Path(fp32), Path(out), precision, x.astype(np.float32), activation_budget=2**62)
        else:
            quantize_qdq(Path(fp32), Path(out), precision, x)
    return {"before_mb": before / 2**20, "peak_mb": peak_rss_bytes() / 2**20, "seconds": time.perf_counter() - t}


def measure(fp32: Path, n: int, precision: str, mode: str, out: Path) -> dict[str, Any]:
    """`child` in a fresh interpreter."""
    args = [sys.executable, str(Path(__file__).resolve()), "--child", str(fp32), str(n), precision, mode, str(out)]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"calibration child {n} {precision} {mode} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def differing_initializers(a: Path, b: Path) -> list[str]:
    """Names of the initialisers (weights, scales, zero points) whose bytes differ between two ONNX files,
    plus any present in only one of them."""
    import onnx

    ia = {i.name: i.SerializeToString() for i in onnx.load(str(a)).graph.initializer}
    ib = {i.name: i.SerializeToString() for i in onnx.load(str(b)).graph.initializer}
    return sorted(k for k in ia.keys() | ib.keys() if ia.get(k) != ib.get(k))


def run_items(sizes: tuple[int, ...] = (100, 500), precisions: tuple[str, ...] = ("int8", "int16"), explain_peak_mb: float | None = None) -> tuple[list[Row], list[str]]:
    """Calibration peak RSS at each number of images in `sizes`, before and after the bound, per precision;
    with `explain_peak_mb` (item 9's run: the host's peak in a whole run, explain stage included), the bounded
    calibration's process peak at the largest size against it (target: below)."""
    from edgecam.exporters.onnx import CALIB_ACTIVATION_BUDGET, calibration_batch

    rows: list[Row] = []
    notes: list[str] = []
    lo, hi = min(sizes), max(sizes)
    with tempfile.TemporaryDirectory(prefix="edgecam-calib-") as tmp_s:
        tmp = Path(tmp_s)
        fp32 = export_model(tmp / "fp32.onnx")
        batch = calibration_batch(fp32)
        res: dict[tuple[int, str, str], dict[str, Any]] = {}
        for n in sizes:
            res[(n, "-", "model")] = measure(fp32, n, "int8", "model", tmp / "unused.onnx")
            for p in precisions:
                for mode in MODES:
                    res[(n, p, mode)] = measure(fp32, n, p, mode, tmp / f"{p}-{mode}-{n}.onnx")
                diff = differing_initializers(tmp / f"{p}-unbounded-{n}.onnx", tmp / f"{p}-bounded-{n}.onnx")
                rows.append(Row(ITEM, f"{p} QDQ initialisers differing, bounded vs unbounded calibration, {n} images", float(len(diff)), "", "== 0",
                                not diff, ", ".join(diff[:3]) or "weights, scales and zero points bit for bit equal"))
    for p in precisions:
        for mode in MODES:
            own = {n: res[(n, p, mode)]["peak_mb"] - res[(n, p, mode)]["before_mb"] for n in sizes}
            peaks = " / ".join(f"{res[(n, p, mode)]['peak_mb']:.0f}" for n in sizes)
            bounded = mode == "bounded"
            rows.append(Row(ITEM, f"{p} calibration's own peak RSS at {hi} / at {lo} images ({mode})", own[hi] / own[lo], "x",
                            "<= 1.10" if bounded else "", check(own[hi] / own[lo], "<=", 1.10) if bounded else None,
                            f"own {own[lo]:.0f} / {own[hi]:.0f} MB; process peak {peaks} MB at {' / '.join(map(str, sizes))} images"))
    if explain_peak_mb is not None:
        worst = max(res[(hi, p, "bounded")]["peak_mb"] for p in precisions)
        rows.append(Row(ITEM, f"bounded calibration's process peak at {hi} images / a run's host peak (item 9)", worst / explain_peak_mb, "x", "< 1",
                        check(worst / explain_peak_mb, "<", 1), f"{worst:.0f} MB vs {explain_peak_mb:.0f} MB (item 9's in-process run, explain stage included)"))
    for n in sizes:
        m = res[(n, "-", "model")]
        notes.append(f"item {ITEM}, {n} images of 224 px ({n * 3 * SIZE * SIZE * 4 / 2**20:.0f} MB float32): model-only process peak {m['peak_mb']:.0f} MB "
                     f"(images held {m['before_mb']:.0f} MB); " + "; ".join(
                         f"{p} {mode} peak {res[(n, p, mode)]['peak_mb']:.0f} MB ({res[(n, p, mode)]['seconds']:.0f} s)" for p in precisions for mode in MODES))
    notes.append(f"item {ITEM}: bounded calibration runs {batch} images at a time ({CALIB_ACTIVATION_BUDGET / 2**20:.0f} MiB activation budget), "
                 "unbounded 32 with a float32 copy of the whole set (as before the bound)")
    return rows, notes


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        fp32, n, precision, mode, out = sys.argv[2:7]
        print(json.dumps(child(fp32, int(n), precision, mode, out)))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, nargs="+", default=[100, 500])
    ap.add_argument("--precisions", nargs="+", default=["int8", "int16"])
    args = ap.parse_args()
    rows, notes = run_items(tuple(args.images), tuple(args.precisions))
    print_rows(rows, "Calibration memory")
    print("\n".join(notes))


if __name__ == "__main__":
    main()
