"""`edgecam compare RUN_A RUN_B`: the same variants in two runs (two devices, two runtime versions), as
deltas B - A with 95% bootstrap intervals: CAM fidelity per image (paired when both runs explained the
same images) and p50 latency from the raw samples.

Images are paired by id, which names the same picture only on the same data: runs whose manifests carry
different data fingerprints are refused (`DifferentDataError`, naming both fingerprints and the data
settings that differ) unless the caller allows it, and then nothing is paired and no device gap is made.
Every run-directory file is read through `outputs`' readers: a damaged one is a `DamagedFileError`."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from edgecam.bench.report import csp_hash
from edgecam.bench.store import flat_settings
from edgecam.errors import EdgecamError

KEYS = ["model", "format", "runtime", "precision", "cam_method", "cam_mode"]
COMPARED_COLUMNS = ("cc_fp32", "sim_fp32", "kld_fp32", "cc_gt", "sim_gt", "insertion_auc", "deletion_auc")


LATENCY_KEYS = ["model", "format", "runtime", "precision"]


class DifferentDataError(EdgecamError):
    """The two runs were made on different data (their manifests' data fingerprints differ): image ids name
    different pictures, so nothing can be paired image by image."""


def _manifest(run: Path) -> dict[str, Any]:
    from edgecam.bench import outputs as files

    return files.read_manifest(run)


def _load(run: Path) -> tuple[Any, Any, dict[str, Any]]:
    from edgecam.bench import outputs as files

    manifest = files.read_manifest(run)  # first: a folder without one is no run directory
    return files.read_table(run, files.RESULTS, [*KEYS, "image_id"]), files.read_table(run, files.LATENCY, [*LATENCY_KEYS, "latency_ms"]), manifest


def data_difference(run_a: str | Path, run_b: str | Path) -> str | None:
    """None when the two runs were made on the same data (equal data fingerprints in their manifests, or a
    manifest without one: an older run, which cannot be checked); else what differs, for a message: both
    fingerprints and the data settings (`data.seed`, `data.source`, ...) whose values differ."""
    ma, mb = _manifest(Path(run_a)), _manifest(Path(run_b))
    fa, fb = ma.get("data_fingerprint"), mb.get("data_fingerprint")
    if not fa or not fb or fa == fb:
        return None
    sa = {**{f"data.{k}": v for k, v in flat_settings(ma.get("config", {}).get("data", {})).items()}, **{f"source.{k}": v for k, v in flat_settings(ma.get("data", {})).items()}}
    sb = {**{f"data.{k}": v for k, v in flat_settings(mb.get("config", {}).get("data", {})).items()}, **{f"source.{k}": v for k, v in flat_settings(mb.get("data", {})).items()}}
    differ = [f"{k} {sa.get(k, '(unset)')} vs {sb.get(k, '(unset)')}" for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)]
    what = "; ".join(differ[:6]) + (f"; ... {len(differ) - 6} more" if len(differ) > 6 else "") if differ else "the data's files or generator changed (same settings)"
    return f"data fingerprint {fa} in {run_a} but {fb} in {run_b} (differs in: {what})"


def check_same_data(run_a: str | Path, run_b: str | Path, allow_different_data: bool = False) -> str | None:
    """Refuse (DifferentDataError) two runs on different data; with `allow_different_data`, return what
    differs instead (None: the same data) so the caller labels its output."""
    diff = data_difference(run_a, run_b)
    if diff and not allow_different_data:
        raise DifferentDataError(f"{run_a} and {run_b} were run on different data: {diff}. Image ids name different pictures, so "
                                 "nothing can be compared image by image; rerun one of them on the other's data (the same [data] settings "
                                 "and files), or pass --allow-different-data to compare only unpaired means, labelled as such")
    return diff


def compare_runs(run_a: str | Path, run_b: str | Path, n_boot: int = 2000, seed: int = 0, allow_different_data: bool = False) -> Any:
    """One row per common variant x metric: mean in A and in B over the images both explained (paired, image
    by image) or over each run's own images when they share fewer than 2, delta B - A and its 95% interval.
    Runs on different data are refused (`check_same_data`); with `allow_different_data` they are compared
    unpaired, and the table's `data` column says "DIFFERENT" on every row."""
    import pandas as pd

    from edgecam.bench.stats import bootstrap_diff_ci

    different = check_same_data(run_a, run_b, allow_different_data) is not None
    res_a, lat_a, _ = _load(Path(run_a))
    res_b, lat_b, _ = _load(Path(run_b))
    rows: list[dict[str, Any]] = []
    if not res_a.empty and not res_b.empty:
        for key, ga in res_a.groupby(KEYS, sort=False):
            gb = res_b[np.logical_and.reduce([res_b[k] == v for k, v in zip(KEYS, key)])]
            if gb.empty:
                continue
            common = ga.merge(gb, on="image_id", suffixes=("_a", "_b"))
            paired = len(common) >= 2 and not different  # the images both runs explained, compared image by image (ids name the same pictures only on the same data)
            for metric in (m for m in COMPARED_COLUMNS if m in ga and m in gb):
                a, b = (common[f"{metric}_a"], common[f"{metric}_b"]) if paired else (ga[metric], gb[metric])
                a, b = a.to_numpy(float), b.to_numpy(float)
                delta, lo, hi = bootstrap_diff_ci(a, b, paired, "mean", n_boot, seed)
                n = int((~(np.isnan(a) | np.isnan(b))).sum()) if paired else int(min(np.isfinite(a).sum(), np.isfinite(b).sum()))
                rows.append({**dict(zip(KEYS, key)), "metric": metric, "a": float(np.nanmean(a)) if n else float("nan"), "b": float(np.nanmean(b)) if n else float("nan"),
                             "delta": delta, "ci_lo": lo, "ci_hi": hi, "paired": paired, "images": n})
    if not lat_a.empty and not lat_b.empty:
        lkeys = LATENCY_KEYS
        for key, ga in lat_a.groupby(lkeys, sort=False):
            gb = lat_b[np.logical_and.reduce([lat_b[k] == v for k, v in zip(lkeys, key)])]
            if gb.empty:
                continue
            delta, lo, hi = bootstrap_diff_ci(ga["latency_ms"].to_numpy(), gb["latency_ms"].to_numpy(), False, "median", n_boot, seed)
            rows.append({**dict(zip(lkeys, key)), "cam_method": "", "cam_mode": "", "metric": "p50_ms", "a": float(ga["latency_ms"].median()),
                         "b": float(gb["latency_ms"].median()), "delta": delta, "ci_lo": lo, "ci_hi": hi, "paired": False, "images": 0})
    table = pd.DataFrame(rows)
    if not table.empty:
        table["data"] = "DIFFERENT" if different else "same"
    return table


GAP_COLUMNS = ["model", "format", "runtime", "precision", "cam_method", "cam_mode", "same_artifact", "images", "top1_agreement", "max_abs_logit_diff",
               "median_abs_logit_diff", "sim", "cc", "kld"]


def device_gap(run_a: str | Path, run_b: str | Path, allow_different_data: bool = False) -> Any:
    """The device gap: the same variants on two devices (two runs), image by image over the images both kept
    (`explain.keep_outputs`): top-1 agreement, max and median over images of max |logit A - logit B|, and
    mean SIM / CC / KLD between the two devices' CAMs (`explain.metrics.compare`, at the kept resolution).
    One row per variant x CAM method x mode; `same_artifact`: both runs ran a file of the same SHA-256.
    Runs on different data are refused (`check_same_data`); with `allow_different_data`, no row (image by
    image comparisons of different pictures mean nothing)."""
    import pandas as pd

    from edgecam.bench import outputs as files
    from edgecam.explain.metrics import compare

    if check_same_data(run_a, run_b, allow_different_data) is not None:
        return pd.DataFrame(columns=GAP_COLUMNS)
    kept_a, kept_b = files.read_kept(Path(run_a)), files.read_kept(Path(run_b))
    var_a, var_b = (_manifest(Path(r)).get("variants", {}) for r in (run_a, run_b))
    common = set(kept_a) & set(kept_b)
    rows: list[dict[str, Any]] = []
    for name in sorted(n for n in common if n.startswith("logits|")):
        model, fmt, precision, runtime = name.split("|")[1:]
        ids = [i for i in kept_a[name] if i in kept_b[name]]
        if not ids:
            continue
        la, lb = (np.stack([k[name][i] for i in ids]).astype(np.float64) for k in (kept_a, kept_b))
        if la.shape != lb.shape:
            raise EdgecamError(f"{model} {fmt} {precision} {runtime}: logits of shape {la.shape[1:]} in {run_a} but {lb.shape[1:]} in {run_b}: not the same model")
        diff = np.abs(la - lb).max(axis=1)
        vkey = f"{model}-{fmt}-{precision}-{runtime}"
        sha = [v.get(vkey, {}).get("sha256") for v in (var_a, var_b)]
        base = {"model": model, "format": fmt, "runtime": runtime, "precision": precision, "same_artifact": bool(sha[0]) and sha[0] == sha[1], "images": len(ids),
                "top1_agreement": float((la.argmax(1) == lb.argmax(1)).mean()), "max_abs_logit_diff": float(diff.max()), "median_abs_logit_diff": float(np.median(diff))}
        prefix = f"cam|{model}|{fmt}|{precision}|{runtime}|"
        cam_names = sorted(n for n in common if n.startswith(prefix))
        for cname in cam_names:
            method, mode = cname[len(prefix):].split("|")
            m = [compare(kept_a[cname][i], kept_b[cname][i]) for i in ids if i in kept_a[cname] and i in kept_b[cname]
                 and kept_a[cname][i].shape == kept_b[cname][i].shape]  # CAMs kept at another keep_cam_size are not compared
            rows.append({**base, "cam_method": method, "cam_mode": mode, **{k: float(np.nanmean([r[k] for r in m])) if m else float("nan") for k in ("sim", "cc", "kld")}})
        if not cam_names:
            rows.append({**base, "cam_method": "", "cam_mode": "", "sim": float("nan"), "cc": float("nan"), "kld": float("nan")})
    return pd.DataFrame(rows, columns=GAP_COLUMNS)


STYLE = "body{font-family:system-ui,sans-serif}table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;padding:3px 6px}"
#: the page has no script at all; its one style block is allowed by hash
CSP = f"default-src 'none'; style-src {csp_hash(STYLE)}; base-uri 'none'; form-action 'none'"


def device_label(run: str | Path) -> str:
    """"NAME (arch, emulated)" of a run's device, from its manifest."""
    dev = _manifest(Path(run)).get("device", {})
    name = dev.get("inventory", {}).get("name", "local")
    return f"{name} ({dev.get('arch', '?')}{', emulated' if dev.get('emulated') else ''})"


def html_table(cols: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join('<tr>' + ''.join(f'<td>{c}</td>' for c in r) + '</tr>' for r in rows)}</tbody></table>"


def gap_section(gap: Any, lead: tuple[str, ...] = ()) -> str:
    """The device gap as an HTML section (`lead`: columns shown first, e.g. the fleet's device pair)."""
    cols = [*lead, *GAP_COLUMNS]
    text = len(lead) + 8  # identity columns and counts print as text, the metrics with 4 significant digits
    rows = [[html.escape(str(r[c])) for c in cols[:text]] + [f"{r[c]:.4g}" for c in cols[text:]] for _, r in gap.iterrows()]
    return ('<h2 id="device-gap">Device gap: the same artifact on the two devices, image by image</h2><p>Top-1 agreement, max and median over '
            "images of max |logit A - logit B|, and mean SIM / CC / KLD between the two devices' CAMs.</p>" + html_table(cols, rows))


DIFFERENT_DATA_LABEL = ("DIFFERENT DATA: the two runs were made on different data, so image ids name different pictures; nothing is "
                        "paired and there is no device gap: these deltas compare means over different images")


def to_html(table: Any, run_a: str | Path, run_b: str | Path, gap: Any = None) -> str:
    """The comparison as one self-contained HTML page (a delta whose interval excludes 0 is bold), with the
    device gap (`device_gap`) when both runs kept outputs, and a banner over everything when the runs were
    made on different data (`compare_runs(..., allow_different_data=True)`)."""
    different = "data" in getattr(table, "columns", ()) and bool((table["data"] == "DIFFERENT").any())
    banner = f"<h2>{html.escape(DIFFERENT_DATA_LABEL)}</h2><p>{html.escape(data_difference(run_a, run_b) or '')}</p>" if different else ""
    body = []
    for _, r in table.iterrows():
        sig = r["ci_lo"] > 0 or r["ci_hi"] < 0
        body.append([html.escape(str(r[k])) for k in (*KEYS, "metric")] + [f"{r['a']:.4g}", f"{r['b']:.4g}", f"<b>{r['delta']:+.4g}</b>" if sig else f"{r['delta']:+.4g}",
                                                                            f"[{r['ci_lo']:+.4g}, {r['ci_hi']:+.4g}]", str(bool(r["paired"]))])
    title = f"edgecam compare: {html.escape(str(run_b))} - {html.escape(str(run_a))}"
    devices = f"<p>A: {html.escape(device_label(run_a))}; B: {html.escape(device_label(run_b))}.</p>"
    gap_html = gap_section(gap) if gap is not None and not gap.empty else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="{CSP}"><title>{title}</title><style>{STYLE}</style>'
            f"</head><body><h1>{title}</h1>{banner}{devices}"
            f"<p>Deltas B - A with 95% bootstrap intervals; bold: the interval excludes 0.</p>{html_table([*KEYS, 'metric', 'a', 'b', 'delta', '95% CI', 'paired'], body)}"
            f"{gap_html}</body></html>")
