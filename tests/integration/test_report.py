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
    assert 'id="summary-gradcampp"' in dom and dom.count("<tr>") > 20  # the Table 1 summary (one per CAM method)
    assert dom.index("<table") == dom.index('<table id="decision"')  # the page opens on the decision table
    assert 'class="grid"' in dom and dom.count('src="data:image/png;base64') > 30  # the CAM grid, images embedded
    assert 'id="scatter-' in dom and 'id="latency"' in dom
    assert "http://" not in dom.replace("http://www.w3.org", "") and "https://" not in dom  # opens offline
    assert shot.stat().st_size > 20_000
    # `edgecam report` rewrites it from the run's files alone; `edgecam compare` of a run with itself: all deltas 0
    assert edgecam(["report", str(out)], session_cache).returncode == 0
    cmp = edgecam(["compare", str(out), str(out), "--html", str(tmp_path / "cmp.html")], session_cache)
    assert cmp.returncode == 0 and "cc_fp32" in cmp.stdout and (tmp_path / "cmp.html").is_file()


def _synthetic_run(root: Path, images: int = 500, models: tuple[str, ...] = ("tinycnn", "mobilenet_v2", "resnet50"),
                   methods: tuple[tuple[str, str], ...] = (("gradcampp", "mirror"),), size: int = 64, failed: bool = False, gap: bool = False,
                   rule: str | None = None) -> Path:
    """A run directory with the files a real run writes, at `models` x 2 runtimes x 3 precisions x `methods`
    (CAM method, mode); `failed`: a TensorRT variant that failed besides; `gap`: the runtime gap of ORT vs
    LiteRT; `rule`: grid.json's sentence on how its images were picked."""
    from edgecam.bench.outputs import write_grid
    from edgecam.bench.results import summarise, summarise_gap

    rng = np.random.default_rng(0)
    runtimes, precisions = [("onnx", "onnxruntime"), ("tflite", "litert")], ["fp32", "int16", "int8"]
    rows, lat, bench, grids, gaps = [], [], [], {}, []
    for model in models:
        cams = {}
        for fmt, runtime in runtimes:
            for p in precisions:
                key = f"{model}-{fmt}-{p}-{runtime}"
                n = images
                for method, mode in methods:
                    cams[(key, method, mode)] = rng.random((5, size, size)).astype(np.float32)
                    base = {"model": model, "format": fmt, "runtime": runtime, "precision": p, "device": "board", "cam_method": method, "cam_mode": mode}
                    for col in ("sim_fp32", "cc_fp32", "kld_fp32", "rmse_fp32", "emd_fp32", "sim_gt", "cc_gt", "kld_gt", "nss_gt", "sim_sal", "cc_sal", "kld_sal",
                                "deletion_auc", "insertion_auc", "wsol_iou", "pointing_energy", "act_entropy", "act_std", "act_hoyer", "act_gini"):
                        base[col] = rng.random(n)
                    rows.append(pd.DataFrame({**base, "image_id": [f"test-{i:05d}" for i in range(n)], "cam_constant": False}))
                    if gap and runtime == "litert":
                        gaps.append(pd.DataFrame({"model": model, "precision": p, "cam_method": method, "pair": "tflite/litert v. onnx/onnxruntime",
                                                  "image_id": [f"test-{i:05d}" for i in range(n)], "agrees": True, "sim": rng.random(n), "cc": rng.random(n), "kld": rng.random(n)}))
                lat.append(pd.DataFrame({"model": model, "format": fmt, "runtime": runtime, "precision": p, "latency_ms": rng.gamma(4, 0.3, 100)}))
                bench.append({"model": model, "format": fmt, "runtime": runtime, "precision": p, "ok": True, "p50_ms": rng.gamma(4, 0.3), "size_bytes": int(rng.integers(1e5, 1e8)), "peak_rss_mb": 50.0})
        if failed:
            bench.append({"model": model, "format": "engine", "runtime": "tensorrt", "precision": "int8", "ok": False, "error": "the builder refused a layer"})
        grids[model] = {"ids": [f"test-{i:05d}" for i in range(5)], "kinds": ["typical"] * 3 + ["dissimilar"] * 2, "images": rng.random((5, 3, size, size)),
                        "masks": rng.random((5, size, size)), "has_box": np.ones(5, bool), "saliency": rng.random((5, size, size)), "cams": cams, "preds": {k[0]: np.zeros(5, int) for k in cams}}
    root.mkdir(parents=True)
    results = pd.concat(rows, ignore_index=True)
    results.to_parquet(root / "results.parquet")
    summarise(results, list(models), n_boot=500).to_csv(root / "summary.csv", index=False)
    if gaps:
        summarise_gap(pd.concat(gaps, ignore_index=True), list(models), n_boot=500).to_csv(root / "runtime_gap.csv", index=False)
    pd.concat(lat).to_parquet(root / "latency.parquet")
    pd.DataFrame(bench).to_csv(root / "bench.csv", index=False)
    write_grid(grids, root)
    if rule is not None:
        index = json.loads((root / "grid.json").read_text())
        for entry in index.values():
            entry["rule"] = rule
        (root / "grid.json").write_text(json.dumps(index))
    (root / "manifest.json").write_text(json.dumps({"config": {"name": "scale", "models": [{"name": m} for m in models],
                                                               "explain": {"reference": methods[0][0], "cc_floor": 0.5, "bootstrap": 500}},
                                                    "images": images, "wall_s": 1.0, "device": {"arch": "aarch64", "cpu": "Cortex-A78AE", "cores": 8}}))
    return root


def _rows(dom: str, table_id: str) -> int:
    """The <tr> rows (header included) of the table with this id in the DOM."""
    m = re.search(rf'<table id="{re.escape(table_id)}"[^>]*>(.*?)</table>', dom, re.S)
    assert m, table_id
    return m.group(1).count("<tr")


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
    # the grid: per model a header + 5 images; the decision, faithfulness and accuracy tables: a header + one row per variant
    variants = len(pd.read_csv(run / "bench.csv"))
    assert _rows(dom, "summary-gradcampp") == 1 + 2 * 8 * 3 and dom.count('class="grid"') == 3 and dom.count("<details") == 1 + 1
    assert _rows(dom, "decision") == _rows(dom, "faithfulness-table") == _rows(dom, "accuracy") == 1 + variants
    assert dom.count("<tr") == 1 + 2 * 8 * 3 + 3 * (1 + 5) + 3 * (1 + variants)
    print(f"report: {size / 2**20:.2f} MB, load {load_ms} ms")


#: run in the page after load (its hash joins the page's script-src): what a reader at 1,400 px would see wrong
CHECK = r"""
window.addEventListener('load', () => {
  const W = window.innerWidth, out = {width: W, scrollWidth: document.documentElement.scrollWidth, wide: [], dollars: []};
  const firstTable = document.querySelector('table'); out.firstTable = firstTable ? firstTable.id : null;
  const scroller = el => { for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
    if (['auto', 'scroll', 'hidden'].includes(getComputedStyle(a).overflowX)) return a.getBoundingClientRect().right <= W + 1; } return false; };
  for (const el of document.body.querySelectorAll('*')) { const r = el.getBoundingClientRect();
    if (r.width > 0 && (r.right > W + 1 || r.left < -1) && !scroller(el)) out.wide.push(`${el.tagName}#${el.id}.${el.className} right=${Math.round(r.right)}`); }
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    if (!['SCRIPT', 'STYLE'].includes(n.parentElement.tagName) && /\$|mathdefault/.test(n.data)) out.dollars.push(n.data.slice(0, 80)); }
  out.gridScrolls = [...document.querySelectorAll('.gridbox')].map(b => b.scrollWidth > b.clientWidth);
  out.gridSticky = [...document.querySelectorAll('.grid tbody tr:first-child td')].slice(0, 3).map(td => getComputedStyle(td).position);
  out.scatterRight = [...document.querySelectorAll('img.plot')].map(i => Math.round(i.getBoundingClientRect().right));
  document.body.dataset.checks = JSON.stringify(out);
});
"""


def _with_checks(report: Path, dest: Path) -> Path:
    """A copy of the report that runs CHECK after load, its hash added to the page's own CSP (nothing else
    of the page changes)."""
    from edgecam.bench.report import csp_hash

    page = report.read_text(encoding="utf-8")
    assert page.count("script-src ") == 1 and page.count("</body>") == 1
    dest.write_text(page.replace("script-src ", f"script-src {csp_hash(CHECK)} ").replace("</body>", f"<script>{CHECK}</script></body>"), encoding="utf-8")
    return dest


@needs_chromium
def test_quickstart_like_report_fits_1400px_and_opens_on_the_decision(tmp_path: Path) -> None:
    """Issue 37 at 1,400 px: 6 variants x 2 CAM methods (12 grid columns, wider than the page) plus a failed
    one. The page opens on the decision table; no element is wider than the window unless it sits in a
    scrolling box (the grid's columns scroll, image and input stay put); no text shows `$` or TeX."""
    import html as html_lib

    from edgecam.bench.report import build_report

    run = _synthetic_run(tmp_path / "qs", images=24, models=("efficientnet_lite0",), methods=(("gradcampp", "mirror"), ("eigencam", "surrogate")),
                         size=224, failed=True, gap=True, rule="typical: the 3 images nearest the median CC vs fp32; dissimilar: the 2 lowest")
    report = build_report(run)
    dom, log = render(CHROMIUM, _with_checks(report, tmp_path / "checked.html"), size="1400,1000")
    _loaded(dom, log)
    found = re.search(r'data-checks="([^"]*)"', dom)
    assert found, dom[-2000:]
    checks = json.loads(html_lib.unescape(found.group(1)))
    assert checks["width"] == 1400, checks
    assert checks["firstTable"] == "decision"
    assert checks["wide"] == [] and checks["scrollWidth"] <= checks["width"], checks
    assert checks["dollars"] == [], checks["dollars"]
    assert checks["gridScrolls"] == [True] and checks["gridSticky"] == ["sticky", "sticky", "static"], checks  # the test is not vacuous
    assert all(right <= 1400 for right in checks["scatterRight"]), checks
    # the decision table: 6 working variants and the failed one; the picks; the grid's rule; the runtime gap
    assert _rows(dom, "decision") == 1 + 7 and "the builder refused a layer" in dom and 'id="picks"' in dom
    assert dom.index('<table id="decision"') < dom.index('id="scatter-board"') < dom.index('class="gridbox"') < dom.index('id="summary-gradcampp"')
    assert "nearest the median CC" in dom and _rows(dom, "runtime-gap-table") == 1 + 3 * 2
    assert dom.count('<details class="t1"') == 2 and "<details class=\"t1\" open" not in dom
