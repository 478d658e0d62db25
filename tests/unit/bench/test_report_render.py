"""Report pieces render what the library decided: the summary's `best` column, n/a without ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from edgecam.bench.outputs import write_grid
from edgecam.bench.report import _emulated_banner, cam_grid, summary_table


def _summary() -> pd.DataFrame:
    return pd.DataFrame([
        {"format": "onnx", "runtime": "ort", "cam_method": "gradcampp", "cam_mode": "mirror", "comparison": "int8 v. fp32", "metric": "cc",
         "metric_label": "CC (higher is better)", "a_mean": 0.9, "a_std": 0.1, "b_mean": 0.95, "b_std": 0.05, "best": "b"},
        {"format": "onnx", "runtime": "ort", "cam_method": "gradcampp", "cam_mode": "mirror", "comparison": "int8", "metric": "act_std",
         "metric_label": "Activation std", "a_mean": 1.0, "a_std": 0.1, "b_mean": 2.0, "b_std": 0.2, "best": np.nan},  # "" reads back as NaN
    ])


def test_summary_table_highlights_the_rows_best_model_only() -> None:
    page = summary_table(_summary(), ["a", "b"])
    assert page.count('class="best"') == 1 and '<td class="best" data-v="0.95"' in page
    assert "CC (higher is better)" in page and "Activation std" in page and "0.950 ± 0.050" in page


def test_grid_shows_na_for_images_without_ground_truth(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    grid = {"ids": ["x/1.jpg", "x/2.jpg"], "kinds": ["typical", "typical"], "has_box": np.array([True, False]), "images": rng.random((2, 3, 8, 8)),
            "masks": np.zeros((2, 8, 8)), "saliency": rng.random((2, 8, 8)), "cams": {("m-onnx-fp32-ort", "gradcampp", "mirror"): rng.random((2, 8, 8))},
            "preds": {"m-onnx-fp32-ort": np.array([1, 2])}}
    write_grid({"m": grid}, tmp_path)
    assert json.loads((tmp_path / "grid.json").read_text())["m"]["has_box"] == [True, False]
    page = cam_grid(tmp_path, ["m"])
    assert page.count("no box for this image") == 1 and page.count('title="ground truth"') == 1


def test_an_emulated_device_is_flagged_and_its_reason_escaped() -> None:
    assert _emulated_banner({"emulated": False, "emulation": "x"}) == ""
    page = _emulated_banner({"emulated": True, "emulation": "qemu-user: <b>aarch64</b>"}, "emulated")
    assert 'id="emulated"' in page and "Emulated device" in page and "&lt;b&gt;aarch64&lt;/b&gt;" in page and "<b>aarch64" not in page
    assert "inventory" in _emulated_banner({"emulated": True})
