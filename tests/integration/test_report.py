"""report.html: rendered in a real headless Chromium (Debian's), from a real run and from a synthetic run at
the scale of 3 models x 2 runtimes x 3 precisions x 500 images."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from browser import ensure_chromium, render

CHROMIUM = ensure_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed and could not be installed (needs root and apt-get)")


def _loaded(dom: str, log: str) -> int:
    """Assert the page loaded cleanly; return the browser's own load time (navigation timing, ms)."""
    assert 'data-ready="1"' in dom, dom[:2000]
    assert "data-js-error" not in dom
    assert not re.search(r"CONSOLE.*(Uncaught|Error)|Uncaught \w+Error", log), log[-3000:]
    return int(re.search(r'data-load-ms="(\d+)"', dom).group(1))


@needs_chromium
@pytest.mark.slow  # 44 s; `make test-slow` runs it (tests/unit/bench/test_report_render.py and the default quickstart run cover the report by default)
def test_quickstart_style_report_renders_with_table_grid_and_scatter(trained_tinycnn, tflite_tinycnn, session_cache: Path, tmp_path: Path) -> None:
    from conftest import edgecam

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "run"
    proc = edgecam(["run", str(repo / "configs" / "onnx-vs-litert.toml"), "--out", str(out), "--limit", "6"], session_cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = out / "report.html"
    assert f"report: {report}" in proc.stdout and report.is_file()
    shot = tmp_path / "report.png"
    dom, log = render(CHROMIUM, report, screenshot=shot)
    load_ms = _loaded(dom, log)
    assert load_ms < 2000
    assert 'id="summary"' in dom and dom.count("<tr>") > 20  # the Table 1 summary
    assert 'class="grid"' in dom and dom.count('src="data:image/png;base64') > 30  # the CAM grid, images embedded
    assert 'id="scatter-' in dom and 'id="latency"' in dom
    assert "http://" not in dom.replace("http://www.w3.org", "") and "https://" not in dom  # opens offline
    assert shot.stat().st_size > 20_000
    # `edgecam report` rewrites it from the run's files alone; `edgecam compare` of a run with itself: all deltas 0
    assert edgecam(["report", str(out)], session_cache).returncode == 0
    cmp = edgecam(["compare", str(out), str(out), "--html", str(tmp_path / "cmp.html")], session_cache)
    assert cmp.returncode == 0 and "cc_fp32" in cmp.stdout and (tmp_path / "cmp.html").is_file()


def _synthetic_run(root: Path, images: int = 500) -> Path:
    """A run directory with the files a real run writes, at 3 models x 2 runtimes x 3 precisions."""
    from edgecam.bench.outputs import write_grid
    from edgecam.bench.results import summarise

    rng = np.random.default_rng(0)
    models, runtimes, precisions = ["tinycnn", "mobilenet_v2", "resnet50"], [("onnx", "onnxruntime"), ("tflite", "litert")], ["fp32", "int16", "int8"]
    rows, lat, bench, grids = [], [], [], {}
    for model in models:
        cams = {}
        for fmt, runtime in runtimes:
            for p in precisions:
                key = f"{model}-{fmt}-{p}-{runtime}"
                cams[(key, "gradcampp", "mirror")] = rng.random((5, 64, 64)).astype(np.float32)
                n = images
                base = {"model": model, "format": fmt, "runtime": runtime, "precision": p, "device": "board", "cam_method": "gradcampp", "cam_mode": "mirror"}
                for col in ("sim_fp32", "cc_fp32", "kld_fp32", "rmse_fp32", "emd_fp32", "sim_gt", "cc_gt", "kld_gt", "nss_gt", "sim_sal", "cc_sal", "kld_sal",
                            "deletion_auc", "insertion_auc", "wsol_iou", "pointing_energy", "act_entropy", "act_std", "act_hoyer", "act_gini"):
                    base[col] = rng.random(n)
                frame = pd.DataFrame({**base, "image_id": [f"test-{i:05d}" for i in range(n)], "cam_constant": False})
                rows.append(frame)
                lat.append(pd.DataFrame({"model": model, "format": fmt, "runtime": runtime, "precision": p, "latency_ms": rng.gamma(4, 0.3, 100)}))
                bench.append({"model": model, "format": fmt, "runtime": runtime, "precision": p, "ok": True, "p50_ms": rng.gamma(4, 0.3), "size_bytes": int(rng.integers(1e5, 1e8)), "peak_rss_mb": 50.0})
        grids[model] = {"ids": [f"test-{i:05d}" for i in range(5)], "kinds": ["typical"] * 3 + ["dissimilar"] * 2, "images": rng.random((5, 3, 64, 64)),
                        "masks": rng.random((5, 64, 64)), "has_box": np.ones(5, bool), "saliency": rng.random((5, 64, 64)), "cams": cams, "preds": {k[0]: np.zeros(5, int) for k in cams}}
    root.mkdir(parents=True)
    results = pd.concat(rows, ignore_index=True)
    results.to_parquet(root / "results.parquet")
    summarise(results, models, n_boot=500).to_csv(root / "summary.csv", index=False)
    pd.concat(lat).to_parquet(root / "latency.parquet")
    pd.DataFrame(bench).to_csv(root / "bench.csv", index=False)
    write_grid(grids, root)
    (root / "manifest.json").write_text(json.dumps({"config": {"name": "scale", "models": [{"name": m} for m in models]}, "images": images, "wall_s": 1.0,
                                                    "device": {"arch": "aarch64", "cpu": "Cortex-A78AE", "cores": 8}}))
    return root


@needs_chromium
def test_report_at_paper_scale_is_small_and_opens_fast(tmp_path: Path) -> None:
    from edgecam.bench.report import build_report

    run = _synthetic_run(tmp_path / "scale")
    report = build_report(run)
    size = report.stat().st_size
    assert size < 10 * 2**20, size
    dom, log = render(CHROMIUM, report)
    load_ms = _loaded(dom, log)
    assert load_ms < 2000, load_ms
    # Table 1: 2 runtimes x (3 v. GT + 3 v. saliency + 2 v. fp32 comparisons) x SIM / CC / KLD rows + header;
    # the grid: per model a header + 5 images; the accuracy table: a header + one row per variant
    variants = len(pd.read_csv(run / "bench.csv"))
    assert dom.count('class="grid"') == 3 and dom.count("<tr>") == 1 + 2 * 8 * 3 + 3 * (1 + 5) + 1 + variants
    print(f"report: {size / 2**20:.2f} MB, load {load_ms} ms")
