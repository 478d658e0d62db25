"""The report's CAM grid over a whole multi-shard run (issue 37): grid.json's dissimilar images are the run's highest
scores in results.parquet, its typical ones follow the stated rule around the run's median, and a resumed run
(a shard job lost) writes the same grid."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edgecam.bench.aggregate import GRID_DISSIMILAR, GRID_TYPICAL, grid_pick

IMAGES, SHARD = 24, 6


def _config(cfg: Any) -> Any:
    from edgecam.config import BenchSpec, RuntimeSpec

    return cfg.replace(data=dataclasses.replace(cfg.data, limit=IMAGES), export=dataclasses.replace(cfg.export, precisions=("fp32", "int8")),
                       runtimes=(RuntimeSpec("onnxruntime", threads=1),), bench=BenchSpec(warmup=1, iterations=3, memory=False),
                       explain=dataclasses.replace(cfg.explain, methods=("gradcampp",), reference="gradcampp", faithfulness=False, shard_size=SHARD,
                                                   bootstrap=100, emd_size=0))


def _expected(results: pd.DataFrame, score: dict[str, Any]) -> tuple[list[str], list[str], float]:
    """The rule recomputed from results.parquet alone: the scored variant's rows in image order, each shard's
    candidates, then the run's pick."""
    model, fmt, precision, runtime = score["variant"].split("-")
    rows = results[(results["format"] == fmt) & (results["precision"] == precision) & (results["runtime"] == runtime)
                   & (results["cam_method"] == score["method"]) & (results["cam_mode"] == score["mode"])]
    assert len(rows) == IMAGES
    s = rows[score["metric"]].to_numpy(dtype=np.float64)
    ids = rows["image_id"].astype(str).tolist()
    bad = set(results.loc[results["pred"] == -2, "image_id"].astype(str))  # non-finite outputs on any variant: never typical
    ok = np.array([i not in bad for i in ids])
    kept: list[int] = []
    for s0 in range(0, IMAGES, SHARD):
        part = s[s0:s0 + SHARD]
        dis, typ = grid_pick(part, ok[s0:s0 + SHARD], s0 + np.arange(len(part)), float(np.nanmedian(part)))
        kept += [s0 + j for j in {*dis, *typ}]
    kept.sort()
    median = float(rows[score["metric"]].median())  # pandas skips NaN
    dis, typ = grid_pick(s[kept], ok[kept], kept, median)
    assert len(dis) == GRID_DISSIMILAR and len(typ) == GRID_TYPICAL
    return [ids[kept[j]] for j in dis], [ids[kept[j]] for j in typ], median


def test_grid_picks_across_every_shard_and_a_resumed_run_writes_the_same_grid(trained_tinycnn: Any, tmp_path: Path) -> None:
    from edgecam.bench.sweep import run

    cfg = _config(trained_tinycnn.cfg)
    ref = tmp_path / "ref"
    got = run(cfg, ref, log=lambda m: None)
    assert not got["failed"], got["failed"]
    entry = json.loads((ref / "grid.json").read_text())["tinycnn"]
    score = entry["score"]
    assert score["variant"] == "tinycnn-onnx-int8-onnxruntime" and score["shards"] == IMAGES // SHARD and score["images"] == IMAGES
    results = pd.read_parquet(ref / "results.parquet")
    dissimilar, typical, median = _expected(results, score)
    picked = dict(zip(entry["ids"], entry["kinds"]))
    assert [i for i in entry["ids"] if picked[i] == "dissimilar"] == dissimilar
    assert [i for i in entry["ids"] if picked[i] == "typical"] == typical
    assert score["median"] == median and f"({median:.4g})" in entry["rule"]
    # the dissimilar ones are the run's highest scores over every image, whichever shard they sit in
    rows = results[(results["precision"] == "int8") & (results["cam_method"] == "gradcampp")]
    top = rows.reset_index(drop=True).sort_values(score["metric"], ascending=False, kind="stable")["image_id"].astype(str).tolist()[:GRID_DISSIMILAR]
    assert dissimilar == top
    by_id = rows.set_index("image_id")[score["metric"]]
    assert entry["scores"] == [by_id[i] for i in entry["ids"]]
    # each shard's job holds at most GRID_TYPICAL + GRID_DISSIMILAR candidates, and its images' scores
    metas = [json.loads(p.read_text())["meta"] for p in (ref / "jobs" / "explain").glob("*/meta.json")]
    assert len(metas) == IMAGES // SHARD and all(0 < len(m["grid"]["ids"]) <= GRID_TYPICAL + GRID_DISSIMILAR for m in metas)

    # resumed: one middle shard's job lost (recomputed), the others read back: the same grid.json and arrays
    out = tmp_path / "resumed"
    shutil.copytree(ref, out)
    middle = sorted((out / "jobs" / "explain").iterdir(), key=lambda d: json.loads((d / "meta.json").read_text())["meta"]["grid"]["s0"])[2]
    shutil.rmtree(middle)
    again = run(cfg, out, log=lambda m: None, resume=True)
    assert again["manifest"]["jobs"]["committed"] == 1
    assert json.loads((out / "grid.json").read_text()) == json.loads((ref / "grid.json").read_text())
    with np.load(ref / "grid.npz") as a, np.load(out / "grid.npz") as b:
        assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a.files)
