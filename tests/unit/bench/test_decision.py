"""The decision table (bench/decision.py): one row per variant with its CAM fidelity per method, the Pareto
flag and the picks, on synthetic bench / results tables whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from edgecam.bench.decision import decide, pareto_mask


def _bench(rows: list[tuple[str, str, str, float, int, bool]]) -> pd.DataFrame:
    """(runtime, format, precision, p50 ms, size bytes, ok) per variant of model m."""
    return pd.DataFrame([{"model": "m", "format": f, "runtime": rt, "precision": p, "ok": ok, "accuracy": 0.5, "agrees_fp32": 1.0,
                          "p50_ms": p50 if ok else np.nan, "p99_ms": p50 * 1.5 if ok else np.nan, "peak_rss_mb": 100.0, "size_bytes": size}
                         for rt, f, p, p50, size, ok in rows])


def _results(cc: dict[tuple[str, str], list[float]], methods: tuple[str, ...] = ("gradcampp", "eigencam"), mode: str = "mirror") -> pd.DataFrame:
    """Per (runtime, precision): the per-image CC vs fp32 (SIM = CC - 0.1), for every method."""
    fmt = {"onnxruntime": "onnx", "litert": "tflite"}
    rows = []
    for (rt, p), vals in cc.items():
        for method in methods:
            for i, v in enumerate(vals):
                rows.append({"model": "m", "format": fmt[rt], "runtime": rt, "precision": p, "cam_method": method, "cam_mode": mode,
                             "image_id": f"i{i}", "cc_fp32": v, "sim_fp32": v - 0.1})
    return pd.DataFrame(rows)


def test_pareto_mask_keeps_the_points_nothing_beats() -> None:
    # (latency, size, -CC): b is beaten by a on every axis; c is slower but smaller; d has a NaN
    a, b, c, d = (1.0, 10.0, -0.9), (2.0, 11.0, -0.8), (3.0, 5.0, -0.9), (0.5, np.nan, -1.0)
    mask = pareto_mask(*zip(a, b, c, d))
    assert mask.tolist() == [True, False, True, False]
    assert pareto_mask([1.0, 1.0], [2.0, 2.0]).tolist() == [True, True]  # equal points do not beat each other


def test_picks_respect_the_cc_floor_and_name_the_variants() -> None:
    bench = _bench([("onnxruntime", "onnx", "fp32", 5.0, 18_000_000, True), ("onnxruntime", "onnx", "int8", 2.0, 5_000_000, True),
                    ("litert", "tflite", "int8", 1.0, 4_000_000, True), ("litert", "tflite", "int16", 50.0, 6_000_000, True)])
    results = _results({("onnxruntime", "fp32"): [1.0, 1.0, 1.0], ("onnxruntime", "int8"): [0.95, 0.97, 0.93],
                        ("litert", "int8"): [0.6, 0.7, 0.8], ("litert", "int16"): [0.99, 0.995, 0.985]})
    d = decide(bench, results, reference="gradcampp", cc_floor=0.9)
    assert d.methods == ("gradcampp", "eigencam") and d.reference == "gradcampp"
    t = d.table.set_index("label")
    assert t.loc["m onnxruntime int8", "cc_gradcampp"] == pytest.approx(0.95)
    assert t.loc["m onnxruntime int8", "sim_eigencam"] == pytest.approx(0.85)
    lo, hi = t.loc["m onnxruntime int8", ["cc_gradcampp_lo", "cc_gradcampp_hi"]]
    assert 0.93 - 1e-9 <= lo <= 0.95 <= hi <= 0.97 + 1e-9
    # LiteRT int8 is the fastest and smallest but its CAMs fall below the floor: ONNX Runtime int8 is picked for both
    lines = [p.line() for p in d.picks]
    assert lines[0] == "fastest with CC vs fp32 (gradcampp) >= 0.9: m onnxruntime int8 (2.00 ms p50, CC 0.950)"
    assert lines[1] == "smallest with CC vs fp32 (gradcampp) >= 0.9: m onnxruntime int8 (4.8 MB, CC 0.950)"
    assert lines[2].startswith("most faithful quantized (gradcampp): m litert int16 (CC 0.990 [")
    # front: litert int8 (fastest, smallest), onnxruntime int8, litert int16 (more faithful than ORT int8), fp32 (CC 1)
    assert t["pareto"].to_dict() == {"m onnxruntime fp32": True, "m onnxruntime int8": True, "m litert int8": True, "m litert int16": True}
    assert decide(bench, results, reference="gradcampp", cc_floor=0.999).picks[0].line() == \
        "fastest with CC vs fp32 (gradcampp) >= 0.999: m onnxruntime fp32 (5.00 ms p50, CC 1.000)"


def test_failed_variants_and_host_simulation_are_never_picked() -> None:
    bench = _bench([("onnxruntime", "onnx", "fp32", 5.0, 18_000_000, True), ("onnxruntime", "onnx", "int8", 1.0, 5_000_000, False)])
    results = pd.concat([_results({("onnxruntime", "fp32"): [1.0, 1.0]}),
                         _results({("onnxruntime", "int8"): [0.99, 0.99]}, mode="sim")])  # simulated CAMs of the failed variant
    d = decide(bench, results, reference="gradcampp")
    t = d.table.set_index("label")
    assert np.isnan(t.loc["m onnxruntime int8", "cc_gradcampp"])  # the host simulation is not a deployed CAM
    assert not t.loc["m onnxruntime int8", "pareto"] and t.loc["m onnxruntime fp32", "pareto"]
    assert d.picks[2].line() == "most faithful quantized (gradcampp): none (no quantized variant has CAMs vs fp32)"


def test_no_variant_within_the_floor_is_said_with_the_best_cc() -> None:
    bench = _bench([("litert", "tflite", "int8", 1.0, 4_000_000, True)])
    d = decide(bench, _results({("litert", "int8"): [0.5, 0.6]}), reference="eigencam", cc_floor=0.9)
    assert d.reference == "eigencam" and d.methods == ("eigencam", "gradcampp")
    assert d.picks[0].line() == "fastest with CC vs fp32 (eigencam) >= 0.9: none (no variant keeps it; the highest is 0.550)"


def test_labels_show_the_format_only_where_needed_and_no_cams_leaves_no_picks() -> None:
    bench = pd.concat([_bench([("onnxruntime", "onnx", "int8", 1.0, 4, True)]), _bench([("onnxruntime", "onnx", "int8", 2.0, 4, True)]).assign(format="onnx2")])
    d = decide(bench, pd.DataFrame())
    assert d.table["label"].tolist() == ["m onnx/onnxruntime int8", "m onnx2/onnxruntime int8"]
    assert d.methods == () and d.picks == () and not d.table["pareto"].any()
    assert decide(pd.DataFrame(), pd.DataFrame()).empty
