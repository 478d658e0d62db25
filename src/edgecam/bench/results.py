"""Results schema: per-image rows, per-variant performance and the Table-1 summary (arXiv 2403.09939).

results.parquet columns (one row per image x model x runtime x precision x CAM method):
model, format, runtime, precision, precision_effective, device, cam_method, cam_mode, image_id, label, pred,
top1_correct, agrees_fp32, {sim,cc,kld}_fp32 (vs the same method's CAM of the fp32 artifact on the same
runtime), {sim,cc,kld}_gt (vs the ground-truth digit mask), cc_host_ref (vs the host PyTorch reference
Grad-CAM++), cam_constant, cc_fp32_nan, cc_gt_nan, artifact_sha256.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from edgecam.bench.timing import latency_stats
from edgecam.explain.metrics import cc, compare

if TYPE_CHECKING:
    import pandas as pd

    from edgecam.bench.sweep import Variant

COMPARISONS = {"gt": "v. GT", "fp32": "v. fp32"}
METRICS = {"sim": "SIM (higher is better)", "cc": "CC (higher is better)", "kld": "KLD (lower is better)"}
HIGHER_IS_BETTER = {"sim": True, "cc": True, "kld": False}


def build_rows(
    v: "Variant", method: str, mode: str, cams: np.ndarray, cams_fp32: np.ndarray, reference: np.ndarray,
    masks: np.ndarray, ids: Sequence[str], labels: np.ndarray, pred: np.ndarray, pred_fp32: np.ndarray, device: str,
) -> "pd.DataFrame":
    """Compare every CAM with the fp32 CAM and the ground truth; one row per image."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for i in range(len(cams)):
        vs_fp32 = compare(cams[i], cams_fp32[i])
        vs_gt = compare(cams[i], masks[i])
        rows.append({
            "model": v.model, "format": v.format, "runtime": v.runtime, "precision": v.precision,
            "precision_effective": v.manifest.get("precision_effective", v.precision), "device": device,
            "cam_method": method, "cam_mode": mode, "image_id": ids[i], "label": int(labels[i]), "pred": int(pred[i]),
            "top1_correct": bool(pred[i] == labels[i]), "agrees_fp32": bool(pred[i] == pred_fp32[i]),
            "sim_fp32": vs_fp32["sim"], "cc_fp32": vs_fp32["cc"], "kld_fp32": vs_fp32["kld"],
            "sim_gt": vs_gt["sim"], "cc_gt": vs_gt["cc"], "kld_gt": vs_gt["kld"],
            "cc_host_ref": cc(cams[i], reference[i]),
            "cam_constant": bool(vs_gt["pred_constant"]), "cc_fp32_nan": bool(np.isnan(vs_fp32["cc"])), "cc_gt_nan": bool(np.isnan(vs_gt["cc"])),
            "artifact_sha256": v.manifest.get("sha256"),
        })
    return pd.DataFrame(rows)


def gap_rows(v: "Variant", ref: "Variant", method: str, cams: np.ndarray, cams_ref: np.ndarray, ids: Sequence[str], pred: np.ndarray, pred_ref: np.ndarray) -> "pd.DataFrame":
    """The runtime gap, per image: `v`'s CAM vs `ref`'s CAM (same model and precision, other runtime/format)."""
    import pandas as pd

    rows = []
    for i in range(len(cams)):
        m = compare(cams[i], cams_ref[i])
        rows.append({
            "model": v.model, "precision": v.precision, "cam_method": method, "pair": f"{v.format}/{v.runtime} v. {ref.format}/{ref.runtime}",
            "image_id": ids[i], "agrees": bool(pred[i] == pred_ref[i]), "sim": m["sim"], "cc": m["cc"], "kld": m["kld"],
        })
    return pd.DataFrame(rows)


def _mean_std_nan(vals: np.ndarray) -> tuple[float, float, int]:
    """Mean and sample std over the finite values, and how many were NaN (left out)."""
    finite = vals[~np.isnan(vals)]
    mean = float(finite.mean()) if finite.size else float("nan")
    std = float(finite.std(ddof=1)) if finite.size > 1 else float("nan")
    return mean, std, int(np.isnan(vals).sum())


def summarise_gap(gap: "pd.DataFrame", models: Sequence[str]) -> "pd.DataFrame":
    """Runtime gap in the Table 1 layout: rows = CAM method x pair x precision x metric, columns = models."""
    import pandas as pd

    if gap.empty:
        return pd.DataFrame()
    out: list[dict[str, Any]] = []
    for (method, pair, precision), grp in gap.groupby(["cam_method", "pair", "precision"], sort=False):
        for metric, metric_label in METRICS.items():
            row: dict[str, Any] = {"cam_method": method, "comparison": f"{precision}: {pair}", "metric": metric_label}
            for model in models:
                row[f"{model}_mean"], row[f"{model}_std"], row[f"{model}_nan"] = _mean_std_nan(grp[grp["model"] == model][metric].to_numpy(dtype=float))
            out.append(row)
    return pd.DataFrame(out)


def summarise(results: "pd.DataFrame", models: Sequence[str]) -> "pd.DataFrame":
    """Table 1 layout: rows = runtime x CAM method x comparison ("int8 v. fp32") x metric, columns = models
    (mean and std over images; NaNs, e.g. CC of constant maps, left out and counted in `<model>_nan`)."""
    import pandas as pd

    if results.empty:
        return pd.DataFrame()
    out: list[dict[str, Any]] = []
    precisions = [p for p in ("fp32", "int16", "int8") if p in set(results["precision"])]
    for (fmt, runtime, method), grp in results.groupby(["format", "runtime", "cam_method"], sort=False):
        for comp, comp_label in COMPARISONS.items():
            for precision in precisions:
                if comp == "fp32" and precision == "fp32":
                    continue
                for metric, metric_label in METRICS.items():
                    row: dict[str, Any] = {"format": fmt, "runtime": runtime, "cam_method": method, "comparison": f"{precision} {comp_label}", "metric": metric_label}
                    for model in models:
                        vals = grp[(grp["model"] == model) & (grp["precision"] == precision)][f"{metric}_{comp}"].to_numpy(dtype=float)
                        row[f"{model}_mean"], row[f"{model}_std"], row[f"{model}_nan"] = _mean_std_nan(vals)
                    out.append(row)
    return pd.DataFrame(out)


def variant_table(variants: Sequence["Variant"], labels: np.ndarray, device: str) -> "pd.DataFrame":
    """Per variant: accuracy on the whole test split, agreement with fp32, latency stats, memory, size."""
    import pandas as pd

    fp32_pred = {(v.model, v.format, v.runtime): v.outputs["logits"].argmax(1) for v in variants if v.precision == "fp32" and not v.error}
    rows = []
    for v in variants:
        row: dict[str, Any] = {"model": v.model, "format": v.format, "runtime": v.runtime, "precision": v.precision, "precision_effective": v.manifest.get("precision_effective"), "device": device, "size_bytes": v.manifest.get("size_bytes"), "ok": v.error is None, "error": v.error}
        if not v.error:
            pred = v.outputs["logits"].argmax(1)
            base = fp32_pred.get((v.model, v.format, v.runtime))
            row.update({
                "accuracy": float((pred == labels).mean()),
                "agrees_fp32": float((pred == base).mean()) if base is not None else float("nan"),
                "init_ms": v.result["init_s"] * 1e3, "first_ms": v.result["first_s"] * 1e3,
                **latency_stats(v.result["samples_s"]), "batch_size": v.result["batch_size"],
                "peak_rss_mb": v.memory.get("peak_rss_bytes", float("nan")) / 2**20 if v.memory else float("nan"),
                "rss_model_mb": (v.memory["rss_after_run_bytes"] - v.memory["rss_before_load_bytes"]) / 2**20 if v.memory else float("nan"),
            })
        rows.append(row)
    return pd.DataFrame(rows)
