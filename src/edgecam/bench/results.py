"""Results schema: per-image rows (built here, next to their column list), per-variant performance and the
Table-1 summary (arXiv 2403.09939). The CLI and the report only render what these functions return.

results.parquet: one row per image x model x runtime x precision x CAM method x CAM mode, columns `COLUMNS`.
"v. GT" columns (`*_gt`, `wsol_iou`, `pointing_energy`) are NaN for an image without a ground-truth box or
mask (`has_gt` False): an image folder without box files has no "v. GT" numbers at all, never a score
against an empty mask. A row whose device outputs were NaN / Inf (`output_finite` False) has no `pred`,
`top1_correct` or `agrees_fp32` (missing) and NaN metrics (`FROM_OUTPUTS`): never a class or a score read off
garbage; bench.csv counts such images per variant (`nonfinite_outputs`) and leaves them out of accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Collection, Mapping, Sequence

import numpy as np

from edgecam.bench.timing import latency_stats

if TYPE_CHECKING:
    import pandas as pd

    from edgecam.bench.variant import Variant

#: results.parquet, in order: identity; predictions; vs the fp32 CAM of the same format, runtime and mode;
#: vs the ground-truth mask (NaN without ground truth); vs the visual-saliency map; localisation (Choe et
#: al.'s 0.01 threshold grid); Deletion / Insertion through the device; the device's activation statistics;
#: vs the host PyTorch reference CAM; flags.
COLUMNS: tuple[str, ...] = (
    "model", "format", "runtime", "precision", "precision_effective", "device", "cam_method", "cam_mode", "image_id", "label", "pred",
    "top1_correct", "agrees_fp32",
    "sim_fp32", "cc_fp32", "kld_fp32", "rmse_fp32", "emd_fp32",
    "has_gt", "sim_gt", "cc_gt", "kld_gt", "nss_gt",
    "sim_sal", "cc_sal", "kld_sal", "saliency_provider",
    "wsol_iou", "pointing_energy",
    "deletion_auc", "insertion_auc",
    "act_entropy", "act_std", "act_hoyer", "act_gini",
    "cam_channels", "cc_host_ref", "cam_constant", "cc_fp32_nan", "cc_gt_nan", "input_finite", "output_finite", "artifact_sha256",
)

# comparison suffix -> (label, metrics measured against it); metric -> (label, higher is better)
COMPARISONS = {"gt": "v. GT", "sal": "v. saliency", "fp32": "v. fp32"}
COMPARISON_METRICS = {"gt": ("sim", "cc", "kld", "nss"), "sal": ("sim", "cc", "kld"), "fp32": ("sim", "cc", "kld", "rmse", "emd")}
METRIC_LABELS = {
    "sim": "SIM (higher is better)", "cc": "CC (higher is better)", "kld": "KLD (lower is better)",
    "nss": "NSS (higher is better)", "rmse": "RMSE (lower is better)", "emd": "EMD (lower is better)",
    "deletion_auc": "Deletion AUC (lower is better)", "insertion_auc": "Insertion AUC (higher is better)",
    "wsol_iou": "WSOL best IoU (higher is better)", "pointing_energy": "Energy pointing game (higher is better)",
    "act_entropy": "Activation entropy, bits", "act_std": "Activation std", "act_hoyer": "Activation sparsity (Hoyer)",
    "act_gini": "Activation sparsity (Gini)",
}
HIGHER_IS_BETTER = {"sim": True, "cc": True, "kld": False, "nss": True, "rmse": False, "emd": False, "deletion_auc": False,
                    "insertion_auc": True, "wsol_iou": True, "pointing_energy": True}
#: what a row computes from the variant's own outputs on the device (its CAM, activations, faithfulness): NaN in a row
#: whose outputs were not finite (`output_finite` False), never a number computed from NaN / Inf
FROM_OUTPUTS = ("sim_fp32", "cc_fp32", "kld_fp32", "rmse_fp32", "emd_fp32", "sim_gt", "cc_gt", "kld_gt", "nss_gt", "sim_sal", "cc_sal", "kld_sal",
                "wsol_iou", "pointing_energy", "deletion_auc", "insertion_auc", "act_entropy", "act_std", "act_hoyer", "act_gini", "cc_host_ref")
#: what a row compares with the fp32 reference's outputs: NaN too where the reference's outputs were not finite
FROM_REFERENCE = ("sim_fp32", "cc_fp32", "kld_fp32", "rmse_fp32", "emd_fp32")
PER_IMAGE = ("deletion_auc", "insertion_auc", "wsol_iou", "pointing_energy", "act_entropy", "act_std", "act_hoyer", "act_gini")
PRECISION_ORDER = ("fp32", "int16", "int8", "mixed")  # mixed: a sensitivity plan (`bench/studies/sensitivity.py`)
GT_COLUMNS = ("wsol_iou", "pointing_energy")  # per-image columns that need ground truth, besides the *_gt ones


@dataclass(frozen=True)
class CamMaps:
    """One CAM job of one variant on a shard: the method and mode, its maps and fp32's (N, H, W), per image the
    best IoU over the WSOL thresholds (NaN without ground truth) and the device-side columns (`extra`:
    Deletion / Insertion, activation statistics, input / output finiteness)."""

    method: str
    mode: str
    cams: np.ndarray
    cams_fp32: np.ndarray
    wsol_iou: np.ndarray
    extra: Sequence[dict[str, Any]]


@dataclass(frozen=True)
class ShardMaps:
    """What a variant's maps of a shard are compared with: the shard (a `TestShard`: ids, labels, masks,
    has_box), the host reference CAMs, the visual-saliency maps and their provider, and the top-1 of the variant
    and of its fp32 counterpart."""

    shard: Any
    reference: np.ndarray
    saliency: np.ndarray
    provider: str
    pred: np.ndarray
    pred_fp32: np.ndarray


def mask_nonfinite(row: dict[str, Any], own_finite: bool, ref_pred: int) -> dict[str, Any]:
    """`row` with what its outputs cannot give blanked: outputs that were not finite (`own_finite` False, or its
    `pred` is `NONFINITE`) leave `pred`, `top1_correct` and `agrees_fp32` missing (None) and `FROM_OUTPUTS` NaN; a
    reference with no prediction (`ref_pred` < 0: none, or not finite) leaves `agrees_fp32` missing, and
    `FROM_REFERENCE` NaN when its outputs were not finite. The NaN flags (`cc_fp32_nan`, `cc_gt_nan`) follow."""
    from edgecam.bench.variant import NONFINITE

    nan = float("nan")
    pred = row["pred"]
    if not own_finite or pred is None or pred == NONFINITE:
        row.update({"pred": None, "top1_correct": None, "agrees_fp32": None, **{k: nan for k in FROM_OUTPUTS}})
    if ref_pred < 0:
        row["agrees_fp32"] = None
    if ref_pred == NONFINITE:
        row.update({k: nan for k in FROM_REFERENCE})
    row["cc_fp32_nan"], row["cc_gt_nan"] = bool(np.isnan(row["cc_fp32"])), bool(np.isnan(row["cc_gt"]))
    return row


def image_rows(v: "Variant", maps: CamMaps, against: ShardMaps, device: str, emd_size: int) -> list[dict[str, Any]]:
    """`COLUMNS` for each image of the shard.

    Each map is prepared once (`PreparedMap`: float64, normalised, distribution, centred) and shared by every
    comparison of its image; the values are those of `compare`, `cc`, `nss`, `emd` and `energy_pointing_game`.
    A row whose outputs (or whose fp32 reference's) were not finite gets no numbers from them (`mask_nonfinite`)."""
    from edgecam.explain.localisation import energy_pointing_game
    from edgecam.explain.metrics import PreparedMap, cc_prepared, compare_prepared, emd_prepared, nss_prepared

    method, mode, cams, cams_fp32, wsol_iou, extra = maps.method, maps.mode, maps.cams, maps.cams_fp32, maps.wsol_iou, maps.extra
    shard, reference, saliency, provider, pred, pred_fp32 = against.shard, against.reference, against.saliency, against.provider, against.pred, against.pred_fp32
    rows = []
    is_fp32 = v.precision == "fp32"
    nan = float("nan")
    three = ("sim", "cc", "kld")
    same = cams_fp32 is cams  # an fp32 variant against itself
    for i in range(len(cams)):
        cam = PreparedMap(cams[i], "pred")
        cam_fp32 = cam if same else PreparedMap(cams_fp32[i], "ref")
        vs_fp32 = compare_prepared(cam, cam_fp32)
        vs_sal = compare_prepared(cam, PreparedMap(saliency[i], "ref"), three)
        has_gt = bool(shard.has_box[i])
        gt_mask = shard.masks[i] > 0.5
        vs_gt = compare_prepared(cam, PreparedMap(shard.masks[i], "ref"), three) if has_gt else {"sim": nan, "cc": nan, "kld": nan}
        row = {
            "model": v.model, "format": v.format, "runtime": v.runtime, "precision": v.precision, "precision_effective": v.precision_effective,
            "device": device, "cam_method": method, "cam_mode": mode, "image_id": shard.ids[i], "label": int(shard.labels[i]), "pred": int(pred[i]),
            "top1_correct": bool(pred[i] == shard.labels[i]), "agrees_fp32": bool(pred[i] == pred_fp32[i]),
            "sim_fp32": vs_fp32["sim"], "cc_fp32": vs_fp32["cc"], "kld_fp32": vs_fp32["kld"], "rmse_fp32": vs_fp32["rmse"],
            "emd_fp32": 0.0 if is_fp32 else (emd_prepared(cam, cam_fp32, emd_size) if emd_size else nan),
            "has_gt": has_gt, "sim_gt": vs_gt["sim"], "cc_gt": vs_gt["cc"], "kld_gt": vs_gt["kld"], "nss_gt": nss_prepared(cam, gt_mask) if has_gt else nan,
            "sim_sal": vs_sal["sim"], "cc_sal": vs_sal["cc"], "kld_sal": vs_sal["kld"], "saliency_provider": provider,
            "wsol_iou": float(wsol_iou[i]), "pointing_energy": energy_pointing_game(cam, gt_mask) if has_gt else nan,
            **extra[i],
            "cc_host_ref": cc_prepared(cam, PreparedMap(reference[i], "ref")),
            "cam_constant": bool(vs_fp32["pred_constant"]), "cc_fp32_nan": bool(np.isnan(vs_fp32["cc"])), "cc_gt_nan": bool(np.isnan(vs_gt["cc"])),
            "artifact_sha256": v.manifest.get("sha256"),
        }
        mask_nonfinite(row, bool(row.get("output_finite", True)), int(pred_fp32[i]))
        rows.append({k: row[k] for k in COLUMNS})  # the schema's order; a missing column is a KeyError here, not a silent gap
    return rows


def gap_rows(v: "Variant", ref: "Variant", method: str, cams: np.ndarray, cams_ref: np.ndarray, ids: Sequence[str], pred: np.ndarray, pred_ref: np.ndarray) -> list[dict[str, Any]]:
    """The runtime gap, per image: `v`'s CAM vs `ref`'s CAM (same model and precision, other runtime/format). An
    image either side has no finite outputs for (`pred` `NONFINITE`) gets NaN metrics and no `agrees`."""
    from edgecam.bench.variant import NONFINITE
    from edgecam.explain.metrics import PreparedMap, compare_prepared

    rows = []
    nan = float("nan")
    for i in range(len(cams)):
        if pred[i] == NONFINITE or pred_ref[i] == NONFINITE:
            m: dict[str, Any] = {"sim": nan, "cc": nan, "kld": nan}
            agrees: bool | None = None
        else:
            m = compare_prepared(PreparedMap(cams[i], "pred"), PreparedMap(cams_ref[i], "ref"), ("sim", "cc", "kld"))
            agrees = bool(pred[i] == pred_ref[i])
        rows.append({
            "model": v.model, "precision": v.precision, "cam_method": method, "pair": f"{v.format}/{v.runtime} v. {ref.format}/{ref.runtime}",
            "image_id": ids[i], "agrees": agrees, "sim": m["sim"], "cc": m["cc"], "kld": m["kld"],
        })
    return rows


def _stats(vals: np.ndarray, seed: int, n_boot: int, measured: np.ndarray | None = None) -> dict[str, float]:
    """Mean, sample std, 95% bootstrap interval of the mean over the finite values of the measured images;
    `nan`: the measured images whose value came out NaN (non-finite outputs, a degenerate map); `not_measured`:
    the images the metric was not computed for (`measured` False: past the faithfulness subset), apart."""
    from edgecam.bench.stats import bootstrap_ci

    vals = np.asarray(vals, dtype=float)
    measured = np.ones(len(vals), dtype=bool) if measured is None else np.asarray(measured, dtype=bool)
    nan = np.isnan(vals)
    finite = vals[measured & ~nan]
    lo, hi = bootstrap_ci(finite, n_boot=n_boot, seed=seed) if finite.size > 1 else (float("nan"), float("nan"))
    return {
        "mean": float(finite.mean()) if finite.size else float("nan"),
        "std": float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),
        "ci_lo": float(lo), "ci_hi": float(hi), "nan": int((nan & measured).sum()), "not_measured": int((~measured).sum()),
    }


#: per-image columns measured on a subset of the images only: Deletion / Insertion run through the device for
#: the first `explain.faithfulness_images` test images (none with `explain.faithfulness = false`)
SUBSET_COLUMNS = ("deletion_auc", "insertion_auc")


def faithfulness_subset(test_ids: Sequence[str], n_faith: int) -> dict[str, frozenset[str]]:
    """`summarise`'s `measured`: the image ids Deletion / Insertion were computed for (the first `n_faith` of
    the test split, as the explain stage picks them); the others are "not measured", not NaN."""
    ids = frozenset(str(i) for i in list(test_ids)[: max(0, int(n_faith))])
    return {col: ids for col in SUBSET_COLUMNS}


def _put(row: dict[str, Any], model: str, stats: dict[str, float]) -> None:
    for k, val in stats.items():
        row[f"{model}_{k}"] = val


def best_model(row: dict[str, Any], metric: str, models: Sequence[str]) -> str:
    """The models with the best mean in a summary row, comma-separated (ties all named; "" for one model, a
    descriptive statistic or no data): what the CLI and the report highlight, decided here once."""
    higher = HIGHER_IS_BETTER.get(metric)
    finite = {m: row.get(f"{m}_mean", float("nan")) for m in models}
    finite = {m: x for m, x in finite.items() if x == x}
    if higher is None or len(models) < 2 or not finite:
        return ""
    best = (max if higher else min)(finite.values())
    return ",".join(m for m, x in finite.items() if x == best)


def is_best(row: Any, model: str) -> bool:
    """Whether `model` is (one of) the best of a summary row (`best_model`'s comma-separated names)."""
    best = row.get("best", "")
    return isinstance(best, str) and model in best.split(",")


def _summary_row(keys: dict[str, Any], metric: str, models: Sequence[str], stats: dict[str, dict[str, float]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One summary row: its keys, metric key and label, per model `stats` (+ `extra` columns), the best model."""
    row: dict[str, Any] = {**keys, "metric": metric, "metric_label": METRIC_LABELS[metric]}
    for model in models:
        _put(row, model, stats[model])
    row.update(extra or {})
    row["best"] = best_model(row, metric, models)
    return row


def summarise_gap(gap: "pd.DataFrame", models: Sequence[str], n_boot: int = 2000, seed: int = 0) -> "pd.DataFrame":
    """Runtime gap in the Table 1 layout: rows = CAM method x pair x precision x metric, columns = models."""
    import pandas as pd

    if gap.empty:
        return pd.DataFrame()
    out: list[dict[str, Any]] = []
    for (method, pair, precision), grp in gap.groupby(["cam_method", "pair", "precision"], sort=False):
        for metric in ("sim", "cc", "kld"):
            stats = {model: _stats(grp[grp["model"] == model][metric].to_numpy(dtype=float), seed, n_boot) for model in models}
            out.append(_summary_row({"cam_method": method, "pair": pair, "precision": precision, "comparison": f"{precision}: {pair}"}, metric, models, stats))
    return pd.DataFrame(out)


def summarise(results: "pd.DataFrame", models: Sequence[str], n_boot: int = 2000, seed: int = 0,
              measured: "Mapping[str, Collection[str]] | None" = None) -> "pd.DataFrame":
    """Table 1 layout: rows = format x runtime x CAM method x mode x comparison ("int8 v. GT") x metric, with
    keys (`precision`, `reference` in gt | sal | fp32 | "", `metric`) beside the display labels (`comparison`,
    `metric_label`); columns per model: mean, std (Table 1 of 2403.09939), a 95% bootstrap CI, the values
    computed that came out NaN, left out (`_nan`), the images a subset metric was not computed for (`_not_measured`:
    `measured` maps such a column, Deletion / Insertion, to the image ids it was computed for, `faithfulness_subset`;
    a column it does not name counts every image as measured), degenerate (constant) CAMs (`_constant`) and, for a quantized precision, the paired Wilcoxon
    p-value of the same per-image score against fp32's on the same images (`_p_vs_fp32`; not for "v. fp32",
    where fp32 is the reference itself); `best` names the best model of the row. Rows about the ground truth
    ("v. GT", WSOL IoU, pointing game) are absent when no image of the group has ground truth."""
    import pandas as pd

    from edgecam.bench.stats import paired_wilcoxon

    if results.empty:
        return pd.DataFrame()
    if "cam_mode" not in results:
        results = results.assign(cam_mode="mirror")
    out: list[dict[str, Any]] = []
    precisions = [p for p in PRECISION_ORDER if p in set(results["precision"])]
    blocks = [(comp, [f"{m}_{comp}" for m in metrics]) for comp, metrics in COMPARISON_METRICS.items()] + [("", list(PER_IMAGE))]
    for (fmt, runtime, method, mode), grp in results.groupby(["format", "runtime", "cam_method", "cam_mode"], sort=False):
        has_gt = bool(grp["has_gt"].any()) if "has_gt" in grp else True
        for comp, columns in blocks:
            if comp == "gt" and not has_gt:
                continue
            for precision in precisions:
                if comp == "fp32" and precision == "fp32":
                    continue
                for col in columns:
                    if col not in grp or (col in GT_COLUMNS and not has_gt):
                        continue
                    metric = col[: -len(comp) - 1] if comp else col
                    label = f"{precision} {COMPARISONS[comp]}" if comp else precision
                    stats: dict[str, dict[str, float]] = {}
                    extra: dict[str, Any] = {}
                    for model in models:
                        sub = grp[(grp["model"] == model) & (grp["precision"] == precision)]
                        ids = (measured or {}).get(col)
                        stats[model] = _stats(sub[col].to_numpy(dtype=float), seed, n_boot, None if ids is None else sub["image_id"].astype(str).isin(ids).to_numpy())
                        extra[f"{model}_constant"] = int(sub["cam_constant"].sum()) if "cam_constant" in sub else 0
                        p = float("nan")
                        if precision != "fp32" and comp != "fp32":
                            base = grp[(grp["model"] == model) & (grp["precision"] == "fp32")].set_index("image_id")[col]
                            paired = sub.set_index("image_id")[col].align(base, join="inner")
                            p = paired_wilcoxon(paired[0].to_numpy(dtype=float), paired[1].to_numpy(dtype=float))
                        extra[f"{model}_p_vs_fp32"] = p
                    keys = {"format": fmt, "runtime": runtime, "cam_method": method, "cam_mode": mode, "precision": precision, "reference": comp, "comparison": label}
                    out.append(_summary_row(keys, metric, models, stats, extra))
    return pd.DataFrame(out)


def format_mean_std(mean: float, std: float) -> str:
    """"0.912 ± 0.031" for a summary cell; "n/a" for NaN; -0.000 shown as 0.000."""
    if mean != mean:
        return "n/a"
    mean = 0.0 if abs(mean) < 5e-4 else mean  # KLD of identical maps is -1e-16, not "-0.000"
    return f"{mean:.3f} ± {std:.3f}" if std == std else f"{mean:.3f}"


def format_rate(value: Any) -> str:
    """An accuracy or agreement for a table: 4 decimals, "n/a" when there is none (NaN: no finite prediction)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return f"{x:.4f}" if x == x else "n/a"


def nonfinite_count(row: Any) -> int:
    """A bench row's `nonfinite_outputs` as an int (0 where absent: a failed variant, a run before the column)."""
    try:
        x = float(row.get("nonfinite_outputs", 0))
    except (TypeError, ValueError):
        return 0
    return int(x) if x == x else 0


def backend_columns(result: dict[str, Any], runtime: str | None = None) -> dict[str, Any]:
    """The latency row's columns that one backend or board measures, present only where the device measured
    them: the runtime's own (`Runtime.backend_columns`: TensorRT's engines and trtexec phases; every registered
    runtime's for a result read without its variant) and the tegrastats summary of the timed loop (Jetson)."""
    from edgecam.devices.tegrastats import latency_columns as tegrastats_columns
    from edgecam.runtimes import RUNTIMES, runtime_class

    cols: dict[str, Any] = {}
    for name in [runtime] if runtime is not None else list(RUNTIMES):
        cols.update(runtime_class(name).backend_columns(result))
    cols.update(tegrastats_columns(result.get("tegrastats")))
    return cols


def variant_table(variants: Sequence["Variant"], labels: np.ndarray, device: str) -> "pd.DataFrame":
    """Per variant: accuracy on the test images it predicted with finite outputs (the whole split unless a shard
    failed or outputs were NaN / Inf; `images`), the images whose outputs were not finite (`nonfinite_outputs`:
    left out, never read as class 0), agreement with fp32 on the images both predicted finitely, latency stats,
    memory, size."""
    import pandas as pd

    from edgecam.bench.variant import NONFINITE

    fp32_pred = {v.key: v.preds for v in variants if v.precision == "fp32" and not v.error and v.preds is not None}
    rows = []
    for v in variants:
        row: dict[str, Any] = {"model": v.model, "format": v.format, "runtime": v.runtime, "precision": v.precision, "precision_effective": v.manifest.get("precision_effective"), "device": device, "size_bytes": v.manifest.get("size_bytes"), "ok": v.error is None, "error": v.error}
        if not v.error:
            pred = v.preds if v.preds is not None else np.zeros(0, dtype=np.int64)
            known = pred >= 0
            base = fp32_pred.get(v.fp32_key)
            both = known & (base[: len(pred)] >= 0) if base is not None and len(base) >= len(pred) else None
            row.update({
                "accuracy": float((pred[known] == labels[: len(pred)][known]).mean()) if known.any() else float("nan"),
                "images": int(known.sum()),
                "nonfinite_outputs": int((pred == NONFINITE).sum()),
                "agrees_fp32": float((pred[both] == base[: len(pred)][both]).mean()) if both is not None and both.any() else float("nan"),
                "init_ms": v.result["init_s"] * 1e3, "first_ms": v.result["first_s"] * 1e3,
                **latency_stats(v.result["samples_s"]), "batch_size": v.result["batch_size"], **backend_columns(v.result, v.runtime),
                "peak_rss_mb": v.memory.get("peak_rss_bytes", float("nan")) / 2**20 if v.memory else float("nan"),
                "rss_model_mb": (v.memory["rss_after_run_bytes"] - v.memory["rss_before_load_bytes"]) / 2**20 if v.memory else float("nan"),
            })
        rows.append(row)
    return pd.DataFrame(rows)
