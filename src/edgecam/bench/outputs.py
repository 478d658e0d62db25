"""The run directory: every file name a run writes, the writers and the readers.

Writers are atomic and never follow a symbolic link (`safe_io`): a reader never sees half a file, and a
full, read-only or unwritable disk is a `RunDirWriteError` naming the file. Readers (`read_table`,
`read_manifest`, `read_json`, `read_npz`, `read_kept`: what `report`, `compare` and the studies read)
turn whatever a damaged file raises while it is parsed into a `DamagedFileError` naming the file and
what to do, never a traceback.

`sweep`, `report`, `compare` and the CLI take the names from here; nothing else spells them.
"""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from edgecam.safe_io import atomic_path, make_dirs, write_json
from edgecam.errors import DamagedFileError
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
    """`df` as parquet at `path`, atomically (RunDirWriteError naming `path` when it cannot be written)."""
    with stage("io"), atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_csv(df: Any, path: Path) -> None:
    """`df` as CSV at `path`, atomically (RunDirWriteError naming `path` when it cannot be written)."""
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
    make_dirs(path.parent, run_dir)  # no link on the way (OUTPUTS, OUTPUTS/<model>)
    with stage("io"), atomic_path(path, run_dir) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **kept)


#: what to do about a damaged run-directory file
REDO = ("it was probably cut short (a full disk, an interrupted copy) or overwritten: rerun the run that made it "
        "(the same `edgecam run` command and --out: finished jobs are kept and its files rewritten), or restore the file")


@contextlib.contextmanager
def reading(path: Path, what: str = "") -> Iterator[None]:
    """Parse `path` inside the block: whatever a damaged file raises there (ArrowInvalid, JSONDecodeError,
    BadZipFile, EOFError, zlib errors, a missing key, RecursionError of a deeply nested JSON, ...) becomes
    a DamagedFileError naming the file and what to do; a file that cannot be read at all (permission, I/O
    error) says so. `what`: the kind of file, for the message ("the run's manifest")."""
    try:
        yield
    except (DamagedFileError, MemoryError, KeyboardInterrupt):
        raise
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EIO, errno.EISDIR):
            raise DamagedFileError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions and disk") from None
        raise DamagedFileError(_damaged(path, what, exc)) from None
    except Exception as exc:  # noqa: BLE001 - any parse failure of a file edgecam wrote means the file is damaged
        raise DamagedFileError(_damaged(path, what, exc)) from None


def _damaged(path: Path, what: str, exc: BaseException) -> str:
    detail = (str(exc).splitlines() or [""])[0][:200]
    return f"{path}{f' ({what})' if what else ''} is damaged and cannot be read ({type(exc).__name__}{': ' + detail if detail else ''}); {REDO}"


def read_json(path: Path, what: str = "") -> Any:
    """A JSON file of a run directory (DamagedFileError when it does not parse)."""
    import json

    with reading(path, what):
        return json.loads(Path(path).read_bytes())


#: manifest fields that readers index as objects (a damaged or hand-edited manifest with another type there is refused)
MANIFEST_OBJECTS = ("config", "device", "variants", "models", "data")


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The run's `manifest.json` as a dict, its object fields checked (DamagedFileError otherwise; a
    missing manifest: DamagedFileError saying the folder is no run directory)."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise DamagedFileError(f"{run_dir}: not an edgecam run directory (no {MANIFEST}): a run that did not finish writes none; rerun it to finish it")
    manifest = read_json(path, "the run's manifest")
    bad = [k for k in MANIFEST_OBJECTS if k in manifest and not isinstance(manifest[k], dict)] if isinstance(manifest, dict) else ["(the whole file)"]
    if bad:
        raise DamagedFileError(f"{path} (the run's manifest) is damaged: {', '.join(bad)} is not a JSON object; {REDO}")
    return manifest


def read_npz(path: Path, what: str = "") -> dict[str, np.ndarray]:
    """Every array of an .npz file of a run directory, loaded now (never pickled; DamagedFileError when
    the archive or an array in it is damaged: its CRC is checked as it is read)."""
    with reading(path, what), np.load(path, allow_pickle=False) as z:
        return {name: z[name] for name in z.files}


def read_kept(run_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every kept output of a run: array name ("logits|<variant>", "cam|<variant>|<method>|<mode>") ->
    image id -> that image's array. Empty when the run kept none (or predates `keep_outputs`). A damaged
    file (or one whose arrays do not have one row per id) is a DamagedFileError naming it."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for path in sorted((Path(run_dir) / OUTPUTS).glob("*/*.npz")):
        arrays = read_npz(path, "kept outputs")
        with reading(path, "kept outputs"):
            ids = [str(i) for i in arrays.pop("ids")]
            for name, arr in arrays.items():
                if arr.ndim == 0 or len(arr) != len(ids):
                    raise ValueError(f"{name}: {len(arr) if arr.ndim else 0} rows for {len(ids)} image ids")
                out.setdefault(name, {}).update(zip(ids, arr))
    return out


def read_table(run_dir: Path, name: str, columns: Sequence[str] = ()) -> Any:
    """A run directory's table `name` (parquet or csv), an empty DataFrame when absent or empty. A table
    that does not parse, a CSV cut short (edgecam's end with a newline) or one without the `columns` its
    reader needs is a DamagedFileError naming the file."""
    import pandas as pd

    path = Path(run_dir) / name
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    with reading(path, "a table of the run"):
        if name.endswith(".parquet"):
            df = pd.read_parquet(path)
        else:
            with open(path, "rb") as f:
                f.seek(-1, 2)
                if f.read(1) != b"\n":
                    raise ValueError("the file does not end with a complete line (cut short)")
            try:
                df = pd.read_csv(path)
            except pd.errors.EmptyDataError:
                return pd.DataFrame()
        missing = [c for c in columns if c not in df.columns]
        if missing and not df.empty:
            raise KeyError(f"no column {', '.join(missing)}")
    return df


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
    says which images have a ground-truth mask, the report shows n/a for the others). Where the grid was picked
    by score (`aggregate.pick_grid`), its entry also holds "rule" (one sentence: how the typical and dissimilar
    images were picked, the report's caption), "scores" (each image's score, aligned with "ids"; null where NaN)
    and "score" (what was scored: variant, method, mode, metric, the run's median and image counts)."""
    arrays: dict[str, np.ndarray] = {}
    index: dict[str, Any] = {}
    for model, g in grids.items():
        if not g:
            continue
        entry: dict[str, Any] = {"ids": g["ids"], "kinds": g["kinds"], "has_box": [bool(b) for b in g["has_box"]], "cams": []}
        if "rule" in g:
            entry["rule"] = str(g["rule"])
        if "scores" in g:
            entry["scores"] = [float(x) if np.isfinite(x) else None for x in np.asarray(g["scores"], dtype=np.float64)]
        if "score" in g:
            entry["score"] = {k: (None if isinstance(x, float) and not np.isfinite(x) else x) for k, x in g["score"].items()}
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
        write_json(out_dir / GRID_JSON, index)


def write_tables(out_dir: Path, tables: Sequence[tuple[str, Any]]) -> None:
    """Write each (file name, DataFrame) pair by its suffix."""
    for name, df in tables:
        (write_parquet if name.endswith(".parquet") else write_csv)(df, out_dir / name)
