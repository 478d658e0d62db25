"""`report.html`: one self-contained page per run (images embedded, no network) that engineers can act on.

Sections: the Table 1 summary of 2403.09939 (comparison x metric rows, model columns, mean ± std, best per
row highlighted, sortable), the CAM grid of its Figure 2 (input, ground truth, saliency and every variant's
CAM overlaid, for typical and most-dissimilar images), latency-vs-fidelity and size-vs-fidelity scatters
with the Pareto front, latency distributions, memory bars, and the run's manifest. Plots are matplotlib
PNGs: static images keep the file small and need no JavaScript library (a few lines of inline JS sort the
table and record the page's own load timing).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

TABLE1_METRICS = ("sim", "cc", "kld")  # summary metric keys of Table 1


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _plt() -> Any:
    from edgecam.bench.outputs import pyplot

    return pyplot()


def summary_table(summary: Any, models: Sequence[str]) -> str:
    """Table 1 as a sortable HTML table; the row's best model (the summary's `best` column) gets class `best`."""
    from edgecam.bench.results import format_mean_std, is_best

    if summary.empty:
        return "<p>No CAM comparisons in this run.</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("format", "runtime", "CAM", "mode", "comparison", "metric", *models))
    rows = []
    for _, r in summary.iterrows():
        cells = []
        for m in models:
            mean = float(r.get(f"{m}_mean", np.nan))
            ci = (r.get(f"{m}_ci_lo", np.nan), r.get(f"{m}_ci_hi", np.nan))
            title = f"95% CI [{ci[0]:.3f}, {ci[1]:.3f}]" if ci[0] == ci[0] else ""
            p = r.get(f"{m}_p_vs_fp32", np.nan)
            title += f"; Wilcoxon p vs fp32 = {p:.2g}" if p == p else ""
            cls = ' class="best"' if is_best(r, m) else ""
            cells.append(f'<td{cls} data-v="{mean}" title="{html.escape(title)}">{format_mean_std(mean, float(r.get(f"{m}_std", np.nan)))}</td>')
        meta = [r.get("format", ""), r.get("runtime", ""), r.get("cam_method", ""), r.get("cam_mode", ""), r["comparison"], r["metric_label"]]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in meta) + "".join(cells) + "</tr>")
    return f'<div class="tablebox"><table id="summary" class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """RGB uint8: the image (C, H, W in [0, 1]) blended half and half with the jet-coloured CAM."""
    import cv2

    rgb = np.clip(np.nan_to_num(np.asarray(image, np.float32)).transpose(1, 2, 0), 0, 1)  # a NaN pixel shows black
    heat = cv2.applyColorMap((np.clip(np.nan_to_num(np.asarray(cam, np.float32)), 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1] / 255.0
    return (255 * (0.5 * rgb + 0.5 * heat)).astype(np.uint8)


def _img_tag(rgb: np.ndarray, title: str, size: int = 96) -> str:
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]) if rgb.ndim == 3 else rgb)
    if not ok:
        raise ValueError("PNG encoding failed")
    src = "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()
    return f'<img src="{src}" width="{size}" height="{size}" title="{html.escape(title)}" alt="{html.escape(title)}">'


def cam_grid(run_dir: Path, models: Sequence[str] = ()) -> str:
    """Figure 2 of 2403.09939 per model: rows = images, columns = input, ground truth, saliency, then
    every variant's CAM (method, mode) overlaid on the input."""
    from edgecam.bench.outputs import GRID_JSON, GRID_NPZ, read_json, read_npz, reading

    index_path, arrays_path = run_dir / GRID_JSON, run_dir / GRID_NPZ
    if not index_path.is_file() or not arrays_path.is_file():
        return "<p>No CAM grid in this run (grid.json / grid.npz missing).</p>"
    index, z = read_json(index_path, "the CAM grid's index"), read_npz(arrays_path, "the CAM grid")  # DamagedFileError naming a damaged one
    parts = []
    with reading(index_path, "the CAM grid's index: it names arrays grid.npz lacks"):  # a grid.json and grid.npz that do not match
        for model in [m for m in models if m in index] + [m for m in index if m not in models]:
            entry = index[model]
            images, masks, sal = z[f"{model}__images"], z[f"{model}__masks"], z[f"{model}__saliency"]
            head = "<th>image</th><th>input</th><th>ground truth</th><th>saliency</th>" + "".join(
                f"<th>{html.escape(c['variant'].removeprefix(model + '-'))}<br>{html.escape(c['method'])} ({html.escape(c['mode'])})</th>" for c in entry["cams"])
            rows = []
            has_box = entry.get("has_box", [True] * len(entry["ids"]))
            for i, (image_id, kind) in enumerate(zip(entry["ids"], entry["kinds"])):
                rgb = (np.clip(np.nan_to_num(images[i]).transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)
                gt = f"<td>{_img_tag(_overlay(images[i], masks[i]), 'ground truth')}</td>" if has_box[i] else '<td class="na">n/a<br><small>no box for this image</small></td>'
                cells = [f"<td>{html.escape(str(image_id))}<br><small>{html.escape(str(kind))}</small></td>", f"<td>{_img_tag(rgb, image_id)}</td>", gt,
                         f"<td>{_img_tag(_overlay(images[i], sal[i]), 'saliency')}</td>"]
                for c in entry["cams"]:
                    cells.append(f"<td>{_img_tag(_overlay(images[i], z[c['array']][i].astype(np.float32)), c['variant'] + ' pred ' + str(c['pred'][i]))}</td>")
                rows.append("<tr>" + "".join(cells) + "</tr>")
            parts.append(f'<h3>{html.escape(model)}</h3><div class="scroll"><table class="grid"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')
    return "".join(parts)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower x, higher y), sorted by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best_y = [], -np.inf
    for i in order:
        if points[i][1] > best_y:
            front.append(i)
            best_y = points[i][1]
    return front


def fidelity_points(results: Any, bench: Any, method: str | None = None) -> Any:
    """Per variant: p50 latency, size and mean CC vs the fp32 CAM of `method` (default: the first in the
    results) in its mirror / surrogate mode."""
    import pandas as pd

    if results.empty or bench.empty:
        return pd.DataFrame()
    method = method or str(results["cam_method"].iloc[0])
    sub = results[(results["cam_method"] == method) & (results["cam_mode"] != "sim")]
    cc = sub.groupby(["device", "model", "format", "runtime", "precision"])["cc_fp32"].mean().rename("cc_fp32").reset_index()
    ok = bench[bench["ok"]] if "ok" in bench else bench
    points = cc.merge(ok[["model", "format", "runtime", "precision", "p50_ms", "size_bytes"]], on=["model", "format", "runtime", "precision"]).assign(cam_method=method)
    # a variant without a fidelity (no float reference: TFLite files only) or a latency has no place on the plots
    return points.dropna(subset=["cc_fp32", "p50_ms", "size_bytes"]).reset_index(drop=True)


def _seconds(value: Any) -> str:
    """A duration from the manifest as "N s", "? s" when it is not a number (a damaged or foreign manifest)."""
    return f"{value:.0f} s" if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) else "? s"


def _emulated_banner(device: dict[str, Any], anchor: str = "") -> str:
    """A warning paragraph when the run's device is emulated: its latency is the emulator's, not hardware's."""
    if not device.get("emulated"):
        return ""
    why = html.escape(str(device.get("emulation") or "the inventory says so (emulated = true)"))
    ident = f' id="{anchor}"' if anchor else ""
    return (f'<p class="warn"{ident}><b>Emulated device</b> ({why}): latency and memory here are an emulator\'s, '
            "not the board's (an emulated CPU is hundreds of times slower and does not rank variants as hardware does). "
            "Predictions and CAM fidelity are real: the board's own kernels computed them.</p>")


def scatter_plots(points: Any) -> str:
    """Latency-vs-fidelity and size-vs-fidelity per device, the Pareto front drawn."""
    if points.empty:
        return "<p>No variants with both latency and CAM fidelity.</p>"
    plt = _plt()
    out = []
    markers = {"fp32": "o", "int16": "s", "int8": "^", "mixed": "D"}
    for device, grp in points.groupby("device"):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, xcol, xlabel in ((axes[0], "p50_ms", "p50 latency (ms, batch 1)"), (axes[1], "size_bytes", "model size (bytes)")):
            pts = list(zip(grp[xcol].astype(float), grp["cc_fp32"].astype(float)))
            colours = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(grp["model"]))}
            front: list[int] = []
            for m in colours:  # a trade-off is within one model: one Pareto front per model
                idx = [j for j, mm in enumerate(grp["model"]) if mm == m]
                sub = [idx[k] for k in pareto_front([pts[j] for j in idx])]
                front += sub
                ax.plot([pts[j][0] for j in sub], [pts[j][1] for j in sub], "--", color=colours[m], lw=1, marker="o", mfc="none", ms=11)
            for j, ((_, r), (x, y)) in enumerate(zip(grp.iterrows(), pts)):
                ax.scatter(x, y, marker=markers.get(r["precision"], "o"), s=40, color=colours[r["model"]], edgecolors="k", linewidths=0.4)
                if j in front or r["precision"] != "fp32":
                    ax.annotate(f"{r['model']} {r['runtime']} {r['precision']}", (x, y), fontsize=6, xytext=(3, -8 if j % 2 else 3), textcoords="offset points")
            for m, c in colours.items():
                ax.scatter([], [], color=c, label=m)
            for prec, mk in markers.items():
                ax.scatter([], [], marker=mk, color="grey", label=prec)
            ax.plot([], [], "k--", marker="o", mfc="none", lw=1, label="Pareto front (per model)")
            ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"CC vs fp32 CAM ({grp['cam_method'].iloc[0]})")
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        fig.suptitle(f"Latency and size vs CAM fidelity on {device}", fontsize=9)
        out.append(f'<img class="plot" id="scatter-{html.escape(str(device))}" src="{_png(fig)}" alt="latency vs fidelity on {html.escape(str(device))}">')
    return "".join(out)


def latency_and_memory(latency: Any, bench: Any) -> str:
    """Box plot of the raw latency samples per variant, and peak-RSS bars."""
    if latency.empty:
        return "<p>No latency samples.</p>"
    plt = _plt()
    keys = latency.groupby(["model", "format", "runtime", "precision"], sort=False)
    labels, data = [], []
    for (model, fmt, runtime, precision), grp in keys:
        labels.append(f"{model} {runtime} {precision}")
        data.append(grp["latency_ms"].to_numpy())
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(labels)), 3.6))
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency distributions (raw samples, batch 1)", fontsize=9)
    out = f'<img class="plot" id="latency" src="{_png(fig)}" alt="latency distributions">'
    if "peak_rss_mb" in bench and bench["peak_rss_mb"].notna().any():
        fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(bench)), 3.2))
        names = [f"{r['model']} {r['runtime']} {r['precision']}" for _, r in bench.iterrows()]
        ax.bar(range(len(names)), bench["peak_rss_mb"].fillna(0))
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("peak RSS (MB)")
        ax.set_title("Memory: peak resident set of a process that loads and runs the model", fontsize=9)
        out += f'<img class="plot" id="memory" src="{_png(fig)}" alt="memory">'
    return out


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}.warn{background:#fff4d6;border-left:4px solid #e0a000;padding:.4em .7em}h1{font-size:1.4em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;padding:3px 6px;text-align:right}
th{background:#f3f3f3;cursor:pointer}td:nth-child(-n+6){text-align:left}.best{font-weight:bold;background:#e3f6e3}
.grid td{text-align:center;padding:1px}.grid img{image-rendering:pixelated}.scroll{overflow-x:auto}.plot{max-width:100%}
pre{background:#f7f7f7;padding:1em;font-size:11px;overflow-x:auto}
.tablebox{max-height:430px;overflow-y:auto;display:inline-block;border:1px solid #ccc}.tablebox th{position:sticky;top:0}
.warnrow td{background:#fff4d6}
"""

SCRIPT = """
window.addEventListener('error', e => { document.body.dataset.jsError = String(e.message); });
document.querySelectorAll('table.sortable th').forEach((th, col) => th.addEventListener('click', () => {
  const tbody = th.closest('table').tBodies[0]; const asc = th.dataset.asc !== '1'; th.dataset.asc = asc ? '1' : '0';
  const key = tr => { const td = tr.children[col]; const v = parseFloat(td.dataset.v ?? td.textContent); return isNaN(v) ? td.textContent : v; };
  [...tbody.rows].sort((a, b) => { const x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * (asc ? 1 : -1); }).forEach(r => tbody.appendChild(r));
}));
window.addEventListener('load', () => {
  const t = performance.getEntriesByType('navigation')[0];
  document.body.dataset.loadMs = String(Math.round(t.loadEventStart - t.startTime));
  document.body.dataset.ready = '1';
});
"""


def csp_hash(source: str) -> str:
    """The Content-Security-Policy source that allows exactly this inline script or style block."""
    import base64
    import hashlib

    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


#: the report runs its own sort script and style and nothing else: no other script, no fetches, images only
#: as data: URIs (a value that slipped past escaping still could not execute or call out)
CSP = f"default-src 'none'; script-src {csp_hash(SCRIPT)}; style-src {csp_hash(STYLE)}; img-src data:; base-uri 'none'; form-action 'none'"


def saliency_qat_section(run_dir: Path) -> str:
    """The arXiv 2411.05858 study's table (`saliency_qat.csv`), one row per data set x training x precision;
    empty when the run had no study. Every cell escaped."""
    from edgecam.bench import outputs as files
    from edgecam.bench.studies.saliency_qat import wide_table

    long = files.read_table(run_dir, files.SALIENCY_QAT)
    if long.empty:
        return ""
    wide = wide_table(long.to_dict("records"))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in wide.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in wide.itertuples(index=False))
    return (f'<h2 id="saliency-qat">Saliency-assisted QAT (arXiv 2411.05858)</h2><p>Accuracy and map clarity, mean [95% bootstrap interval]: '
            f"IG = input-gradient saliency, GC++ = Grad-CAM++; Gini (higher: sparser) and entropy (lower: more concentrated) of the maps, "
            f"Deletion / Insertion AUC through the same model, CC vs the fp32 model of the same training. Rows labelled host simulation run in "
            f"PyTorch fake-quant (no runtime executes those bit widths).</p><div class=\"scroll\"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>")


SENSITIVITY_BARS = 20  # groups the report's bar chart shows (the CSV has all)


def sensitivity_section(run_dir: Path, manifest: dict[str, Any]) -> str:
    """The explanation-sensitivity ranking (`sensitivity.csv`) as a bar chart of the most CAM-sensitive
    groups, and the greedy plan's steps; empty when the run had no analysis. Every value escaped."""
    from edgecam.bench import outputs as files

    ranking, steps = files.read_table(run_dir, files.SENSITIVITY), files.read_table(run_dir, files.SENSITIVITY_PLAN)
    if ranking.empty:
        return ""
    top = ranking.sort_values("rank").head(SENSITIVITY_BARS)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(top) + 1.2))
    labels = [f"{g} ({k})" for g, k in zip(top["group"], top["kind"])]
    err = np.abs(np.vstack([top["delta_cc"] - top["delta_cc_ci_lo"], top["delta_cc_ci_hi"] - top["delta_cc"]])) if "delta_cc_ci_lo" in top else None
    ax.barh(range(len(top)), top["delta_cc"], xerr=err, color=["#2b7" if v > 0 else "#c55" for v in top["delta_cc"]], label="float fallback: CC gain (95% interval)")
    ax.barh(range(len(top)), top["only_delta_cc"], color="#88a", alpha=0.6, label="alone quantized: CC loss")
    ax.set_yticks(range(len(top)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("change of the CAM's CC vs the fp32 CAM (host simulation)")
    ax.legend(fontsize=7, loc="lower right")
    chart = _png(fig)
    entry = manifest.get("sensitivity") or {}
    cols = ["step", "group", "kept", "cc", "sim", "kld", "top1_agreement"]
    plan_rows = "".join("<tr>" + "".join(f"<td>{html.escape(f'{r[c]:.4f}' if isinstance(r[c], float) else str(r[c]))}</td>" for c in cols) + "</tr>"
                        for _, r in steps.iterrows()) if not steps.empty else ""
    agree = entry.get("host_vs_device") or {}
    device_line = ""
    if agree:
        cc, top1 = (float(agree.get(k, float("nan"))) for k in ("device_vs_host_cc", "device_vs_host_top1_agreement"))
        device_line = (f"<p>The planned variant on the device vs its host simulation, on the {html.escape(str(agree.get('images')))} ranking images: "
                       f"CAM CC {cc:.4f}, top-1 agreement {top1:.4f}.</p>")
    return (f'<h2 id="sensitivity">Explanation sensitivity: which quantized group moves the CAM</h2><p>Model {html.escape(str(entry.get("model", "")))} at '
            f'{html.escape(str(entry.get("precision", "")))}, {html.escape(str(entry.get("images", "")))} training-split images, host simulation. Each group left in '
            f'higher precision alone (float, or int16 for a weight; green: CC gained over the whole artifact) and quantized alone (grey: CC lost vs fp32); the {len(top)} most CAM-sensitive of '
            f'{len(ranking)} groups ({files.SENSITIVITY} has all, with SIM, KLD, top-1 agreement and ONNX Runtime\'s SQNR).</p>'
            f'<img alt="sensitivity ranking" src="{chart}"><h3>Mixed-precision plan (target CC {html.escape(str(entry.get("cc_target", "")))})</h3>'
            f'<p>Each row: the groups kept so far plus this one in higher precision (float; int16 for a weight ONNX Runtime would re-quantize); a group is kept only if the combination raises the CC.</p>'
            f'<div class="scroll"><table><thead><tr>{"".join(f"<th>{c}</th>" for c in cols)}</tr></thead><tbody>{plan_rows}</tbody></table></div>{device_line}')


def _rate(value: Any) -> str:
    """A fraction for a table cell: 4 decimals, "n/a" when it is not a number (no finite prediction to count)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return f"{x:.4f}" if np.isfinite(x) else "n/a"


def _count(value: Any) -> int:
    """A count from bench.csv (NaN / missing for a failed variant or an older run: 0)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return 0
    return int(x) if np.isfinite(x) else 0


def accuracy_table(bench: Any) -> str:
    """Per variant: accuracy and agreement with fp32 over the test images with finite outputs (`images`), beside
    the images whose outputs were NaN / Inf (`nonfinite_outputs`), with a warning naming the variants that had
    any: such images have no prediction and NaN metrics, they are never counted as class 0. Every value escaped."""
    if bench.empty:
        return "<p>No variant ran.</p>"
    rows, flagged = [], []
    for _, r in bench.iterrows():
        name = f"{r.get('model', '')} {r.get('format', '')} {r.get('runtime', '')} {r.get('precision', '')}"
        bad = _count(r.get("nonfinite_outputs"))
        if bad:
            flagged.append(f"{name} ({bad})")
        ok = bool(r.get("ok", True))
        cells = [html.escape(str(r.get(c, ""))) for c in ("model", "format", "runtime", "precision")]
        cells += ([_rate(r.get("accuracy")), _rate(r.get("agrees_fp32")), str(_count(r.get("images"))), str(bad)] if ok else ["failed", "", "", ""])
        cls = ' class="warnrow"' if bad else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{c}</th>" for c in ("model", "format", "runtime", "precision", "accuracy", "agrees fp32", "images (finite)", "non-finite outputs"))
    warn = (f'<p class="warn" id="nonfinite"><b>Non-finite outputs</b>: the device answered NaN / Inf for some test images of '
            f"{html.escape(', '.join(flagged))}. Those images have no prediction and NaN metrics; accuracy and agreement are over the "
            "finite ones only.</p>") if flagged else ""
    return f'{warn}<div class="tablebox"><table id="accuracy" class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _images_line(manifest: dict[str, Any]) -> str:
    """"N images per variant", and when a limit cut the test split, of how many and which setting cut it."""
    cut = manifest.get("image_limit")
    images = html.escape(str(manifest.get("images", "?")))
    if isinstance(cut, dict) and cut.get("cut"):
        return (f'{images} images per variant (<b>{html.escape(str(cut.get("set_by")))} = {html.escape(str(cut.get("limit")))}</b>: '
                f'{images} of {html.escape(str(cut.get("available")))} test images have CAMs; accuracy covers all)')
    return f"{images} images per variant"


def reference_note(manifest: dict[str, Any]) -> str:
    """What "fp32" means for a model given by its files (issue 34): its fp32 ONNX, one dequantized from its QDQ ONNX,
    or none (TFLite files only); empty for the models edgecam exported itself."""
    lines = []
    for name, entry in manifest.get("models", {}).items():
        checkpoint = entry.get("checkpoint", {}) if isinstance(entry, dict) else {}
        if "files" not in checkpoint:
            continue
        kind = checkpoint.get("reference_kind")
        what = {"fp32": "is the fp32 ONNX file", "dequantized": "is a <b>dequantized reference</b>: the QDQ ONNX file made float (weights folded, "
                "activation Q/DQ bypassed), not a float model of the original training",
                None: "does not exist (TFLite files only): its \"v. fp32\" columns are not measured and only gradient-free CAMs ran"}.get(kind, html.escape(str(kind)))
        lines.append(f"<li>{html.escape(name)}: given by its files ({html.escape(', '.join(Path(f).name for f in checkpoint['files']))}); its fp32 {what}.</li>")
    return f'<div class="warn" id="reference"><ul>{"".join(lines)}</ul></div>' if lines else ""


def build_report(run_dir: str | Path) -> Path:
    """Write `run_dir/report.html` from the run's files; returns its path."""
    from edgecam.bench import outputs as files
    from edgecam.safe_io import atomic_path

    run_dir = Path(run_dir)
    manifest_path = run_dir / files.MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not an edgecam run directory (no {files.MANIFEST})")
    manifest = files.read_manifest(run_dir)  # DamagedFileError naming it when it does not parse
    summary, bench, results, latency = (files.read_table(run_dir, n) for n in (files.SUMMARY, files.BENCH, files.RESULTS, files.LATENCY))
    models = [m["name"] for m in manifest.get("config", {}).get("models", [])] or sorted(set(bench.get("model", [])))
    table1 = summary[summary["metric"].isin(TABLE1_METRICS)] if not summary.empty else summary
    device = manifest.get("device", {})
    title = f"edgecam report: {manifest.get('config', {}).get('name', run_dir.name)}"
    body = f"""<h1>{html.escape(title)}</h1>
<p>Device <b>{html.escape(str(device.get('inventory', {}).get('name', device.get('hostname', 'local'))))}</b>
({html.escape(str(device.get('arch', '')))}, {html.escape(str(device.get('cpu', '')))}, {html.escape(str(device.get('cores', '?')))} cores);
{_images_line(manifest)}; run took {_seconds(manifest.get('wall_s'))}.</p>
{_emulated_banner(device, "emulated")}
{reference_note(manifest)}
<h2 id="table1">CAM fidelity (Table 1 layout of 2403.09939)</h2>
<p>Mean ± std over images; best per row highlighted; hover a cell for its 95% bootstrap interval and the paired Wilcoxon p-value vs fp32; click a header to sort.</p>
{summary_table(table1, models)}
<h2 id="grid">Where the model looks (CAM grid, as Figure 2 of 2403.09939)</h2>
{cam_grid(run_dir, models)}
<h2 id="tradeoff">What each millisecond costs in interpretability</h2>
{scatter_plots(fidelity_points(results, bench))}
{saliency_qat_section(run_dir)}
{sensitivity_section(run_dir, manifest)}
<h2 id="accuracy-agreement">Accuracy and agreement with fp32 (test split)</h2>
{accuracy_table(bench)}
<h2 id="performance">Latency and memory{" (EMULATED device)" if device.get("emulated") else ""}</h2>
{_emulated_banner(device)}{latency_and_memory(latency, bench)}
<h2 id="manifest">Manifest</h2>
<details><summary>versions, device facts, config</summary><pre>{html.escape(json.dumps(manifest, indent=1, default=str))}</pre></details>"""
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>{body}<script>{SCRIPT}</script></body></html>')
    out = run_dir / files.REPORT
    with atomic_path(out) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return out
