"""The explain stage at real size (suite item 9): EfficientNet-Lite0 with its real ImageNet weights at 224 px, on
generated views of the bundled photos, ONNX Runtime fp32 + int8, Grad-CAM++ (mirror) + Eigen-CAM, the default
metrics. Each run is `edgecam run` in a fresh process (`real_scale.run_once`: wall time, host peak RSS).

Printed: explain-stage throughput (images per second per variant), host CPU seconds per image and variant beside
the int8 variant's device forward p50, and where the stage's time goes, component by component, from the run's
stage tags (`edgecam.stages`: device round trip, reference CAM, each CAM method, saliency, metrics, I/O).

`--baseline SRC` runs another checkout's code (its `src/` folder, e.g. a `git worktree` of an older commit) on the
same configuration first, so "before" and "after" come from one invocation on one machine; `--executor ray`
adds a run with the Ray executor (throughput and identical results vs in-process).

    .venv/bin/python benchmarks/explain_profile.py [--images 200] [--baseline /tmp/base/src] [--executor ray]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Row, check, print_rows  # noqa: E402
from real_scale import Measured, run_once  # noqa: E402

CONFIG = """
name = "explain-profile"
device = "local"
[data]
name = "sample-photos"
views = {views}
calib_views = 8
mean = [0.4980392156862745, 0.4980392156862745, 0.4980392156862745]
std = [0.5019607843137255, 0.5019607843137255, 0.5019607843137255]
[export]
formats = ["onnx"]
precisions = ["fp32", "int8"]
quant = "ptq"
calib_samples = 48
[[models]]
name = "efficientnet_lite0"
pretrained = true
[[runtimes]]
name = "onnxruntime"
threads = 2
[bench]
warmup = 5
iterations = 30
memory = false
[explain]
methods = ["gradcampp", "eigencam"]
reference = "gradcampp"
target = "pred"
faithfulness = false
{explain_extra}
"""

#: component (stage tag, or dotted sub-tag) -> what the table calls it
COMPONENTS = {
    "device": "device round trip (outputs, on the host's side: waiting + decoding)",
    "cam.reference": "fp32 reference CAM (host, once per image)",
    "cam": "CAM stage, untagged rest",
    "metrics": "metrics, untagged rest",
    "io": "I/O (job store, kept outputs)",
    "other": "untagged (in the explain stage: loading the CAM and metric libraries while shard 1's outputs are computed)",
}


def write_config(root: Path, n_img: int, explain_extra: str = "") -> Path:
    cfg = root / f"explain-profile-{n_img}.toml"
    cfg.write_text(CONFIG.format(views=math.ceil(n_img / 6), explain_extra=explain_extra))
    return cfg


def _int8_p50_ms(out: Path) -> float:
    import pandas as pd

    lat = pd.read_parquet(out / "latency.parquet")
    rows = lat[lat["precision"] == "int8"]
    return float(np.median(rows["latency_ms"] / rows["batch_size"].astype(float))) if len(rows) else float("nan")


def measure(cfg: Path, n_img: int, out: Path, extra: list[str] | None = None, env: dict[str, str] | None = None) -> tuple[Measured, dict[str, Any], float]:
    """One fresh-process run: (its measurements, its manifest, the int8 variant's device forward p50 in ms)."""
    old = dict(os.environ)
    try:
        os.environ.update(env or {})
        got = run_once(cfg, n_img, out, extra)
    finally:
        os.environ.clear()
        os.environ.update(old)
    manifest = json.loads((out / "manifest.json").read_text())
    return got, manifest, _int8_p50_ms(out)


def explain_cpu_s(manifest: dict[str, Any]) -> float:
    """Host process CPU seconds of the explain stage (`stages_cpu_s`; NaN from code that did not record it)."""
    return sum(v for k, v in manifest.get("stages_cpu_s", {}).items() if k.startswith("CAMs + metrics")) or float("nan")


def throughput_rows(tag: str, m: Measured, manifest: dict[str, Any], p50_ms: float, target: bool) -> list[Row]:
    n_var = sum(1 for v in manifest["variants"].values() if not v.get("error"))
    per_var = m.images * n_var
    ips = per_var / m.explain_s if m.explain_s else float("nan")
    cpu = explain_cpu_s(manifest)
    cpu_ms = 1e3 * cpu / per_var
    rows = [Row("9", f"{tag}: explain-stage images/s per variant", ips, "img/s", ">= 10" if target else "-", check(ips, ">=", 10) if target else None,
                f"{m.images} images x {n_var} variants in {m.explain_s:.1f} s; run wall {m.wall:.0f} s, host peak RSS {m.host_peak_mb:.0f} MB")]
    if cpu == cpu:
        ratio = cpu_ms / p50_ms
        rows.append(Row("9", f"{tag}: host CPU per image and variant / int8 device forward p50", ratio, "x", "<= 3" if target else "-",
                        check(ratio, "<=", 3) if target else None, f"{cpu_ms:.1f} ms host CPU vs p50 {p50_ms:.2f} ms (ORT int8, batch 1)"))
    return rows


def component_rows(tag: str, manifest: dict[str, Any], m: Measured) -> list[Row]:
    """Seconds per image and variant in each stage tag and sub-tag of the run (exclusive wall time)."""
    n_var = sum(1 for v in manifest["variants"].values() if not v.get("error"))
    per = m.images * n_var
    detail = manifest.get("stage_detail_s") or manifest.get("stage_tags_s", {})
    cpu = manifest.get("stage_detail_cpu_s", {})
    rows = []
    for t, s in sorted(detail.items(), key=lambda kv: -kv[1]):
        if t in ("untagged", "setup") or s <= 0:
            continue
        what = f"{s:.1f} s in the run" + (f", host CPU {1e3 * cpu[t] / per:.1f} ms per image and variant" if t in cpu else "")
        rows.append(Row("9", f"{tag}: ms per image and variant in `{t}`", 1e3 * s / per, "ms", "-", None, f"{what} ({COMPONENTS.get(t, '')})".replace(" ()", "")))
    return rows


def same_results(a: Path, b: Path) -> tuple[float, float]:
    """(largest |difference| of any float column of results.parquet, smallest per-row CC-like agreement): two
    runs of the same configuration, rows matched by variant, method and image."""
    import pandas as pd

    keys = ["model", "format", "runtime", "precision", "cam_method", "cam_mode", "image_id"]
    ra = pd.read_parquet(a / "results.parquet").sort_values(keys).reset_index(drop=True)
    rb = pd.read_parquet(b / "results.parquet").sort_values(keys).reset_index(drop=True)
    if len(ra) != len(rb) or not (ra[keys] == rb[keys]).all().all():
        return float("inf"), float("nan")
    cols = [c for c in ra.columns if ra[c].dtype.kind == "f"]
    diff = max(float(np.nanmax(np.abs(ra[c].to_numpy() - rb[c].to_numpy()))) if ra[c].notna().any() else 0.0 for c in cols)
    return diff, float(len(ra))


def run_items(n_img: int = 200, baseline: str | None = None, executors: tuple[str, ...] = ("inprocess",), keep: Path | None = None) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    notes: list[str] = []
    tmp = tempfile.TemporaryDirectory(prefix="edgecam-explain-profile-") if keep is None else None
    root = Path(tmp.name) if tmp else keep
    assert root is not None
    root.mkdir(parents=True, exist_ok=True)
    cfg = write_config(root, n_img)
    try:
        if baseline:
            out = root / "baseline"
            m, man, p50 = measure(cfg, n_img, out, env={"PYTHONPATH": str(Path(baseline).resolve())})
            rows += throughput_rows(f"before ({Path(baseline).resolve().parent.name})", m, man, p50, target=False)
            rows += component_rows("before", man, m)
            notes.append("item 9 before: stage tags (s) " + ", ".join(f"{k} {v:.1f}" for k, v in man.get("stage_tags_s", {}).items()))
        runs: dict[str, Path] = {}
        for ex in executors:
            out = root / f"now-{ex}"
            m, man, p50 = measure(cfg, n_img, out, ["--executor", ex] if ex != "inprocess" else [])
            runs[ex] = out
            rows += throughput_rows(f"now, {ex}", m, man, p50, target=True)
            if ex == "inprocess":
                rows += component_rows("now", man, m)
            notes.append(f"item 9 now ({ex}): stages (s) " + ", ".join(f"{k} {v:.1f}" for k, v in man.get("stages_s", {}).items()))
            notes.append(f"item 9 now ({ex}): explain work estimate printed before the stage: {man.get('explain_estimate_s', {})}")
        if baseline and "inprocess" in runs:
            diff, n = same_results(root / "baseline", runs["inprocess"])
            notes.append(f"item 9: results.parquet now vs before: largest |difference| of any float column {diff:.3g} over {n:.0f} rows")
        if "ray" in runs and "inprocess" in runs:
            diff, n = same_results(runs["inprocess"], runs["ray"])
            notes.append(f"item 9: results.parquet Ray vs in-process: largest |difference| {diff:.3g} over {n:.0f} rows")
    finally:
        if tmp:
            tmp.cleanup()
    return rows, notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--baseline", default=None, metavar="SRC", help="another checkout's src/ folder, run first on the same configuration")
    ap.add_argument("--executor", nargs="+", default=["inprocess"], choices=("inprocess", "ray"))
    ap.add_argument("--keep", default=None, metavar="DIR", help="keep the run directories here")
    args = ap.parse_args()
    rows, notes = run_items(args.images, args.baseline, tuple(args.executor), Path(args.keep) if args.keep else None)
    print_rows(rows, f"explain stage at 224 px, {args.images} images")
    for n in notes:
        print("-", n)


if __name__ == "__main__":
    main()
