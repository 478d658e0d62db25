"""The run directory: every file name a run writes, and the writers (atomic: a reader never sees half a file).

`sweep`, `report`, `compare` and the CLI take the names from here; nothing else spells them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgecam.cache import atomic_path, atomic_write_json
from edgecam.stages import stage

RESULTS = "results.parquet"  # one row per image x variant x CAM method x mode (`bench/results.py` COLUMNS)
LATENCY = "latency.parquet"  # raw latency samples
BENCH = "bench.csv"  # per variant: accuracy, latency stats, memory, size
SUMMARY = "summary.csv"  # Table 1 layout
WSOL = "wsol.csv"  # MaxBoxAcc per variant x CAM method x mode
ACTIVATIONS = "activations.parquet"  # histograms of the device's features
DISSIMILAR_CSV = "dissimilar.csv"
DISSIMILAR_PNG = "dissimilar.png"
GRID_NPZ = "grid.npz"
GRID_JSON = "grid.json"
RUNTIME_GAP = "runtime_gap.parquet"
RUNTIME_GAP_CSV = "runtime_gap.csv"
FAILED = "failed.csv"
LOWBIT = "lowbit.csv"
SALIENCY_QAT = "saliency_qat.csv"  # arXiv 2411.05858 study: data set x training x precision x map x metric
SENSITIVITY = "sensitivity.csv"  # per quantized group: CAM fidelity of its float fallback / alone quantized, SQNR
SENSITIVITY_PLAN = "sensitivity_plan.csv"  # the greedy mixed-precision plan, one row per group returned to float
SENSITIVITY_PNG = "sensitivity.png"  # the ranking as a bar chart (the report's)
MANIFEST = "manifest.json"
REPORT = "report.html"
OUTPUTS = "outputs"  # per explain shard: the first images' logits and (downsampled) CAMs, for cross-run comparisons
ARTIFACTS = "artifacts"
JOBS = "jobs"
FLEET = "fleet.json"  # a fleet run's directory (`bench/fleet.py`): the devices, how each run ended, wall times
FLEET_GAP = "fleet_gap.parquet"  # the device gap of every pair of the fleet's devices
FLEET_GAP_CSV = "fleet_gap.csv"
FLEET_REPORT = "fleet.html"
DEVICE_SCRATCH = ".device"  # the local device's working directory inside a run, removed at the end


def write_parquet(df: Any, path: Path) -> None:
    with stage("io"), atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_csv(df: Any, path: Path) -> None:
    with stage("io"), atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def pyplot() -> Any:
    """pyplot on the Agg backend with mathtext off: image ids, model and device names go into titles and
    labels, and a `$` in one would be parsed as TeX (and raise inside savefig, after every job of a run)."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


def write_kept(run_dir: Path, model: str, s0: int, kept: dict[str, np.ndarray]) -> None:
    """One explain shard's kept outputs (`explain.keep_outputs`) as OUTPUTS/<model>/<first image>.npz."""
    path = run_dir / OUTPUTS / model / f"{s0:07d}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with stage("io"), atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **kept)


def read_kept(run_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every kept output of a run: array name ("logits|<variant>", "cam|<variant>|<method>|<mode>") ->
    image id -> that image's array. Empty when the run kept none (or predates `keep_outputs`)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for path in sorted((Path(run_dir) / OUTPUTS).glob("*/*.npz")):
        with np.load(path, allow_pickle=False) as z:
            ids = [str(i) for i in z["ids"]]
            for name in z.files:
                if name != "ids":
                    arr = z[name]
                    out.setdefault(name, {}).update(zip(ids, arr))
    return out


def read_table(run_dir: Path, name: str) -> Any:
    """A run directory's table `name` (parquet or csv), an empty DataFrame when absent or empty."""
    import pandas as pd

    path = Path(run_dir) / name
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    try:
        return pd.read_parquet(path) if name.endswith(".parquet") else pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


DISSIMILAR_KEYS = ("model", "format", "runtime", "precision", "cam_method", "cam_mode")


def write_dissimilar(items: list[dict[str, Any]], out_dir: Path, per_variant: int = 4) -> None:
    """Rogers et al. 2023's subset: the top 5% of images by RMSE to the fp32 CAM, per variant x method x
    mode, to `dissimilar.csv` (ids and RMSE) and `dissimilar.png` (fp32 CAM above the quantized CAM for the
    `per_variant` worst images of each variant)."""
    import pandas as pd

    keys = list(DISSIMILAR_KEYS)
    write_csv(pd.DataFrame([{k: it[k] for k in (*keys, "image_id", "rmse_fp32")} for it in items], columns=[*keys, "image_id", "rmse_fp32"]), out_dir / DISSIMILAR_CSV)
    if not items:
        return
    plt = pyplot()
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for it in items:
        groups.setdefault(tuple(it[k] for k in keys), []).append(it)
    height = len(groups) * 1.25 + 0.4
    with stage("io"):
        fig, axes = plt.subplots(len(groups), 2 * per_variant, figsize=(2 * per_variant * 1.1, height), squeeze=False)
        fig.subplots_adjust(top=1 - 0.35 / height, bottom=0.01, hspace=0.45)
        for r, (key, group) in enumerate(groups.items()):
            for c in range(per_variant):
                for j, field_name in enumerate(("cam_fp32", "cam")):
                    ax = axes[r, 2 * c + j]
                    ax.axis("off")
                    if c < len(group) and group[c][field_name] is not None:
                        ax.imshow(group[c][field_name], cmap="jet", vmin=0, vmax=1)
                        ax.set_title(f"{group[c]['image_id']} {'fp32' if j == 0 else key[3]}\nRMSE {group[c]['rmse_fp32']:.2f}" if j else f"{group[c]['image_id']} fp32", fontsize=5)
            axes[r, 0].text(-0.1, 0.5, "/".join(str(k) for k in key), transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=5)
        fig.suptitle("Most dissimilar CAMs vs fp32 (top 5% by RMSE, Rogers et al. 2023)", fontsize=7, y=1 - 0.05 / height)
        with atomic_path(out_dir / DISSIMILAR_PNG) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        plt.close(fig)


def write_grid(grids: dict[str, dict[str, Any]], out_dir: Path) -> None:
    """Save the per-model CAM grids as `grid.npz` (arrays) + `grid.json` (what each array is; `has_box`
    says which images have a ground-truth mask, the report shows n/a for the others)."""
    arrays: dict[str, np.ndarray] = {}
    index: dict[str, Any] = {}
    for model, g in grids.items():
        if not g:
            continue
        entry: dict[str, Any] = {"ids": g["ids"], "kinds": g["kinds"], "has_box": [bool(b) for b in g["has_box"]], "cams": []}
        for name in ("images", "masks", "saliency"):
            arrays[f"{model}__{name}"] = np.asarray(g[name], dtype=np.float32)
        for j, ((vkey, method, mode), c) in enumerate(g["cams"].items()):
            key = f"{model}__cam{j}"
            arrays[key] = np.asarray(c, dtype=np.float16)  # display only: half precision halves the file
            entry["cams"].append({"variant": vkey, "method": method, "mode": mode, "array": key, "pred": [int(p) for p in g["preds"][vkey]]})
        index[model] = entry
    with stage("io"):
        with atomic_path(out_dir / GRID_NPZ) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
        atomic_write_json(out_dir / GRID_JSON, index)


def write_tables(out_dir: Path, tables: Sequence[tuple[str, Any]]) -> None:
    """Write each (file name, DataFrame) pair by its suffix."""
    for name, df in tables:
        (write_parquet if name.endswith(".parquet") else write_csv)(df, out_dir / name)
