"""`report.html`: one self-contained page per run (images embedded, no network) that engineers can act on.

The page opens on the answer to "which variant do I ship?": the decision table of `bench/decision.py` (one
row per variant: accuracy, agreement with fp32, p50 / p99 latency, peak RSS, size, and per CAM method the CC
and SIM of its CAMs vs fp32 with a 95% bootstrap interval, a Pareto flag) and the best variant per objective.
Then the latency-vs-fidelity and size-vs-fidelity scatters (every point numbered, the key under the plot),
the CAM grid of 2403.09939's Figure 2 (in its own horizontal scroller), Table 1 per CAM method (collapsed),
Deletion / Insertion AUC and the runtime gap when the run has them, the studies' sections, accuracy, latency
distributions, memory bars and the run's manifest. Plots are matplotlib PNGs whose tick labels are plain
numbers (mathtext is off, `outputs.pyplot`, so a TeX tick label would print as its source): static images keep
the file small and need no JavaScript library (a few lines of inline JS sort the tables and record the page's
own load timing). Figures are built by functions returning the `Figure` (testable without encoding), and
`plot_img` turns one into its <img>.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgecam.bench.decision import DEFAULT_CC_FLOOR, VARIANT_KEYS, Decision, decide, variant_label

TABLE1_METRICS = ("sim", "cc", "kld")  # summary metric keys of Table 1
DPI = 100  # of every plot: the label placement measures text in pixels at this resolution
#: scatter marker per precision (another precision: "X")
MARKERS = {"fp32": "o", "fp16": "v", "int16": "s", "int8": "^", "mixed": "D"}


def _png(fig: Any) -> str:
    """`fig` as a PNG data: URI (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def plot_img(fig: Any, ident: str, alt: str) -> str:
    """The <img> of a figure, scaled down to the page's width when wider."""
    return f'<img class="plot" id="{html.escape(ident)}" src="{_png(fig)}" alt="{html.escape(alt)}">'


def plain_number(x: float, pos: Any = None) -> str:
    """A tick label as a plain number ("0.5", "20", "1,500"), never TeX: mathtext is off (`outputs.pyplot`), so
    matplotlib's default log labels (`$\\mathdefault{10^{1}}$`) would print as their source."""
    if not np.isfinite(x):
        return ""
    if x == 0:
        return "0"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}" if abs(x) >= 1 else f"{x:.3g}"


#: major ticks per decade of a log axis, densest first; one is used when its closest two ticks (in decades) are at
#: least `_MIN_TICK_GAP` of the axis apart, so that labels never run into each other ("0.80.9")
_LOG_SUBS = ((1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0), (1.0, 2.0, 3.0, 5.0), (1.0, 2.0, 5.0), (1.0,))
_MIN_TICK_GAP = 0.05


def plain_log_axis(axis: Any, lo: float, hi: float, margin: float = 0.3) -> None:
    """Label a log axis (after `set_xscale("log")`, which resets it) with plain numbers: majors at the densest
    of 1-9 / 1-2-3-5 / 1-2-5 / 1 steps per decade whose labels keep apart on data spanning `lo`..`hi` (the view
    about `margin` wider), linear steps when the data spans under a third of a decade (a log locator would
    label one tick or none); minor ticks unlabelled."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    span = (float(np.log10(hi / lo)) if lo > 0 and hi > lo else 0.0) * (1 + margin)
    if span < 0.3:
        axis.set_major_locator(MaxNLocator(nbins=5))
    else:
        for subs in _LOG_SUBS:
            ticks = np.log10(np.concatenate([np.asarray(subs) * 10.0**k for k in (0, 1)]))
            if np.diff(ticks).min() >= _MIN_TICK_GAP * span or len(subs) == 1:
                break
        axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(plain_number))
    axis.set_minor_locator(LogLocator(base=10, subs=tuple(float(s) for s in range(2, 10))))
    axis.set_minor_formatter(NullFormatter())


def plain_linear_axis(axis: Any) -> None:
    """Plain numbers on a linear axis: no offset ("+9.9e-1") and no mathtext, whatever the rcParams say."""
    from matplotlib.ticker import ScalarFormatter

    axis.set_major_formatter(ScalarFormatter(useOffset=False, useMathText=False))


def _plt() -> Any:
    from edgecam.bench.outputs import pyplot

    return pyplot()


def summary_table(summary: Any, models: Sequence[str], table_id: str = "summary") -> str:
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
    return f'<div class="tablebox"><table id="{html.escape(table_id)}" class="sortable t1"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def summary_by_method(summary: Any, models: Sequence[str]) -> str:
    """Table 1 split per CAM method, each in a <details> closed by default (the decision table above already
    carries the numbers a choice needs; these are the full comparisons), each table sortable."""
    if summary.empty:
        return "<p>No CAM comparisons in this run.</p>"
    methods = summary["cam_method"].fillna("").astype(str) if "cam_method" in summary else np.full(len(summary), "")
    parts = []
    for method, grp in summary.groupby(methods, sort=False):
        modes = ", ".join(str(m) for m in dict.fromkeys(grp["cam_mode"].dropna())) if "cam_mode" in grp else ""
        name = method or "no CAM method"
        what = f"{len(grp)} rows" + (f"; mode {modes}" if modes else "")
        parts.append(f'<details class="t1" id="t1-{html.escape(name)}"><summary>{html.escape(name)} <small>({html.escape(what)})</small></summary>'
                     f"{summary_table(grp, models, f'summary-{name}')}</details>")
    return "".join(parts)


def _overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """RGB uint8: the image (C, H, W in [0, 1]) blended half and half with the jet-coloured CAM (upsampled
    bilinearly to the image when stored smaller: grid.npz keeps maps at most 56 px a side)."""
    import cv2

    cam = np.nan_to_num(np.asarray(cam, np.float32))
    if cam.shape != image.shape[1:]:
        cam = cv2.resize(cam, (image.shape[2], image.shape[1]), interpolation=cv2.INTER_LINEAR)
    rgb = np.clip(np.nan_to_num(np.asarray(image, np.float32)).transpose(1, 2, 0), 0, 1)  # a NaN pixel shows black
    heat = cv2.applyColorMap((np.clip(cam, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1] / 255.0
    return (255 * (0.5 * rgb + 0.5 * heat)).astype(np.uint8)


#: grid pictures are stored at twice the size they are shown (sharp on a high-density screen): a photo as JPEG,
#: which keeps a 224 px run's page a few MB instead of 8 (75 overlays as 224 px PNGs); a small image (digits)
#: stays a lossless PNG shown pixelated
GRID_SCALE = 2
GRID_JPEG_QUALITY = 88


def _img_tag(rgb: np.ndarray, title: str, size: int = 96) -> str:
    import cv2

    img = np.ascontiguousarray(rgb[:, :, ::-1]) if rgb.ndim == 3 else np.ascontiguousarray(rgb)
    side = GRID_SCALE * size
    if max(img.shape[:2]) > side:
        scale = side / max(img.shape[:2])
        img = cv2.resize(img, (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, GRID_JPEG_QUALITY])
        mime = "image/jpeg"
    else:
        ok, buf = cv2.imencode(".png", img)
        mime = "image/png"
    if not ok:
        raise ValueError(f"{mime} encoding failed")
    src = f"data:{mime};base64," + base64.b64encode(buf.tobytes()).decode()
    return f'<img src="{src}" width="{size}" height="{size}" title="{html.escape(title)}" alt="{html.escape(title)}">'


def cam_grid(run_dir: Path, models: Sequence[str] = ()) -> str:
    """Figure 2 of 2403.09939 per model: rows = images, columns = input, ground truth, saliency, then
    every variant's CAM (method, mode) overlaid on the input. Each model's grid scrolls sideways in its own box
    with the image and input columns kept in view (12 variant columns are wider than a page), under the rule
    that picked its images when grid.json states one (`rule`)."""
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
            rule = entry.get("rule") if isinstance(entry, dict) else None
            caption = f'<p class="rule">{html.escape(str(rule))}</p>' if isinstance(rule, str) and rule.strip() else ""
            parts.append(f'<h3>{html.escape(model)}</h3>{caption}<div class="gridbox"><table class="grid"><thead><tr>{head}</tr></thead>'
                         f'<tbody>{"".join(rows)}</tbody></table></div>')
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


#: where a point's number may go, tried in order: (dx, dy) in points from the point, horizontal / vertical alignment
_LABEL_SPOTS = ((6, 4, "left", "bottom"), (6, -4, "left", "top"), (-6, 4, "right", "bottom"), (-6, -4, "right", "top"),
                (0, 8, "center", "bottom"), (0, -8, "center", "top"), (9, 0, "left", "center"), (-9, 0, "right", "center"))


def place_labels(ax: Any, xy: Sequence[tuple[float, float]], texts: Sequence[str], fontsize: float = 8) -> list[Any]:
    """Annotate each point with its text where it collides with nothing: the first spot of a ring around the
    point (`_LABEL_SPOTS`, then rings 2.2 and 3.6 times as far, with a leader line) whose box stays inside the
    axes and overlaps no marker and no label placed before. A simple greedy placement: a point that no spot
    fits keeps the nearest spot. The figure's layout must be final (fixed subplot positions, no constrained layout)."""
    from matplotlib.transforms import Bbox

    fig = ax.figure
    ax.get_xlim(), ax.get_ylim()  # settles the autoscaled limits that transData maps through
    renderer = fig.canvas.get_renderer()  # measures text; no draw needed
    frame = ax.get_window_extent(renderer)
    centres = ax.transData.transform(np.asarray(xy, float).reshape(-1, 2))
    half = 5 * fig.dpi / 72  # half a marker (s=40 is about 6 points across), in pixels
    taken = [Bbox.from_extents(cx - half, cy - half, cx + half, cy + half) for cx, cy in centres if np.isfinite([cx, cy]).all()]
    out = []
    for (x, y), text in zip(xy, texts):
        choice, fallback = None, None
        for ring in (1.0, 2.2, 3.6):
            for dx, dy, ha, va in _LABEL_SPOTS:
                ann = ax.annotate(text, (x, y), xytext=(dx * ring, dy * ring), textcoords="offset points", ha=ha, va=va, fontsize=fontsize)
                box = ann.get_window_extent(renderer).padded(1)
                ann.remove()
                fallback = fallback or (dx, dy, ha, va, ring)
                inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
                if inside and not any(box.overlaps(t) for t in taken):
                    choice = (dx, dy, ha, va, ring)
                    taken.append(box)
                    break
            if choice:
                break
        dx, dy, ha, va, ring = choice or fallback
        leader = {"arrowprops": {"arrowstyle": "-", "lw": 0.5, "color": "0.4", "shrinkA": 0, "shrinkB": 3}} if ring > 1 else {}
        out.append(ax.annotate(text, (x, y), xytext=(dx * ring, dy * ring), textcoords="offset points", ha=ha, va=va, fontsize=fontsize, **leader))
    return out


def _precisions(values: Sequence[str]) -> list[str]:
    """The precisions present, in the order fp32, int16, int8, mixed, then any other as found."""
    from edgecam.bench.results import PRECISION_ORDER

    found = list(dict.fromkeys(str(v) for v in values))
    return [p for p in PRECISION_ORDER if p in found] + [p for p in found if p not in PRECISION_ORDER]


def scatter_figure(points: Any, title: str) -> Any:
    """Latency vs fidelity and size vs fidelity of one device's variants (`fidelity_points` rows plus a
    `number` column): every point carries its number (the key under the plot names it), placed so that no
    two collide; each model's Pareto front of each plot is drawn. The legend sits below the axes, never over
    a point, and lists only the models and precisions the points have."""
    from matplotlib.lines import Line2D

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.6), dpi=DPI)
    fig.subplots_adjust(left=0.06, right=0.99, top=0.92, bottom=0.21, wspace=0.17)
    colours = {m: f"C{i % 10}" for i, m in enumerate(dict.fromkeys(points["model"]))}
    precisions = _precisions(points["precision"])
    cc = points["cc_fp32"].to_numpy(dtype=float)
    method = str(points["cam_method"].iloc[0]) if "cam_method" in points and len(points) else ""
    axes_x = ((axes[0], points["p50_ms"].to_numpy(dtype=float), "p50 latency (ms, batch 1, log scale)"),
              (axes[1], points["size_bytes"].to_numpy(dtype=float) / 2**20, "model size (MB, log scale)"))
    for ax, xs, xlabel in axes_x:
        for m, colour in colours.items():  # a trade-off is within one model: one Pareto front per model
            idx = [j for j, mm in enumerate(points["model"]) if mm == m]
            front = [idx[k] for k in pareto_front([(xs[j], cc[j]) for j in idx])]
            ax.plot(xs[front], cc[front], "--", color=colour, lw=1, marker="o", mfc="none", ms=11, zorder=2)
        for prec in precisions:
            sel = (points["precision"].astype(str) == prec).to_numpy()
            ax.scatter(xs[sel], cc[sel], marker=MARKERS.get(prec, "X"), s=40, c=[colours[m] for m in points["model"][sel]],
                       edgecolors="k", linewidths=0.4, zorder=3)
        ax.set_xscale("log")
        plain_log_axis(ax.xaxis, float(np.nanmin(xs)), float(np.nanmax(xs)))
        plain_linear_axis(ax.yaxis)
        ax.margins(x=0.15, y=0.15)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"CC vs fp32 CAM ({method})")
        ax.grid(alpha=0.3)
    for ax, xs, _ in axes_x:
        place_labels(ax, list(zip(xs, cc)), [str(n) for n in points["number"]])
    handles = ([Line2D([], [], ls="", marker="o", color=c, label=m) for m, c in colours.items()]
               + [Line2D([], [], ls="", marker=MARKERS.get(p, "X"), color="0.5", mec="k", mew=0.4, label=p) for p in precisions]
               + [Line2D([], [], ls="--", color="k", lw=1, marker="o", mfc="none", ms=9, label="Pareto front of the plot (per model)")])
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(handles), 7), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=9)
    return fig


def _labels_by_key(decision: Decision) -> dict[tuple[str, ...], str]:
    """(model, format, runtime, precision) -> the decision table's label of the variant."""
    if decision.empty:
        return {}
    return {tuple(str(r[k]) for k in VARIANT_KEYS): str(r["label"]) for _, r in decision.table.iterrows()}


def _key_of(row: Any) -> tuple[str, ...]:
    return tuple(str(row[k]) for k in VARIANT_KEYS)


def scatter_section(points: Any, decision: Decision) -> str:
    """Per device: the scatter figure and, under it, the key naming every numbered point (with its latency,
    size, CC and whether the decision table flags it Pareto), and the variants that could not be plotted."""
    if points.empty:
        return "<p>No variants with both latency and CAM fidelity.</p>"
    labels = _labels_by_key(decision)
    pareto = {_key_of(r): bool(r["pareto"]) for _, r in decision.table.iterrows()} if not decision.empty else {}
    order = {k: i for i, k in enumerate(labels)}
    out = []
    for device, grp in points.groupby("device", sort=False):
        grp = grp.assign(_order=[order.get(_key_of(r), len(order)) for _, r in grp.iterrows()]).sort_values("_order", kind="stable").reset_index(drop=True)
        grp["number"] = np.arange(1, len(grp) + 1)
        fig = scatter_figure(grp, f"Latency and size vs CAM fidelity on {device}")
        items = []
        for _, r in grp.iterrows():
            label = labels.get(_key_of(r), variant_label(r))
            star = ' <b title="on the decision table\'s Pareto front">Pareto</b>' if pareto.get(_key_of(r)) else ""
            items.append(f'<li value="{int(r["number"])}">{html.escape(label)} <small>({float(r["p50_ms"]):.2f} ms, {_size(r["size_bytes"])}, '
                         f'CC {float(r["cc_fp32"]):.3f})</small>{star}</li>')
        out.append(plot_img(fig, f"scatter-{device}", f"latency and size vs CAM fidelity on {device}")
                   + '<p class="note">Key to the numbers on the points (p50 latency, size, mean CC vs fp32); <b>Pareto</b>: on the decision '
                   "table's front (latency, size and CC together; the dashed lines are each plot's own two-axis front).</p>"
                   + f'<ol class="key" id="key-{html.escape(str(device))}">{"".join(items)}</ol>')
    plotted = {_key_of(r) for _, r in points.iterrows()}
    missing = [label for key, label in labels.items() if key not in plotted]
    if missing:
        out.append(f'<p class="note">Not on the plots (failed, or no latency or no CC vs fp32): {html.escape(", ".join(missing))}.</p>')
    return "".join(out)


def latency_figure(latency: Any, labels: dict[tuple[str, ...], str]) -> Any | None:
    """Box plot of the raw latency samples per variant (log axis, plain-number ticks); None without samples."""
    if latency.empty:
        return None
    plt = _plt()
    names, data = [], []
    for key, grp in latency.groupby(list(VARIANT_KEYS), sort=False):
        key = tuple(str(k) for k in key)
        names.append(labels.get(key, f"{key[0]} {key[2]} {key[3]}"))
        data.append(grp["latency_ms"].to_numpy(dtype=float))
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(names)), 3.6), dpi=DPI)
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=60, ha="right", fontsize=7)
    ax.set_yscale("log")
    finite = np.concatenate([d[np.isfinite(d) & (d > 0)] for d in data]) if data else np.array([])
    if finite.size:
        plain_log_axis(ax.yaxis, float(finite.min()), float(finite.max()))
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title("Latency distributions (raw samples, batch 1)", fontsize=9)
    return fig


def memory_figure(bench: Any, labels: dict[tuple[str, ...], str]) -> Any | None:
    """Peak-RSS bars per variant; None when the run measured no memory."""
    if bench.empty or "peak_rss_mb" not in bench or not bench["peak_rss_mb"].notna().any():
        return None
    bench = bench[bench["peak_rss_mb"].notna()]  # a failed variant has no bar (not a bar of 0)
    plt = _plt()
    names = [labels.get(_key_of(r), variant_label(r)) for _, r in bench.iterrows()]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(names)), 3.2), dpi=DPI)
    ax.bar(range(len(names)), bench["peak_rss_mb"].fillna(0))
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    plain_linear_axis(ax.yaxis)
    ax.set_ylabel("peak RSS (MB)")
    ax.set_title("Memory: peak resident set of a process that loads and runs the model", fontsize=9)
    return fig


def latency_and_memory(latency: Any, bench: Any, decision: Decision) -> str:
    """The latency box plot and the memory bars as <img>s."""
    labels = _labels_by_key(decision)
    fig = latency_figure(latency, labels)
    if fig is None:
        return "<p>No latency samples.</p>"
    out = plot_img(fig, "latency", "latency distributions")
    mem = memory_figure(bench, labels)
    return out + (plot_img(mem, "memory", "memory") if mem is not None else "")


def _float(value: Any) -> float | None:
    """`value` as a finite float, None when it is missing or not a number."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


def _size(value: Any) -> str:
    """Bytes as "17.9 MB" / "52 KB" (`decision.format_size`); "n/a" when not a number."""
    from edgecam.bench.decision import format_size

    x = _float(value)
    return "n/a" if x is None else format_size(x)


def _na() -> str:
    return '<td class="na" data-v="">n/a</td>'


def _num_td(value: Any, fmt: str = "{:.3f}", shown: str | None = None) -> str:
    """A sortable numeric cell (data-v: the value), n/a when not a number."""
    x = _float(value)
    if x is None:
        return _na()
    return f'<td data-v="{x!r}">{html.escape(shown if shown is not None else fmt.format(x))}</td>'


def ci_td(mean: Any, lo: Any, hi: Any, what: str, digits: int = 3) -> str:
    """A mean with its 95% interval under it ("0.995" over "[0.991, 0.998]"), the interval also in the title;
    sorts by the mean."""
    m = _float(mean)
    if m is None:
        return _na()
    a, b = _float(lo), _float(hi)
    interval = f"[{a:.{digits}f}, {b:.{digits}f}]" if a is not None and b is not None else ""
    title = f"{what}: mean {m:.4f}" + (f", 95% bootstrap interval [{a:.4f}, {b:.4f}]" if interval else " (too few images for an interval)")
    small = f'<br><small class="ci">{interval}</small>' if interval else ""
    return f'<td data-v="{m!r}" title="{html.escape(title)}">{m:.{digits}f}{small}</td>'


def decision_table_html(decision: Decision, bench: Any) -> str:
    """The decision table as a sortable HTML table: one row per variant; a failed variant reads "failed" (its
    error in the cell's title), a picked one is highlighted. Every value escaped."""
    t = decision.table
    errors = {_key_of(r): r["error"] for _, r in bench.iterrows() if isinstance(r["error"], str)} if "error" in bench else {}
    picked: dict[str, list[str]] = {}
    for p in decision.picks:
        if p.label:
            picked.setdefault(p.label, []).append(p.objective)
    heads = [("model", ""), ("format", ""), ("runtime", ""), ("precision", ""),
             ("accuracy", "top-1 accuracy over the test images with finite outputs"),
             ("agrees<br>fp32", "share of images whose top-1 class is the fp32 model's"),
             ("p50<br>ms", "median latency, batch 1"), ("p99<br>ms", "99th percentile latency, batch 1"),
             ("peak RSS<br>MB", "peak resident set of a process that loads and runs the model"), ("size", "artifact size on disk")]
    for m in decision.methods:
        ref = " (reference: decides the Pareto flag and the picks)" if m == decision.reference else ""
        heads += [(f"CC vs fp32<br>{html.escape(m)}", f"mean over images of the Pearson correlation of this variant's {m} CAM with the fp32 CAM, "
                   f"95% bootstrap interval under it{ref}"),
                  (f"SIM vs fp32<br>{html.escape(m)}", f"mean over images of the histogram intersection of this variant's {m} CAM with the fp32 CAM, "
                   "95% bootstrap interval under it")]
    heads.append(("Pareto", "no other working variant is at once as fast (p50), as small and as faithful (CC of the reference method), and better on one"))
    head = "".join(f'<th title="{html.escape(title)}">{name}</th>' for name, title in heads)
    rows = []
    for _, r in t.iterrows():
        key = [html.escape(str(r[k])) for k in VARIANT_KEYS]
        cls = []
        ok = bool(r["ok"])
        if not ok:
            error = errors.get(_key_of(r), "") or "no error recorded"  # one cell across the figures: a sort puts the row last
            cells = [f'<td class="failed" colspan="{len(heads) - len(VARIANT_KEYS)}" title="{html.escape(error)}">failed: {html.escape(error[:200])}</td>']
            cls.append("failed")
        else:
            cells = [_num_td(r["accuracy"]), _num_td(r["agrees_fp32"]), _num_td(r["p50_ms"], "{:.2f}"), _num_td(r["p99_ms"], "{:.2f}"),
                     _num_td(r["peak_rss_mb"], "{:.0f}"), _num_td(r["size_bytes"], shown=_size(r["size_bytes"]))]
            for m in decision.methods:
                cells += [ci_td(r[f"{stat}_{m}"], r[f"{stat}_{m}_lo"], r[f"{stat}_{m}_hi"], f"{stat.upper()} vs fp32 ({m})") for stat in ("cc", "sim")]
            cells.append('<td data-v="1" class="pareto">✓</td>' if bool(r["pareto"]) else '<td data-v="0"></td>')
            if _count(r.get("nonfinite_outputs")):
                cls.append("warnrow")
        title = ""
        if str(r["label"]) in picked:
            cls.append("pick")
            title = f' title="{html.escape("picked: " + "; ".join(picked[str(r["label"])]))}"'
        attr = f' class="{" ".join(cls)}"' if cls else ""
        rows.append(f"<tr{attr}{title}>" + "".join(f"<td>{k}</td>" for k in key) + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table id="decision" class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def decision_section(decision: Decision, bench: Any) -> str:
    """The page's opening answer: the decision table, then the best variant per objective, the CC floor and
    the rule of the Pareto flag."""
    if decision.empty:
        return "<p>No variant ran: nothing to choose from.</p>"
    table = decision_table_html(decision, bench)
    if decision.reference is None:
        return table + "<p>No CAM comparisons vs fp32 in this run: no picks and no Pareto flag on fidelity.</p>"
    picks = "".join(f"<li><b>{html.escape(p.objective)}</b>: {html.escape(p.label) if p.label else '<i>none</i>'} <small>({html.escape(p.detail)})</small></li>"
                    for p in decision.picks)
    ref = html.escape(decision.reference)
    return (f'{table}<ul id="picks">{picks}</ul>'
            f'<p class="note">Floor: the fastest and the smallest picks must keep a mean CC vs the fp32 CAM ({ref}) of at least '
            f"<b>{decision.cc_floor:g}</b> (<code>explain.cc_floor</code>). Pareto ✓: no other working variant is at once as fast (p50), as small "
            f"and as faithful (mean CC vs fp32, {ref}) and strictly better on one of the three. Picked variants are highlighted; click a header to sort, hover a cell for its interval.</p>")


def faithfulness_section(results: Any, n_boot: int = 1000, seed: int = 0) -> str:
    """Deletion / Insertion AUC per variant and CAM method (mean with its 95% bootstrap interval) when the
    run measured them (`explain.faithfulness`); empty otherwise."""
    from edgecam.bench.stats import bootstrap_ci

    cols = [c for c in ("deletion_auc", "insertion_auc") if c in results]
    if results.empty or not cols or not results[cols].notna().any().any():
        return ""
    keep = results[results[cols].notna().any(axis=1)]
    keys = [*VARIANT_KEYS, "cam_method", *(["cam_mode"] if "cam_mode" in keep else [])]
    rows = []
    for key, grp in keep.groupby(keys, sort=False):
        cells = "".join(f"<td>{html.escape(str(k))}</td>" for k in key)
        for col in ("deletion_auc", "insertion_auc"):
            vals = grp[col].to_numpy(dtype=float) if col in grp else np.array([])
            vals = vals[np.isfinite(vals)]
            if vals.size:
                lo, hi = bootstrap_ci(vals, n_boot=n_boot, seed=seed)
                cells += ci_td(vals.mean(), lo, hi, col.replace("_", " "))
            else:
                cells += _na()
        cells += f'<td data-v="{len(grp)}">{len(grp)}</td>'
        rows.append(f"<tr>{cells}</tr>")
    names = {"cam_method": "CAM", "cam_mode": "mode"}
    head = "".join(f"<th>{names.get(c, c)}</th>" for c in (*keys, "Deletion AUC<br>(lower: more faithful)", "Insertion AUC<br>(higher: more faithful)", "images"))
    return ('<h2 id="faithfulness">Faithfulness: Deletion and Insertion AUC</h2><p>Pixels removed (deletion) or revealed (insertion) in the '
            "order of the CAM, the class score's area under the curve through the same variant; mean over images with its 95% bootstrap interval.</p>"
            f'<div class="scroll"><table id="faithfulness-table" class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def runtime_gap_section(run_dir: Path, models: Sequence[str]) -> str:
    """The runtime gap (`runtime_gap.csv`): CC and SIM between the CAMs of two runtimes at the same precision,
    mean with its 95% interval, per model, CAM method, pair and precision; empty when the run has no pair."""
    from edgecam.bench import outputs as files

    gap = files.read_table(run_dir, files.RUNTIME_GAP_CSV)
    if gap.empty or not {"cam_method", "pair", "precision", "metric"} <= set(gap.columns):
        return ""
    found = [c[: -len("_mean")] for c in gap.columns if c.endswith("_mean")]
    found = [m for m in models if m in found] + [m for m in found if m not in models]
    rows = []
    for model in found:
        for (method, pair, precision), grp in gap.groupby(["cam_method", "pair", "precision"], sort=False):
            by = {str(r["metric"]): r for _, r in grp.iterrows()}
            if all(_float(by[s].get(f"{model}_mean")) is None for s in ("cc", "sim") if s in by):
                continue  # this model has no pair at this precision
            cells = [ci_td(by[s].get(f"{model}_mean"), by[s].get(f"{model}_ci_lo"), by[s].get(f"{model}_ci_hi"), f"{s.upper()} between the runtimes")
                     if s in by else _na() for s in ("cc", "sim")]
            meta = "".join(f"<td>{html.escape(str(v))}</td>" for v in (model, method, pair, precision))
            rows.append(f"<tr>{meta}{''.join(cells)}</tr>")
    if not rows:
        return ""
    head = "".join(f"<th>{c}</th>" for c in ("model", "CAM", "runtimes", "precision", "CC", "SIM"))
    return ('<h2 id="runtime-gap">Runtime gap: the same precision on two runtimes</h2><p>CC and SIM between the CAMs two runtimes give '
            "for the same model at the same precision, per image, mean with its 95% bootstrap interval (1: the runtimes agree).</p>"
            f'<div class="scroll"><table id="runtime-gap-table" class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;overflow-wrap:anywhere}.warn{background:#fff4d6;border-left:4px solid #e0a000;padding:.4em .7em}
h1{font-size:1.4em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}.note,.rule{font-size:13px;color:#444}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;padding:3px 6px;text-align:right;overflow-wrap:normal}
th{background:#f3f3f3;cursor:pointer}td:nth-child(-n+4),table.t1 td:nth-child(-n+6){text-align:left}.best{font-weight:bold;background:#e3f6e3}
.scroll,.gridbox{overflow-x:auto;max-width:100%}.plot{max-width:100%;height:auto;display:block}small.ci{color:#666}
#decision td,#decision th{white-space:nowrap}#decision th:nth-child(-n+4){text-align:left}#decision td.pareto{text-align:center;font-weight:bold;color:#176}
tr.pick td:nth-child(-n+4){background:#e3f6e3;font-weight:600}tr.failed td{color:#888}#decision td.failed{color:#b00;text-align:left;white-space:normal}#picks li{margin:.2em 0}
.grid{border-collapse:separate;border-spacing:0}.grid td{text-align:center;padding:1px}.grid img{image-rendering:pixelated;display:block}
.grid td:nth-child(1),.grid th:nth-child(1){position:sticky;left:0;z-index:1;background:#fff;box-sizing:border-box;width:90px;min-width:90px;max-width:90px;overflow-wrap:anywhere}
.grid td:nth-child(2),.grid th:nth-child(2){position:sticky;left:90px;z-index:1;background:#fff}.grid th:nth-child(-n+2){background:#f3f3f3}
ol.key{columns:3 22em;font-size:12px;margin:.3em 0 1.2em}details.t1{margin:.3em 0}details.t1>summary{cursor:pointer;font-weight:600}
pre{background:#f7f7f7;padding:1em;font-size:11px;overflow-x:auto;max-width:100%;box-sizing:border-box}
.tablebox{max-height:430px;overflow:auto;display:inline-block;max-width:100%;border:1px solid #ccc}.tablebox th{position:sticky;top:0}
.warnrow td{background:#fff4d6}
"""

SCRIPT = """
window.addEventListener('error', e => { document.body.dataset.jsError = String(e.message); });
document.querySelectorAll('table.sortable thead th').forEach(th => th.addEventListener('click', () => {
  const col = th.cellIndex, tbody = th.closest('table').tBodies[0], asc = th.dataset.asc !== '1'; th.dataset.asc = asc ? '1' : '0';
  const key = tr => { const td = tr.children[col]; if (!td || td.colSpan > 1) return [2, ''];
    const v = parseFloat(td.dataset.v ?? td.textContent); return isNaN(v) ? [1, td.textContent] : [0, v]; };
  [...tbody.rows].sort((a, b) => { const x = key(a), y = key(b); if (x[0] !== y[0]) return x[0] - y[0];
    return (x[1] > y[1] ? 1 : x[1] < y[1] ? -1 : 0) * (asc ? 1 : -1); }).forEach(r => tbody.appendChild(r));
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


def sensitivity_figure(top: Any) -> Any:
    """The most CAM-sensitive groups of `sensitivity.csv` as horizontal bars: CC gained by the group's float
    fallback (with its 95% interval) beside the CC lost when it alone is quantized."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(top) + 1.2), dpi=DPI)
    labels = [f"{g} ({k})" for g, k in zip(top["group"], top["kind"])]
    err = np.abs(np.vstack([top["delta_cc"] - top["delta_cc_ci_lo"], top["delta_cc_ci_hi"] - top["delta_cc"]])) if "delta_cc_ci_lo" in top else None
    ax.barh(range(len(top)), top["delta_cc"], xerr=err, color=["#2b7" if v > 0 else "#c55" for v in top["delta_cc"]], label="float fallback: CC gain (95% interval)")
    ax.barh(range(len(top)), top["only_delta_cc"], color="#88a", alpha=0.6, label="alone quantized: CC loss")
    ax.set_yticks(range(len(top)), labels, fontsize=7)
    ax.invert_yaxis()
    plain_linear_axis(ax.xaxis)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("change of the CAM's CC vs the fp32 CAM (host simulation)")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def sensitivity_section(run_dir: Path, manifest: dict[str, Any]) -> str:
    """The explanation-sensitivity ranking (`sensitivity.csv`) as a bar chart of the most CAM-sensitive
    groups, and the greedy plan's steps; empty when the run had no analysis. Every value escaped."""
    from edgecam.bench import outputs as files

    ranking, steps = files.read_table(run_dir, files.SENSITIVITY), files.read_table(run_dir, files.SENSITIVITY_PLAN)
    if ranking.empty:
        return ""
    top = ranking.sort_values("rank").head(SENSITIVITY_BARS)
    chart = _png(sensitivity_figure(top))
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
            f'<img class="plot" alt="sensitivity ranking" src="{chart}"><h3>Mixed-precision plan (target CC {html.escape(str(entry.get("cc_target", "")))})</h3>'
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


def run_decision(manifest: dict[str, Any], bench: Any, results: Any) -> Decision:
    """`decide` with the run's own settings: `explain.reference`, `explain.cc_floor` (default 0.9) and the
    bootstrap resamples and seed of its summary (a setting missing or not a number: the default)."""
    explain = (manifest.get("config") or {}).get("explain") or {}
    explain = explain if isinstance(explain, dict) else {}
    floor = _float(explain.get("cc_floor"))
    reference = explain.get("reference") if isinstance(explain.get("reference"), str) else None
    n_boot = _float(explain.get("bootstrap"))
    seed = _float(explain.get("seed"))
    return decide(bench, results, reference, DEFAULT_CC_FLOOR if floor is None else floor,
                  n_boot=int(min(max(n_boot or 1000, 100), 10_000)), seed=int(seed or 0))


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
    decision = run_decision(manifest, bench, results)
    device = manifest.get("device", {})
    title = f"edgecam report: {manifest.get('config', {}).get('name', run_dir.name)}"
    body = f"""<h1>{html.escape(title)}</h1>
<p>Device <b>{html.escape(str(device.get('inventory', {}).get('name', device.get('hostname', 'local'))))}</b>
({html.escape(str(device.get('arch', '')))}, {html.escape(str(device.get('cpu', '')))}, {html.escape(str(device.get('cores', '?')))} cores);
{_images_line(manifest)}; run took {_seconds(manifest.get('wall_s'))}.</p>
{_emulated_banner(device, "emulated")}
{reference_note(manifest)}
<h2 id="decide">Which variant to ship</h2>
{decision_section(decision, bench)}
<h2 id="tradeoff">What each millisecond costs in interpretability</h2>
{scatter_section(fidelity_points(results, bench, decision.reference), decision)}
<h2 id="grid">Where the model looks (CAM grid, as Figure 2 of 2403.09939)</h2>
{cam_grid(run_dir, models)}
<h2 id="table1">CAM fidelity (Table 1 layout of 2403.09939), per CAM method</h2>
<p>Mean ± std over images; best per row highlighted; hover a cell for its 95% bootstrap interval and the paired Wilcoxon p-value vs fp32; click a header to sort.</p>
{summary_by_method(table1, models)}
{faithfulness_section(results)}
{runtime_gap_section(run_dir, models)}
{saliency_qat_section(run_dir)}
{sensitivity_section(run_dir, manifest)}
<h2 id="accuracy-agreement">Accuracy and agreement with fp32 (test split)</h2>
{accuracy_table(bench)}
<h2 id="performance">Latency and memory{" (EMULATED device)" if device.get("emulated") else ""}</h2>
{_emulated_banner(device)}{latency_and_memory(latency, bench, decision)}
<h2 id="manifest">Manifest</h2>
<details><summary>versions, device facts, config</summary><pre>{html.escape(json.dumps(manifest, indent=1, default=str))}</pre></details>"""
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>{body}<script>{SCRIPT}</script></body></html>')
    out = run_dir / files.REPORT
    with atomic_path(out) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return out
