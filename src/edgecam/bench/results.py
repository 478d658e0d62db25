"""Results schema: per-image rows, per-variant performance and the Table-1 summary (arXiv 2403.09939).

results.parquet columns (one row per image x model x runtime x precision x CAM method x CAM mode):
model, format, runtime, precision, precision_effective, device, cam_method, cam_mode (mirror | surrogate |
sim), image_id, label, pred, top1_correct, agrees_fp32,
{sim,cc,kld,rmse,emd}_fp32 (vs the same method's CAM of the fp32 artifact on the same runtime and mode),
{sim,cc,kld,nss}_gt (vs the ground-truth digit mask), {sim,cc,kld}_sal (vs the visual-saliency map of
`saliency_provider`), wsol_iou, pointing_energy, deletion_auc, insertion_auc, act_{entropy,std,hoyer,gini}
(the device's features), cc_host_ref (vs the host PyTorch reference CAM), cam_constant, cc_fp32_nan,
cc_gt_nan, artifact_sha256.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from edgecam.bench.timing import latency_stats
from edgecam.explain.metrics import compare

if TYPE_CHECKING:
    import pandas as pd

    from edgecam.bench.sweep import Variant

# comparison suffix -> (label, metrics measured against it); metric -> (label, higher is better)
COMPARISONS = {"gt": "v. GT", "sal": "v. saliency", "fp32": "v. fp32"}
COMPARISON_METRICS = {"gt": ("sim", "cc", "kld", "nss"), "sal": ("sim", "cc", "kld"), "fp32": ("sim", "cc", "kld", "rmse", "emd")}
METRICS = {
    "sim": "SIM (higher is better)", "cc": "CC (higher is better)", "kld": "KLD (lower is better)",
    "nss": "NSS (higher is better)", "rmse": "RMSE (lower is better)", "emd": "EMD (lower is better)",
    "deletion_auc": "Deletion AUC (lower is better)", "insertion_auc": "Insertion AUC (higher is better)",
    "wsol_iou": "WSOL best IoU (higher is better)", "pointing_energy": "Energy pointing game (higher is better)",
    "act_entropy": "Activation entropy, bits", "act_std": "Activation std", "act_hoyer": "Activation sparsity (Hoyer)",
    "act_gini": "Activation sparsity (Gini)",
}
HIGHER_IS_BETTER = {"sim": True, "cc": True, "kld": False, "nss": True, "rmse": False, "emd": False, "deletion_auc": False,
                    "insertion_auc": True, "wsol_iou": True, "pointing_energy": True}
PER_IMAGE = ("deletion_auc", "insertion_auc", "wsol_iou", "pointing_energy", "act_entropy", "act_std", "act_hoyer", "act_gini")
PRECISION_ORDER = ("fp32", "int16", "int8")


def gap_rows(v: "Variant", ref: "Variant", method: str, cams: np.ndarray, cams_ref: np.ndarray, ids: Sequence[str], pred: np.ndarray, pred_ref: np.ndarray) -> list[dict[str, Any]]:
    """The runtime gap, per image: `v`'s CAM vs `ref`'s CAM (same model and precision, other runtime/format)."""
    rows = []
    for i in range(len(cams)):
        m = compare(cams[i], cams_ref[i])
        rows.append({
            "model": v.model, "precision": v.precision, "cam_method": method, "pair": f"{v.format}/{v.runtime} v. {ref.format}/{ref.runtime}",
            "image_id": ids[i], "agrees": bool(pred[i] == pred_ref[i]), "sim": m["sim"], "cc": m["cc"], "kld": m["kld"],
        })
    return rows


def _stats(vals: np.ndarray, seed: int, n_boot: int) -> dict[str, float]:
    """Mean, sample std, 95% bootstrap interval of the mean over the finite values; NaNs counted apart."""
    from edgecam.bench.stats import bootstrap_ci

    finite = vals[~np.isnan(vals)]
    lo, hi = bootstrap_ci(finite, n_boot=n_boot, seed=seed) if finite.size > 1 else (float("nan"), float("nan"))
    return {
        "mean": float(finite.mean()) if finite.size else float("nan"),
        "std": float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),
        "ci_lo": float(lo), "ci_hi": float(hi), "nan": int(np.isnan(vals).sum()),
    }


def _put(row: dict[str, Any], model: str, stats: dict[str, float]) -> None:
    for k, val in stats.items():
        row[f"{model}_{k}"] = val


def summarise_gap(gap: "pd.DataFrame", models: Sequence[str], n_boot: int = 2000, seed: int = 0) -> "pd.DataFrame":
    """Runtime gap in the Table 1 layout: rows = CAM method x pair x precision x metric, columns = models."""
    import pandas as pd

    if gap.empty:
        return pd.DataFrame()
    out: list[dict[str, Any]] = []
    for (method, pair, precision), grp in gap.groupby(["cam_method", "pair", "precision"], sort=False):
        for metric in ("sim", "cc", "kld"):
            row: dict[str, Any] = {"cam_method": method, "comparison": f"{precision}: {pair}", "metric": METRICS[metric]}
            for model in models:
                _put(row, model, _stats(grp[grp["model"] == model][metric].to_numpy(dtype=float), seed, n_boot))
            out.append(row)
    return pd.DataFrame(out)


def summarise(results: "pd.DataFrame", models: Sequence[str], n_boot: int = 2000, seed: int = 0) -> "pd.DataFrame":
    """Table 1 layout: rows = format x runtime x CAM method x mode x comparison ("int8 v. GT") x metric,
    columns per model: mean, std (Table 1 of 2403.09939), a 95% bootstrap CI, NaNs left out (`_nan`),
    degenerate (constant) CAMs (`_constant`) and, for a quantized precision, the paired Wilcoxon p-value
    of the same per-image score against fp32's on the same images (`_p_vs_fp32`; not for "v. fp32",
    where fp32 is the reference itself)."""
    import pandas as pd

    from edgecam.bench.stats import paired_wilcoxon

    if results.empty:
        return pd.DataFrame()
    if "cam_mode" not in results:
        results = results.assign(cam_mode="mirror")
    out: list[dict[str, Any]] = []
    precisions = [p for p in PRECISION_ORDER if p in set(results["precision"])]
    blocks = [(comp, f"{comp}", [f"{m}_{comp}" for m in metrics]) for comp, metrics in COMPARISON_METRICS.items()] + [("", "", list(PER_IMAGE))]
    for (fmt, runtime, method, mode), grp in results.groupby(["format", "runtime", "cam_method", "cam_mode"], sort=False):
        for comp, _, columns in blocks:
            for precision in precisions:
                if comp == "fp32" and precision == "fp32":
                    continue
                for col in columns:
                    if col not in grp:
                        continue
                    metric = col[: -len(comp) - 1] if comp else col
                    label = f"{precision} {COMPARISONS[comp]}" if comp else precision
                    row: dict[str, Any] = {"format": fmt, "runtime": runtime, "cam_method": method, "cam_mode": mode, "comparison": label, "metric": METRICS[metric]}
                    for model in models:
                        sub = grp[(grp["model"] == model) & (grp["precision"] == precision)]
                        _put(row, model, _stats(sub[col].to_numpy(dtype=float), seed, n_boot))
                        row[f"{model}_constant"] = int(sub["cam_constant"].sum()) if "cam_constant" in sub else 0
                        p = float("nan")
                        if precision != "fp32" and comp != "fp32":
                            base = grp[(grp["model"] == model) & (grp["precision"] == "fp32")].set_index("image_id")[col]
                            paired = sub.set_index("image_id")[col].align(base, join="inner")
                            p = paired_wilcoxon(paired[0].to_numpy(dtype=float), paired[1].to_numpy(dtype=float))
                        row[f"{model}_p_vs_fp32"] = p
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
