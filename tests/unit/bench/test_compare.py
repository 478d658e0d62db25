"""`edgecam compare`: deltas between two runs with bootstrap intervals, paired on the shared images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgecam.bench.compare import compare_runs, to_html
from edgecam.bench.stats import bootstrap_diff_ci


def _run(root: Path, shift: float, latency: float, n: int = 40) -> Path:
    rng = np.random.default_rng(0)  # same per-image values in both runs: the shift is the only difference
    root.mkdir()
    cc = np.clip(rng.normal(0.9, 0.05, n) + shift, -1, 1)
    pd.DataFrame({"model": "m", "format": "onnx", "runtime": "ort", "precision": "int8", "cam_method": "gradcampp", "cam_mode": "mirror",
                  "image_id": [f"i{k}" for k in range(n)], "cc_fp32": cc, "cc_gt": 0.5}).to_parquet(root / "results.parquet")
    pd.DataFrame({"model": "m", "format": "onnx", "runtime": "ort", "precision": "int8", "latency_ms": latency + rng.random(200) * 0.1}).to_parquet(root / "latency.parquet")
    (root / "manifest.json").write_text(json.dumps({"config": {"name": root.name}}))
    return root


def test_compare_pairs_images_and_brackets_the_shift(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", 0.0, 1.0)
    b = _run(tmp_path / "b", -0.05, 2.0)
    t = compare_runs(a, b, n_boot=500).set_index("metric")
    cc = t.loc["cc_fp32"]
    assert cc["paired"] and cc["images"] == 40
    assert abs(cc["delta"] + 0.05) < 0.01 and cc["ci_lo"] <= cc["delta"] <= cc["ci_hi"] and cc["ci_hi"] < 0  # clipping aside, -0.05
    same = t.loc["cc_gt"]
    assert same["delta"] == 0 and same["ci_lo"] == 0 == same["ci_hi"]
    lat = t.loc["p50_ms"]
    assert 0.9 < lat["delta"] < 1.1 and lat["ci_lo"] > 0.8
    page = to_html(t.reset_index(), a, b)
    assert "<b>-0.05" in page or "<b>-0.04" in page  # the significant CC delta is bold


def test_bootstrap_diff_ci_unpaired_and_degenerate() -> None:
    rng = np.random.default_rng(1)
    d, lo, hi = bootstrap_diff_ci(rng.normal(0, 1, 300), rng.normal(1, 1, 200), paired=False, n_boot=500)
    assert lo < d < hi and 0.7 < d < 1.3 and lo > 0.5
    assert all(np.isnan(v) for v in bootstrap_diff_ci([1.0], [2.0, 3.0], paired=False))


def _kept_run(root: Path, logits: np.ndarray, cams: np.ndarray, ids: list[str], device: dict[str, object], sha: str = "abc") -> Path:
    """A run directory with only what the device gap reads: the manifest and kept outputs in two shards."""
    from edgecam.bench import outputs as files

    root.mkdir()
    name = "m|onnx|int8|onnxruntime"
    (root / "manifest.json").write_text(json.dumps({"device": device, "variants": {"m-onnx-int8-onnxruntime": {"sha256": sha}}}))
    for s0, s1 in ((0, 2), (2, len(ids))):
        files.write_kept(root, "m", s0, {"ids": np.asarray(ids[s0:s1]), f"logits|{name}": logits[s0:s1], f"cam|{name}|eigencam|surrogate": cams[s0:s1]})
    return root


def test_device_gap_pairs_the_kept_images_of_two_devices(tmp_path: Path) -> None:
    from edgecam.bench.compare import device_gap, device_label

    rng = np.random.default_rng(0)
    logits, cams = rng.normal(size=(5, 10)).astype(np.float32), rng.random((5, 8, 8)).astype(np.float32)
    ids = [f"img{i}" for i in range(5)]
    a = _kept_run(tmp_path / "a", logits, cams, ids, {"arch": "x86_64", "emulated": False, "inventory": {"name": "local"}})
    moved = logits.copy()
    moved[4] = -moved[4]  # the last image's logits flip sign on device B: its top-1 changes
    flipped = cams.copy()
    flipped[4] = flipped[4].T
    # B kept the images in another order and one more: pairing is by image id, over the images both kept
    order = [4, 0, 3, 1, 2]
    b = _kept_run(tmp_path / "b", np.concatenate([moved[order], logits[:1]]), np.concatenate([flipped[order], cams[:1]]), [ids[i] for i in order] + ["extra"],
                  {"arch": "aarch64", "emulated": True, "inventory": {"name": "pi"}})
    gap = device_gap(a, b)
    assert len(gap) == 1
    r = gap.iloc[0]
    assert (r["model"], r["format"], r["precision"], r["runtime"], r["cam_method"], r["cam_mode"]) == ("m", "onnx", "int8", "onnxruntime", "eigencam", "surrogate")
    assert r["images"] == 5 and r["same_artifact"] and r["top1_agreement"] == 0.8
    assert r["max_abs_logit_diff"] == np.abs(2 * logits[4]).max() and r["median_abs_logit_diff"] == 0.0
    assert 0.7 < r["cc"] < 1.0 and r["kld"] > 0  # four identical CAMs and one transposed
    assert device_label(b) == "pi (aarch64, emulated)" and device_label(a) == "local (x86_64)"
    same = device_gap(a, a).iloc[0]
    assert same["top1_agreement"] == 1.0 and same["max_abs_logit_diff"] == 0.0 and same["cc"] > 0.9999 and same["kld"] < 1e-6
    c = _kept_run(tmp_path / "c", logits, cams, ids, {}, sha="other")
    assert not device_gap(a, c).iloc[0]["same_artifact"]
    page = to_html(compare_runs(a, a), a, b, gap)
    assert 'id="device-gap"' in page and "pi (aarch64, emulated)" in page


def _with_data(run: Path, fingerprint: str, seed: int) -> Path:
    """Give a run's manifest a data fingerprint and the data settings it came from."""
    manifest = json.loads((run / "manifest.json").read_text())
    manifest.update({"data_fingerprint": fingerprint, "data": {"dataset": "digits-clutter", "seed": seed}, "config": {"data": {"name": "digits-clutter", "seed": seed}}})
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_runs_on_different_data_are_refused_or_labelled(tmp_path: Path) -> None:
    """Audit N45: image ids of two runs on different data name different pictures: compare refuses, naming both
    fingerprints and the settings that differ; allowed, nothing is paired, no device gap, every row says so."""
    from edgecam.bench.compare import DifferentDataError, check_same_data, device_gap

    a = _with_data(_run(tmp_path / "a", 0.0, 1.0), "dc275c1c", 0)
    b = _with_data(_run(tmp_path / "b", -0.05, 2.0), "319a5b78", 1)
    for call in (lambda: compare_runs(a, b, n_boot=100), lambda: device_gap(a, b)):
        with pytest.raises(DifferentDataError, match=r"data fingerprint dc275c1c in .*a but 319a5b78 in .*b \(differs in: data.seed 0 vs 1; source.seed 0 vs 1\)"):
            call()
    t = compare_runs(a, b, n_boot=100, allow_different_data=True)
    assert not t["paired"].any() and (t["data"] == "DIFFERENT").all()
    assert device_gap(a, b, allow_different_data=True).empty
    page = to_html(t, a, b)
    assert "DIFFERENT DATA" in page and "dc275c1c" in page
    same = _with_data(_run(tmp_path / "c", 0.0, 1.0), "dc275c1c", 0)
    assert check_same_data(a, same) is None and compare_runs(a, same, n_boot=100)["paired"].any()
    assert check_same_data(a, _run(tmp_path / "old", 0.0, 1.0)) is None  # a manifest without a fingerprint (older run): cannot be checked


def test_damaged_run_files_are_named(tmp_path: Path) -> None:
    """Audit N46: a truncated results.parquet or a broken manifest is a DamagedFileError naming it."""
    from edgecam.errors import DamagedFileError

    a, b = _run(tmp_path / "a", 0.0, 1.0), _run(tmp_path / "b", 0.0, 1.0)
    (b / "results.parquet").write_bytes((b / "results.parquet").read_bytes()[:100])
    with pytest.raises(DamagedFileError, match=r"b/results.parquet \(a table of the run\) is damaged"):
        compare_runs(a, b)
    (b / "manifest.json").write_text('{"device": ')
    with pytest.raises(DamagedFileError, match=r"b/manifest.json \(the run's manifest\) is damaged"):
        compare_runs(a, b)
