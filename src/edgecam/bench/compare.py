"""`edgecam compare RUN_A RUN_B`: the same variants in two runs (two devices, two runtime versions), as
deltas B - A with 95% bootstrap intervals: CAM fidelity per image (paired when both runs explained the
same images) and p50 latency from the raw samples."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

KEYS = ["model", "format", "runtime", "precision", "cam_method", "cam_mode"]
METRICS = ("cc_fp32", "sim_fp32", "kld_fp32", "cc_gt", "sim_gt", "insertion_auc", "deletion_auc")


def _load(run: Path) -> tuple[Any, Any, dict[str, Any]]:
    from edgecam.bench import outputs as files

    if not (run / files.MANIFEST).is_file():
        raise FileNotFoundError(f"{run}: not an edgecam run directory (no {files.MANIFEST})")
    return files.read_table(run, files.RESULTS), files.read_table(run, files.LATENCY), json.loads((run / files.MANIFEST).read_text())


def compare_runs(run_a: str | Path, run_b: str | Path, n_boot: int = 2000, seed: int = 0) -> Any:
    """One row per common variant x metric: mean in A and in B over the images both explained (paired, image
    by image) or over each run's own images when they share fewer than 2, delta B - A and its 95% interval."""
    import pandas as pd

    from edgecam.bench.stats import bootstrap_diff_ci

    res_a, lat_a, _ = _load(Path(run_a))
    res_b, lat_b, _ = _load(Path(run_b))
    rows: list[dict[str, Any]] = []
    if not res_a.empty and not res_b.empty:
        for key, ga in res_a.groupby(KEYS, sort=False):
            gb = res_b[np.logical_and.reduce([res_b[k] == v for k, v in zip(KEYS, key)])]
            if gb.empty:
                continue
            common = ga.merge(gb, on="image_id", suffixes=("_a", "_b"))
            paired = len(common) >= 2  # the images both runs explained, compared image by image
            for metric in (m for m in METRICS if m in ga and m in gb):
                a, b = (common[f"{metric}_a"], common[f"{metric}_b"]) if paired else (ga[metric], gb[metric])
                a, b = a.to_numpy(float), b.to_numpy(float)
                delta, lo, hi = bootstrap_diff_ci(a, b, paired, "mean", n_boot, seed)
                n = int((~(np.isnan(a) | np.isnan(b))).sum()) if paired else int(min(np.isfinite(a).sum(), np.isfinite(b).sum()))
                rows.append({**dict(zip(KEYS, key)), "metric": metric, "a": float(np.nanmean(a)) if n else float("nan"), "b": float(np.nanmean(b)) if n else float("nan"),
                             "delta": delta, "ci_lo": lo, "ci_hi": hi, "paired": paired, "images": n})
    if not lat_a.empty and not lat_b.empty:
        lkeys = ["model", "format", "runtime", "precision"]
        for key, ga in lat_a.groupby(lkeys, sort=False):
            gb = lat_b[np.logical_and.reduce([lat_b[k] == v for k, v in zip(lkeys, key)])]
            if gb.empty:
                continue
            delta, lo, hi = bootstrap_diff_ci(ga["latency_ms"].to_numpy(), gb["latency_ms"].to_numpy(), False, "median", n_boot, seed)
            rows.append({**dict(zip(lkeys, key)), "cam_method": "", "cam_mode": "", "metric": "p50_ms", "a": float(ga["latency_ms"].median()),
                         "b": float(gb["latency_ms"].median()), "delta": delta, "ci_lo": lo, "ci_hi": hi, "paired": False, "images": 0})
    return pd.DataFrame(rows)


def to_html(table: Any, run_a: str | Path, run_b: str | Path) -> str:
    """The comparison as one self-contained HTML page (a delta whose interval excludes 0 is bold)."""
    cols = [*KEYS, "metric", "a", "b", "delta", "95% CI", "paired"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for _, r in table.iterrows():
        sig = r["ci_lo"] > 0 or r["ci_hi"] < 0
        cells = [html.escape(str(r[k])) for k in (*KEYS, "metric")] + [f"{r['a']:.4g}", f"{r['b']:.4g}", f"<b>{r['delta']:+.4g}</b>" if sig else f"{r['delta']:+.4g}",
                                                                        f"[{r['ci_lo']:+.4g}, {r['ci_hi']:+.4g}]", str(bool(r["paired"]))]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    title = f"edgecam compare: {html.escape(str(run_b))} - {html.escape(str(run_a))}"
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>body{{font-family:system-ui,sans-serif}}'
            f"table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ddd;padding:3px 6px}}</style></head><body><h1>{title}</h1>"
            f"<p>Deltas B - A with 95% bootstrap intervals; bold: the interval excludes 0.</p><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></body></html>")
