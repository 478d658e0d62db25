"""A run's Table 1 beside arXiv 2403.09939's (`bench/studies/paper_2403.py`): the paper's own cells, read as printed,
matched to a run's models by architecture, the run's missing comparisons shown as n/a."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from edgecam.bench.studies.paper_2403 import PAPER_TABLE1, ROWS, beside_paper, paper_column


def test_the_paper_s_cells_are_the_table_s_including_the_mangled_ones() -> None:
    assert PAPER_TABLE1["MobileNet-V2"][("int8 v. fp32", "cc")] == (0.755, 0.124)
    assert PAPER_TABLE1["MobileNet-V2"][("int16 v. fp32", "kld")] == (0.050, 0.028)  # "0.0280.050 ± 0.028" in the text copy
    assert PAPER_TABLE1["EfficientNet-B0"][("int8 v. fp32", "cc")] == (0.463, 0.235)  # "0.2350.463 ± 0.235"
    assert all(set(col) == set(ROWS) for col in PAPER_TABLE1.values())
    assert (paper_column("mobilenet_v2_1.0_224_int8_per_tensor"), paper_column("efficientnet_lite0"), paper_column("tinycnn")) == ("MobileNet-V2", "EfficientNet-B0", None)


def test_a_run_s_summary_is_printed_beside_the_paper(tmp_path: Path) -> None:
    rows = [{"format": "onnx", "runtime": "onnxruntime", "cam_method": "gradcampp", "comparison": "int8 v. fp32", "metric": "cc",
             "mobilenet_v2_mean": 0.9931, "mobilenet_v2_std": 0.0132, "tinycnn_mean": 0.5, "tinycnn_std": 0.1},
            {"format": "tflite", "runtime": "litert", "cam_method": "gradcampp", "comparison": "int8 v. fp32", "metric": "cc",
             "mobilenet_v2_mean": 0.1, "mobilenet_v2_std": 0.1, "tinycnn_mean": 0.5, "tinycnn_std": 0.1}]
    pd.DataFrame(rows).to_csv(tmp_path / "summary.csv", index=False)
    side = beside_paper(tmp_path).set_index(["comparison", "metric"])
    assert list(side.columns) == ["mobilenet_v2 (this run)", "MobileNet-V2 (paper)"]  # no paper column for tinycnn
    assert side.loc[("int8 v. fp32", "CC")].tolist() == ["0.993 ± 0.013", "0.755 ± 0.124"]  # the onnx / onnxruntime row, not LiteRT's
    assert side.loc[("int16 v. fp32", "CC"), "mobilenet_v2 (this run)"] == "n/a"
    assert beside_paper(tmp_path / "nothing").empty
