"""The decision table: one row per deployed variant (model, format, runtime, precision) with what a person
choosing what to ship weighs together (accuracy, agreement with fp32, p50 / p99 latency, peak RSS, size, and
per CAM method the CC and SIM of its CAMs vs the fp32 CAMs with a 95% bootstrap interval), a Pareto flag and
one pick per objective. The terminal and the report both render `decide`'s result; nothing here prints.

The CC / SIM columns are the "v. fp32" comparisons of Table 1 (arXiv 2403.09939, eq. 1-2 of its Section 3.3),
per image, averaged over the run's images; the interval is the percentile bootstrap of that mean
(`bench.stats.bootstrap_ci`). Host-simulated CAMs (`cam_mode == "sim"`, the low-bit study) are left out: they
are not a deployed variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

#: what identifies a deployed variant, in bench.csv and results.parquet alike
VARIANT_KEYS = ("model", "format", "runtime", "precision")
#: the CC vs fp32 a variant must keep to be picked as the fastest or the smallest (`explain.cc_floor`)
DEFAULT_CC_FLOOR = 0.9
#: per CAM method, the columns `decision_table` adds (`cc_<method>`, `cc_<method>_lo`, ...)
CAM_STATS = ("cc", "sim")


@dataclass(frozen=True)
class Pick:
    """The best variant for one objective: `objective` ("fastest with CC >= 0.9"), the variant's `label`
    (None: no variant qualifies), and `detail`, the figures that decided it (or why none qualified)."""

    objective: str
    label: str | None
    detail: str

    def line(self) -> str:
        """One sentence for the terminal and the report."""
        return f"{self.objective}: {self.label} ({self.detail})" if self.label else f"{self.objective}: none ({self.detail})"


@dataclass(frozen=True)
class Decision:
    """`table`: one row per variant, in bench.csv's order (columns: `VARIANT_KEYS`, `label`, `ok`, `accuracy`,
    `agrees_fp32`, `p50_ms`, `p99_ms`, `peak_rss_mb`, `size_bytes`, per CAM method `cc_<m>`, `cc_<m>_lo`,
    `cc_<m>_hi`, `sim_<m>`, `sim_<m>_lo`, `sim_<m>_hi`, and `pareto`); `methods`: the CAM methods, the
    reference first; `reference`: the method whose CC decides the Pareto flag and the picks; `picks`: one
    per objective; `cc_floor`: the CC the fastest and smallest picks must keep."""

    table: "pd.DataFrame"
    methods: tuple[str, ...]
    reference: str | None
    picks: tuple[Pick, ...]
    cc_floor: float

    @property
    def empty(self) -> bool:
        return self.table.empty


def variant_label(row: Any) -> str:
    """"efficientnet_lite0 litert int8": the name a person reads in tables, plots and picks (the format is
    shown when one runtime runs two formats of the same model: then the runtime alone would not tell them apart)."""
    return f"{row['model']} {row['runtime']} {row['precision']}"


def _labels(bench: "pd.DataFrame") -> list[str]:
    """`variant_label` per bench row, with the format added where two rows would read the same."""
    plain = [variant_label(r) for _, r in bench.iterrows()]
    dup = {x for x in plain if plain.count(x) > 1}
    return [f"{r['model']} {r['format']}/{r['runtime']} {r['precision']}" if p in dup else p for p, (_, r) in zip(plain, bench.iterrows())]


def pareto_mask(*lower_better: Sequence[float]) -> np.ndarray:
    """True for the points that no other point beats: at least as good on every axis (lower is better; negate
    an axis where higher is) and strictly better on one. A point with a NaN coordinate is never on the front."""
    pts = np.column_stack([np.asarray(a, float) for a in lower_better])
    ok = np.isfinite(pts).all(axis=1)
    mask = np.zeros(len(pts), bool)
    for i in np.flatnonzero(ok):
        beats = ok & (pts <= pts[i]).all(axis=1) & (pts < pts[i]).any(axis=1)
        mask[i] = not beats.any()
    return mask


def _cam_stats(results: "pd.DataFrame", methods: Sequence[str], n_boot: int, seed: int) -> "pd.DataFrame":
    """Per variant and CAM method: mean CC / SIM vs fp32 over the images, with the 95% bootstrap interval."""
    import pandas as pd

    from edgecam.bench.stats import bootstrap_ci

    rows: dict[tuple[Any, ...], dict[str, float]] = {}
    for (key, method), grp in _grouped(results):
        if method not in methods:
            continue
        out = rows.setdefault(key, {})
        for stat in CAM_STATS:
            vals = grp[f"{stat}_fp32"].to_numpy(dtype=float)
            finite = vals[np.isfinite(vals)]
            lo, hi = bootstrap_ci(finite, n_boot=n_boot, seed=seed)
            out[f"{stat}_{method}"] = float(finite.mean()) if finite.size else float("nan")
            out[f"{stat}_{method}_lo"], out[f"{stat}_{method}_hi"] = lo, hi
    return pd.DataFrame([{**dict(zip(VARIANT_KEYS, k)), **v} for k, v in rows.items()])


def _grouped(results: "pd.DataFrame") -> Any:
    """(variant key, CAM method) -> rows, for the deployed CAMs only (not the host simulation's)."""
    keep = results["cam_mode"] != "sim" if "cam_mode" in results else np.ones(len(results), bool)
    for key, grp in results[keep].groupby([*VARIANT_KEYS, "cam_method"], sort=False):
        yield (tuple(key[:-1]), key[-1]), grp


def decision_table(bench: "pd.DataFrame", results: "pd.DataFrame", methods: Sequence[str], reference: str | None,
                   n_boot: int = 1000, seed: int = 0) -> "pd.DataFrame":
    """One row per bench.csv variant: its performance columns beside its CAM fidelity per method, the label and
    the Pareto flag: no other working variant of the run is at once as fast (p50), as small and as faithful
    (the `reference` method's CC vs fp32), and better on one of the three."""
    import pandas as pd

    cols = ["accuracy", "agrees_fp32", "p50_ms", "p99_ms", "peak_rss_mb", "size_bytes", "nonfinite_outputs"]
    table = bench[[c for c in (*VARIANT_KEYS, "ok", *cols) if c in bench]].copy().reset_index(drop=True)
    for c in ("ok", *cols):
        if c not in table:
            table[c] = True if c == "ok" else np.nan
    table.insert(0, "label", _labels(table))
    if not results.empty and methods and "cc_fp32" in results:
        cams = _cam_stats(results, methods, n_boot, seed)
        if not cams.empty:
            table = table.merge(cams, on=list(VARIANT_KEYS), how="left")
    for m in methods:
        for stat in CAM_STATS:
            for suffix in ("", "_lo", "_hi"):
                if f"{stat}_{m}{suffix}" not in table:
                    table[f"{stat}_{m}{suffix}"] = np.nan
    ok = table["ok"].astype(bool).to_numpy()
    cc = table[f"cc_{reference}"].to_numpy(dtype=float) if reference else np.full(len(table), np.nan)
    p50 = np.where(ok, table["p50_ms"].to_numpy(dtype=float), np.nan)
    table["pareto"] = pareto_mask(p50, table["size_bytes"].to_numpy(dtype=float), -cc)
    return pd.DataFrame(table)


def format_size(size: Any) -> str:
    """Bytes as "17.9 MB" / "52 KB" (MB = 2**20 bytes, as bench.csv's columns), for the picks and the report."""
    x = float(size)
    return f"{x / 2**20:.1f} MB" if x >= 2**20 else f"{x / 1024:.0f} KB"


def picks(table: "pd.DataFrame", reference: str | None, cc_floor: float) -> tuple[Pick, ...]:
    """The fastest and the smallest variant whose mean CC vs fp32 (of the `reference` CAM method) is at least
    `cc_floor`, and the most faithful quantized variant (highest CC; fp32 is its own reference)."""
    if table.empty or reference is None:
        return ()
    cc_col = f"cc_{reference}"
    working = table[table["ok"].astype(bool) & table[cc_col].notna()]
    within = working[working[cc_col] >= cc_floor]
    floor = f"CC vs fp32 ({reference}) >= {cc_floor:g}"
    out = []
    for objective, col, unit in (("fastest", "p50_ms", "p50"), ("smallest", "size_bytes", "size")):
        cand = within[within[col].notna()]
        if cand.empty:
            best_cc = f"; the highest is {working[cc_col].max():.3f}" if not working.empty else ""
            out.append(Pick(f"{objective} with {floor}", None, f"no variant keeps it{best_cc}"))
            continue
        r = cand.sort_values([col, cc_col], ascending=[True, False]).iloc[0]
        value = f"{r['p50_ms']:.2f} ms p50" if col == "p50_ms" else format_size(r["size_bytes"])
        out.append(Pick(f"{objective} with {floor}", str(r["label"]), f"{value}, CC {r[cc_col]:.3f}"))
    quantized = working[working["precision"] != "fp32"]
    if quantized.empty:
        out.append(Pick(f"most faithful quantized ({reference})", None, "no quantized variant has CAMs vs fp32"))
    else:
        r = quantized.sort_values([cc_col, "p50_ms"], ascending=[False, True]).iloc[0]
        lo, hi = r[f"{cc_col}_lo"], r[f"{cc_col}_hi"]
        ci = f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else ""
        out.append(Pick(f"most faithful quantized ({reference})", str(r["label"]), f"CC {r[cc_col]:.3f}{ci}, {r['p50_ms']:.2f} ms p50"))
    return tuple(out)


def decide(bench: "pd.DataFrame", results: "pd.DataFrame", reference: str | None = None, cc_floor: float = DEFAULT_CC_FLOOR,
           n_boot: int = 1000, seed: int = 0) -> Decision:
    """The decision table and picks of a run's bench.csv and results.parquet; `reference` defaults to the
    first CAM method of the results (the run's `explain.reference` comes first when it is given)."""
    import pandas as pd

    if bench.empty:
        return Decision(pd.DataFrame(), (), None, (), cc_floor)
    found = list(dict.fromkeys(results["cam_method"])) if not results.empty and "cam_method" in results else []
    if reference is not None and reference not in found:
        reference = None
    reference = reference or (found[0] if found else None)
    methods = tuple([reference] + [m for m in found if m != reference]) if reference else ()
    table = decision_table(bench, results, methods, reference, n_boot, seed)
    return Decision(table, methods, reference, picks(table, reference, cc_floor), cc_floor)
