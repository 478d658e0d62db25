"""Report pieces render what the library decided: the summary's `best` column, n/a without ground truth."""

from __future__ import annotations

import html
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


def _run_tables(failed: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """bench.csv and results.parquet rows of one model <b>m</b> (a hostile name) on ORT at fp32 / int16 / int8
    with two CAM methods, plus a failed LiteRT int8."""
    rng = np.random.default_rng(0)
    model = "<b>m</b>"
    bench, rows = [], []
    for k, p in enumerate(("fp32", "int16", "int8")):
        bench.append({"model": model, "format": "onnx", "runtime": "onnxruntime", "precision": p, "ok": True, "error": "", "accuracy": 0.9 - 0.01 * k,
                      "agrees_fp32": 1.0 - 0.02 * k, "p50_ms": 10.0 / (1 + k), "p99_ms": 12.0 / (1 + k), "peak_rss_mb": 100.0 - 10 * k,
                      "size_bytes": 4e6 / 2**k, "nonfinite_outputs": 0})
        for method in ("gradcampp", "eigencam"):
            cc = 1.0 if p == "fp32" else 0.97 - 0.05 * k + 0.01 * rng.standard_normal(20)
            rows.append(pd.DataFrame({"model": model, "format": "onnx", "runtime": "onnxruntime", "precision": p, "cam_method": method, "cam_mode": "mirror",
                                      "image_id": [f"i{j}" for j in range(20)], "cc_fp32": cc, "sim_fp32": np.clip(cc, 0, 1) - 0.01,
                                      "deletion_auc": np.nan, "insertion_auc": np.nan}))
    if failed:
        bench.append({"model": model, "format": "tflite", "runtime": "litert", "precision": "int8", "ok": False, "error": "injected <i>failure</i>"})
    return pd.DataFrame(bench), pd.concat(rows, ignore_index=True)


def test_decision_section_answers_which_variant_to_ship() -> None:
    """One row per variant (the failed one reads failed, its error escaped), CC and SIM with their interval per
    CAM method, the reference method first, a Pareto flag; then the picks, the floor and the Pareto rule."""
    from edgecam.bench.decision import decide
    from edgecam.bench.report import decision_section

    bench, results = _run_tables()
    decision = decide(bench, results, reference="eigencam", cc_floor=0.85)
    page = decision_section(decision, bench)
    assert page.index("<table") == page.index('<table id="decision"') and page.count("<tbody><tr") == 1
    assert page.count("</tr>") == 1 + len(bench)
    assert "<b>m</b>" not in page and "&lt;b&gt;m&lt;/b&gt;" in page and ">failed: injected &lt;i&gt;failure&lt;/i&gt;</td>" in page
    assert page.index("CC vs fp32<br>eigencam") < page.index("CC vs fp32<br>gradcampp")  # the reference first
    assert page.count('<small class="ci">[') == 3 * 2 * 2  # 3 working variants x 2 methods x CC / SIM
    assert page.count('class="pareto"') == int(decision.table["pareto"].sum()) >= 1
    assert 'id="picks"' in page and page.count("<li>") == 3 and "0.85" in page and "explain.cc_floor" in page
    fastest = decision.picks[0]
    assert fastest.label and f"{html.escape(fastest.label)}" in page and 'class="pick"' in page


def test_decision_section_without_cams_or_variants_says_so() -> None:
    from edgecam.bench.decision import decide
    from edgecam.bench.report import decision_section

    bench, _ = _run_tables(failed=False)
    assert "no picks" in decision_section(decide(bench, pd.DataFrame()), bench)
    assert "No variant ran" in decision_section(decide(pd.DataFrame(), pd.DataFrame()), pd.DataFrame())


def test_table1_is_one_closed_details_per_cam_method() -> None:
    from edgecam.bench.report import summary_by_method

    two = pd.concat([_summary(), _summary().assign(cam_method="eigencam")], ignore_index=True)
    page = summary_by_method(two, ["a", "b"])
    assert page.count("<details") == 2 and " open" not in page
    assert 'id="summary-gradcampp"' in page and 'id="summary-eigencam"' in page and page.count('class="sortable t1"') == 2


def test_grid_states_its_rule_escaped_and_does_without_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    grid = {"ids": ["a"], "kinds": ["typical"], "has_box": np.array([True]), "images": rng.random((1, 3, 8, 8)), "masks": np.zeros((1, 8, 8)),
            "saliency": rng.random((1, 8, 8)), "cams": {("m-onnx-fp32-ort", "gradcampp", "mirror"): rng.random((1, 8, 8))}, "preds": {"m-onnx-fp32-ort": np.array([1])}}
    write_grid({"m": grid}, tmp_path)
    plain = cam_grid(tmp_path, ["m"])
    assert 'class="gridbox"' in plain and 'class="rule"' not in plain
    index = json.loads((tmp_path / "grid.json").read_text())
    index["m"]["rule"] = "typical: nearest the median CC <i>vs</i> fp32"
    index["m"]["score"] = [0.97]  # a key the report does not read does not matter
    (tmp_path / "grid.json").write_text(json.dumps(index))
    page = cam_grid(tmp_path, ["m"])
    assert '<p class="rule">typical: nearest the median CC &lt;i&gt;vs&lt;/i&gt; fp32</p>' in page
    assert page.index('class="rule"') < page.index('class="gridbox"')


def test_sections_without_data_are_left_out(tmp_path: Path) -> None:
    """No Deletion / Insertion AUC, no runtime pair: no such section (not an empty table)."""
    from edgecam.bench.report import faithfulness_section, runtime_gap_section

    _, results = _run_tables()
    assert faithfulness_section(results) == "" and faithfulness_section(pd.DataFrame()) == ""
    assert runtime_gap_section(tmp_path, ["m"]) == ""
    page = faithfulness_section(results.assign(deletion_auc=0.2, insertion_auc=np.linspace(0, 1, len(results))))
    assert 'id="faithfulness"' in page and page.count("<tr>") == 1 + 6  # a header + 3 variants x 2 methods
