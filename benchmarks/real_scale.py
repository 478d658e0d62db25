"""Real scale (suite item 7): a 224 px model on an image folder of real-size JPEGs, at 200 and at 2,000 test
images, measured side by side: host and agent peak RSS, bytes sent to the device per image, wall time per
image; the same over SSH to a loopback sshd board; Score-CAM at EfficientNet's 1,280 channels; and a dry run
at the paper's 10,000 images (Eigen-CAM, no EMD, no faithfulness).

Data: crops and flips of scikit-image's bundled photographs (nothing downloaded), 341 x 256 JPEGs, one
class per source photo, written once under edgecam's cache. Model: torchvision's `mobilenet_v2` (and
`efficientnet_b0` for the Score-CAM item) with seeded random weights saved to a state dict, so nothing
trains; int8 by PTQ calibration on 32 images. Each run is `edgecam run` in a fresh process: its own peak
RSS is its VmHWM at exit; the agents' is the largest VmHWM of any descendant, sampled every 0.2 s.

    .venv/bin/python benchmarks/real_scale.py [--sizes 200 2000] [--items rss ssh scorecam paper]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import Row, check, print_rows  # noqa: E402

CHILD = """
import atexit, os, sys
from edgecam.devices.agent import peak_rss_bytes
atexit.register(lambda: open(os.environ["EDGECAM_BENCH_PEAK"], "w").write(str(peak_rss_bytes())))
from edgecam.cli import main
sys.exit(main(sys.argv[1:]))
"""

CONFIG = """
name = "real-scale"
[data]
name = "image-folder"
path = "{folder}"
resize = 256
crop = 224
test_fraction = {test_fraction}
[export]
precisions = {precisions}
quant = "ptq"
calib_samples = 32
[[models]]
name = "{model}"
weights = "{weights}"
[[runtimes]]
name = "onnxruntime"
threads = 2
[bench]
warmup = 5
iterations = 30
memory = false
[explain]
methods = {methods}
faithfulness = false
emd_size = 0
bootstrap = 200
shard_size = {shard_size}
"""

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def make_folder(root: Path, n: int, size: tuple[int, int] = (341, 256)) -> Path:
    """`n` JPEGs (crops + flips of scikit-image's photos, one class per photo) under `root/images/<photo>/`,
    written once (a marker file holds the count)."""
    from PIL import Image
    from skimage import data as skdata

    images = root / "images"
    marker = root / f".complete-{n}"
    if marker.is_file():
        return images
    rng = np.random.default_rng(0)
    sources = {name: np.asarray(getattr(skdata, name)()) for name in PHOTOS}
    for i in range(n):
        name = PHOTOS[i % len(PHOTOS)]
        src = sources[name]
        h, w = src.shape[:2]
        scale = rng.uniform(0.6, 1.0)
        ch, cw = int(h * scale), int(min(w, h * scale * size[0] / size[1]))
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        img = Image.fromarray(src[y0 : y0 + ch, x0 : x0 + cw]).convert("RGB").resize(size, Image.BILINEAR)
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        (images / name).mkdir(parents=True, exist_ok=True)
        img.save(images / name / f"{i:05d}.jpg", quality=90)
    marker.write_text(str(n))
    return images


def save_weights(model: str, classes: int, path: Path) -> Path:
    """Seeded random weights of the registry's `model` for `classes` classes, as a state dict."""
    import torch

    from edgecam.models import build_model

    if not path.is_file():
        torch.manual_seed(0)
        net, _ = build_model(model, classes, None, None)
        torch.save(net.state_dict(), path)
    return path


class Measured(NamedTuple):
    images: int
    wall: float
    host_peak_mb: float
    agent_peak_mb: float
    bytes_sent: float
    bytes_received: float
    explain_s: float


def _vmhwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _watch_descendants(root_pids: list[int], stop: threading.Event, peak: list[int]) -> None:
    """Largest VmHWM (kB) of any descendant of `root_pids` (the agents: children of the run locally, of the
    sshd over SSH), sampled until `stop`."""
    import psutil

    while not stop.wait(0.2):
        for root in root_pids:
            try:
                kids = psutil.Process(root).children(recursive=True)
            except psutil.Error:
                continue
            for k in kids:
                try:
                    if k.name().startswith("sshd"):
                        continue
                except psutil.Error:  # ended between the listing and the look: its last sample stands
                    continue
                peak[0] = max(peak[0], _vmhwm_kb(k.pid))


def run_once(cfg: Path, n: int, out: Path, extra: list[str] | None = None, agents_under: int | None = None) -> Measured:
    """One `edgecam run` of `n` images in a fresh process; `agents_under`: another process whose
    descendants are agents too (the loopback sshd)."""
    peak_file = out.with_suffix(".peak")
    env = {**os.environ, "EDGECAM_BENCH_PEAK": str(peak_file)}
    stop, agent_peak = threading.Event(), [0]
    t = time.perf_counter()
    with open(out.with_suffix(".log"), "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, "run", str(cfg), "--limit", str(n), "--out", str(out), *(extra or [])],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        roots = [proc.pid] + ([agents_under] if agents_under is not None else [])
        watcher = threading.Thread(target=_watch_descendants, args=(roots, stop, agent_peak), daemon=True)
        watcher.start()
        rc = proc.wait()
    stop.set()
    watcher.join()
    wall = time.perf_counter() - t
    if rc != 0:
        raise RuntimeError(f"edgecam run --limit {n} exited {rc}; log {out.with_suffix('.log')}:\n{out.with_suffix('.log').read_text()[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    io = manifest.get("device_io", {})
    explain_s = sum(v for k, v in manifest.get("stages_s", {}).items() if k.startswith("CAMs + metrics"))
    return Measured(n, wall, int(peak_file.read_text()) / 2**20, agent_peak[0] / 1024, float(io.get("bytes_sent", float("nan"))),
                    float(io.get("bytes_received", float("nan"))), explain_s)


def write_config(root: Path, folder: Path, model: str, weights: Path, n_total: int, n_test: int, methods: list[str], precisions: list[str], shard_size: int = 100) -> Path:
    cfg = root / f"{model}-{'-'.join(methods)}-{n_test}.toml"
    cfg.write_text(CONFIG.format(folder=folder, test_fraction=round(n_test / n_total + 1e-9, 6), precisions=json.dumps(precisions), model=model, weights=weights,
                                 methods=json.dumps(methods), shard_size=shard_size))
    return cfg


def scaling_rows(tag: str, lo: Measured, hi: Measured) -> list[Row]:
    """The acceptance ratios of issue 17 for one pair of runs (`lo`, `hi` images)."""
    rows = []
    for what, a, b in (("host peak RSS", lo.host_peak_mb, hi.host_peak_mb), ("agent peak RSS", lo.agent_peak_mb, hi.agent_peak_mb)):
        r = b / a if a else float("nan")
        rows.append(Row("7", f"{tag}: {what} at {hi.images:,} / at {lo.images:,} images", r, "x", "<= 1.15", check(r, "<=", 1.15), f"{b:.0f} MB vs {a:.0f} MB"))
    per_lo, per_hi = lo.bytes_sent / lo.images, hi.bytes_sent / hi.images
    rows.append(Row("7", f"{tag}: bytes sent per image at {hi.images:,} / at {lo.images:,}", per_hi / per_lo if per_lo else float("nan"), "x", "within 0.15",
                    check(per_hi / per_lo, "within", 0.15) if per_lo else None, f"{per_hi / 1e3:.1f} kB vs {per_lo / 1e3:.1f} kB per image"))
    w = (hi.wall / hi.images) / (lo.wall / lo.images)
    rows.append(Row("7", f"{tag}: wall s per image at {hi.images:,} / at {lo.images:,}", w, "x", "<= 1.15", check(w, "<=", 1.15),
                    f"{hi.wall:.0f} s / {hi.images} vs {lo.wall:.0f} s / {lo.images} (explain stage {hi.explain_s:.0f} s vs {lo.explain_s:.0f} s)"))
    return rows


def run_items(sizes: tuple[int, int] = (200, 2000), items: tuple[str, ...] = ("rss", "ssh", "scorecam", "paper"), paper_images: int = 10_000) -> tuple[list[Row], list[str]]:
    """Item 7: the chosen parts (local scaling `rss`, the same over `ssh`, `scorecam` at 1,280 channels, the
    `paper`-scale dry run); (rows, notes)."""
    from edgecam.cache import cache_dir

    lo_n, hi_n = sizes
    root = cache_dir() / "bench-real-scale"
    root.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgecam-real-") as tmp_s:
        tmp = Path(tmp_s)
        n_total = int(hi_n / 0.9) + 8
        folder = make_folder(root / f"photos-{n_total}", n_total)
        weights = save_weights("mobilenet_v2", len(PHOTOS), root / "mobilenet_v2-random.pt")
        cfg = write_config(tmp, folder, "mobilenet_v2", weights, n_total, hi_n, ["gradcampp", "eigencam"], ["fp32", "int8"])
        if "rss" in items or "ssh" in items:
            run_once(cfg, 4, tmp / "warm")  # exports into the cache; the measured runs reuse it
        if "rss" in items:
            lo, hi = run_once(cfg, lo_n, tmp / "lo"), run_once(cfg, hi_n, tmp / "hi")
            rows += scaling_rows("local", lo, hi)
            rows.append(Row("7", f"local: host peak RSS at {lo_n} images", lo.host_peak_mb, "MB", "< 3072", check(lo.host_peak_mb, "<", 3072), ""))
            notes += [f"item 7 local {m.images} images: {m}" for m in (lo, hi)]
        if "ssh" in items:
            from sshd_server import start_sshd

            tmp.chmod(0o755)  # the board user's sshd reads its authorized_keys below here
            server = start_sshd(tmp / "sshd")
            try:
                inv = tmp / "devices.toml"
                inv.write_text(f'[[devices]]\nname = "board"\nurl = "{server.url}"\nkey_file = "{server.key_file}"\nknown_hosts = "{server.known_hosts}"\npython = "{server.python}"\n')
                extra = ["--devices", str(inv), "--device", "board"]
                lo, hi = run_once(cfg, lo_n, tmp / "ssh-lo", extra, server.proc.pid), run_once(cfg, hi_n, tmp / "ssh-hi", extra, server.proc.pid)
                rows += scaling_rows("ssh", lo, hi)
                notes += [f"item 7 ssh {m.images} images: {m}; on the wire {(m.bytes_sent + m.bytes_received) / m.images / 1e3:.1f} kB per image" for m in (lo, hi)]
            finally:
                server.stop()
        if "scorecam" in items:
            w_eff = save_weights("efficientnet_b0", len(PHOTOS), root / "efficientnet_b0-random.pt")
            cfg_sc = write_config(tmp, folder, "efficientnet_b0", w_eff, n_total, hi_n, ["scorecam"], ["fp32"], shard_size=2)
            m = run_once(cfg_sc, 2, tmp / "scorecam")
            full_res = 1280 * 224 * 224 * 4
            rows.append(Row("7", "Score-CAM 1,280 x 7 x 7 maps: bytes sent per image", m.bytes_sent / 2, "B", f"<< {full_res:,} (C x 224 x 224 float32)",
                            check(m.bytes_sent / 2, "<", full_res / 10), f"agent peak RSS {m.agent_peak_mb:.0f} MB, host {m.host_peak_mb:.0f} MB, {m.wall:.0f} s for 2 images"))
        if "paper" in items:
            n_total_p = int(paper_images / 0.95) + 8
            folder_p = make_folder(root / f"photos-{n_total_p}", n_total_p)
            cfg_p = write_config(tmp, folder_p, "mobilenet_v2", weights, n_total_p, paper_images, ["eigencam"], ["fp32", "int8"], shard_size=250)
            m = run_once(cfg_p, paper_images, tmp / "paper")
            rows.append(Row("7", f"paper scale: {paper_images:,} images x fp32 + int8, Eigen-CAM: host peak RSS", m.host_peak_mb, "MB", "", None,
                            f"agent {m.agent_peak_mb:.0f} MB, {m.wall:.0f} s wall ({1e3 * m.wall / paper_images:.0f} ms per image)"))
    return rows, notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs=2, default=[200, 2000])
    ap.add_argument("--items", nargs="*", default=["rss", "ssh", "scorecam", "paper"])
    ap.add_argument("--paper-images", type=int, default=10_000)
    args = ap.parse_args()
    rows, notes = run_items(tuple(args.sizes), tuple(args.items), args.paper_images)
    print_rows(rows, "Real scale")
    print("\n".join(notes))


if __name__ == "__main__":
    main()
