"""Pipeline throughput (suite item 4): a whole `edgecam.bench.sweep.run` (what `edgecam run` calls) on the
digits config (`_common.digits_config`, the former quickstart), in this process; images/s per variant and the share of the run's wall time in runtime vs
CAM vs metrics vs I/O. Target: metrics + I/O < 10% of the total.

The shares come from the run's own stage tags (`edgecam.stages`, recorded in the manifest as
`stage_tags_s`): every block of the pipeline says what it is (`with stage("metrics"):`), time is charged
exclusively to the innermost open tag, so nested stages (a Score-CAM or a Deletion curve calling the
device) never double-count, and moving code between modules changes no figure:

- runtime: `device` (every agent call: timing passes, device-session forwards, masked inputs; the agent
  subprocess runs while the host waits there, transport included);
- CAM: `cam` (reference and variant CAMs, the host forward that picks the reference's classes);
- metrics: `metrics` (rows, saliency maps, runtime gap, WSOL counts, summaries);
- I/O: `io` (results files, figures, the grid);
- setup: `setup` (data, preflight, training / loading, export);
- other: `other` + what no tag covered (the sweep's own bookkeeping, imports, the job store).

    .venv/bin/python benchmarks/pipeline.py [--limit 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import Row, check, print_rows

CATEGORIES = ("runtime", "CAM", "metrics", "I/O", "setup", "other")
TAG_CATEGORY = {"device": "runtime", "cam": "CAM", "metrics": "metrics", "io": "I/O", "setup": "setup", "other": "other", "untagged": "other"}


def shares(stage_tags_s: dict[str, float]) -> dict[str, float]:
    """Share of the run's wall time per category, from the manifest's exclusive seconds per stage tag."""
    seconds = {c: 0.0 for c in CATEGORIES}
    for tag, s in stage_tags_s.items():
        seconds[TAG_CATEGORY.get(tag, "other")] += max(0.0, s)
    total = sum(seconds.values()) or 1.0
    return {c: seconds[c] / total for c in CATEGORIES}


def profile_run(cfg: Any, limit: int, out_dir: Path) -> tuple[dict[str, Any], float]:
    """`sweep.run(cfg)` on `limit` images; (its manifest, wall seconds)."""
    from edgecam.bench.sweep import run

    t = time.perf_counter()
    result = run(cfg, out_dir, limit=limit, log=lambda msg: None)
    return result["manifest"], time.perf_counter() - t


def pipeline_cfg() -> Any:
    """The suite's digits experiment (`_common.digits_config`: tinycnn + mobilenet_v2 on digits-clutter, 12
    variants), the former quickstart, so that the figures stay comparable with the earlier ones."""
    from _common import digits_config

    return digits_config()


def per_model_rows(manifest: dict[str, Any], n_img: int) -> list[Row]:
    """Images/s per variant of each model: its variants x images over its stage times in the manifest
    (train / export / run / CAMs + metrics entries that name the model)."""
    rows = []
    stages = manifest.get("stages_s", {})
    for model in manifest.get("models", {}):
        keys = [k for k, v in manifest["variants"].items() if k.startswith(f"{model}-") and not v.get("error")]
        secs = sum(v for k, v in stages.items() if f" {model}" in k and not k.startswith("device session calls"))
        if keys and secs > 0:
            rows.append(Row("4", f"pipeline images/s per variant, {model} ({len(keys)} variants)", n_img * len(keys) / secs, "img/s", "", None,
                            f"{n_img} images x {len(keys)} variants in {secs:.1f} s of this model's stages"))
    return rows


def run_items(limit: int = 100, cfg: Any = None) -> tuple[list[Row], list[str]]:
    """Item 4: one profiled run of `cfg` (the digits experiment by default); rows (throughput, time shares), notes."""
    cfg = cfg or pipeline_cfg()
    with tempfile.TemporaryDirectory(prefix="edgecam-bench-") as tmp:
        manifest, wall = profile_run(cfg, limit, Path(tmp) / "run")
    variants = [k for k, v in manifest["variants"].items() if not v.get("error")]
    n_img = int(manifest["images"])
    share = shares(manifest["stage_tags_s"])
    share_txt = ", ".join(f"{c} {100 * share[c]:.1f}%" for c in CATEGORIES)
    mi = share["metrics"] + share["I/O"]
    rows = [Row("4", f"pipeline images/s per variant, whole run ({len(variants)} variants)", n_img * len(variants) / wall, "img/s", "", None,
                f"{n_img} images x {len(variants)} variants in {wall:.1f} s (`sweep.run`, {cfg.name} config)")]
    rows += per_model_rows(manifest, n_img)
    rows.append(Row("4", "pipeline share of time in metrics + I/O", 100 * mi, "%", "< 10%", check(mi, "<", 0.10), f"{share_txt}; from the run's stage tags"))
    stages = manifest.get("stages_s", {})
    notes = ["item 4 stage tags (exclusive s): " + ", ".join(f"{k} {v:.1f}" for k, v in manifest["stage_tags_s"].items()),
             "item 4 stage times from the run's manifest (s): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items() if not k.startswith("device session calls"))]
    return rows, notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=100, help="test images per variant")
    args = ap.parse_args()
    rows, notes = run_items(args.limit)
    print_rows(rows, "Pipeline throughput")
    print("\n".join(notes))


if __name__ == "__main__":
    main()
