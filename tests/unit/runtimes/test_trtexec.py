"""trtexec's JSON exports read into latency columns (`runtimes/trtexec.py`), on excerpts of real exports recorded
by NVIDIA (tests/unit/runtimes/data/trtexec/README.md says where from). Running trtexec needs a board with
TensorRT; its command line and its refusals are checked here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgecam.runtimes import trtexec

DATA = Path(__file__).parent / "data" / "trtexec"
PREFIX = DATA / "mobilenet.qat.onnx.engine"


def test_times_are_read_per_phase_as_numpy_would_summarise_them() -> None:
    records = json.loads(Path(f"{PREFIX}.timing.json").read_text())
    got = trtexec.read_times(f"{PREFIX}.timing.json")
    assert got["inferences"] == 10
    compute = np.array([r["computeMs"] for r in records])
    enqueue = np.array([r["endEnqMs"] - r["startEnqMs"] for r in records])
    assert got["compute_p50_ms"] == pytest.approx(float(np.percentile(compute, 50)))
    assert got["compute_mean_ms"] == pytest.approx(float(compute.mean()))
    assert got["enqueue_p50_ms"] == pytest.approx(float(np.percentile(enqueue, 50)))
    assert got["h2d_p50_ms"] == 0.0 and got["d2h_p50_ms"] == 0.0  # this recording ran with --noDataTransfers-like zero copies
    assert got["latency_p50_ms"] == pytest.approx(0.444528, abs=1e-6)  # median of the 10 recorded latencies
    assert trtexec.latency_columns({"times": got}) == {f"trt_{p}_p50_ms": got[f"{p}_p50_ms"] for p in trtexec.PHASES}


def test_the_profile_is_read_slowest_layer_first() -> None:
    got = trtexec.read_profile(f"{PREFIX}.profile.json")
    assert got["profiled_runs"] == 4216 and len(got["layers"]) == 11
    assert got["layers"][0] == {"name": "QuantizeLinear_2", "average_ms": 0.0122041, "percentage": 1.88608}
    assert [d["average_ms"] for d in got["layers"]] == sorted((d["average_ms"] for d in got["layers"]), reverse=True)
    assert got["sum_average_ms"] == pytest.approx(sum(d["average_ms"] for d in got["layers"]))


def test_layer_info_says_which_layers_computed_in_int8() -> None:
    got = trtexec.read_layer_info(f"{PREFIX}.graph.json")
    assert got["layers"] == 7 and got["bindings"] == ["input1", "1179"]
    # the three convolutions have Int8 weights (one writes FP16, one FP32: still int8 kernels); the Reformat that
    # quantizes the input reads FP32, the pooling FP16
    assert got["int8_layers"] == [
        "features.0.0.weight + QuantizeLinear_8 + Conv_12 + PWN(Clip_16)",
        "features.2.conv.2.weight + QuantizeLinear_90 + Conv_94",
        next(n for n in got["int8_layers"] if n.startswith("classifier.1.weight")),
    ]
    assert got["compute_precisions"] == {"fp32": 2, "int8": 3, "fp16": 2}


def test_precision_words_of_real_formats() -> None:
    assert trtexec.layer_precision("Thirty-two wide channel vectorized row major Int8 format") == "int8"
    assert trtexec.layer_precision("Two wide channel vectorized row major FP16 format") == "fp16"
    assert trtexec.layer_precision("Row major linear FP32") == "fp32"
    assert trtexec.layer_precision("Float") == "fp32" and trtexec.layer_precision("Half") == "fp16"
    assert trtexec.layer_precision("") == "unknown"


@pytest.mark.parametrize(("name", "text", "match"), [
    ("times", "{}", "a list of inference records"),
    ("times", '[{"startEnqMs": 1}]', "lacks a number for 'h2d'"),
    ("times", "not json", "is not trtexec JSON"),
    ("profile", "{}", "--exportProfile output"),
    ("layers", '{"Layers": ["a", "b"]}', "detailed profiling verbosity"),
    ("layers", "[]", "with a 'Layers' list"),
])
def test_bad_exports_are_refused_naming_the_file(tmp_path: Path, name: str, text: str, match: str) -> None:
    path = tmp_path / f"x.{name}.json"
    path.write_text(text)
    reader = {"times": trtexec.read_times, "profile": trtexec.read_profile, "layers": trtexec.read_layer_info}[name]
    with pytest.raises(ValueError, match=match) as e:
        reader(str(path))
    assert str(path) in str(e.value)


def test_hostile_numbers_never_reach_the_columns() -> None:
    assert trtexec.latency_columns({"times": {"compute_p50_ms": "1", "h2d_p50_ms": float("nan"), "d2h_p50_ms": True, "latency_p50_ms": 2.5}}) == {"trt_latency_p50_ms": 2.5}
    assert trtexec.latency_columns(None) == {} and trtexec.latency_columns({"times": []}) == {}


def test_the_command_times_the_engine_and_writes_all_three_exports(tmp_path: Path) -> None:
    cmd = trtexec.command("trtexec", "/c/e.engine", "input", [1, 3, 224, 224], "/c/e.trtexec", 50, 200)
    assert cmd[:3] == ["trtexec", "--loadEngine=/c/e.engine", "--shapes=input:1x3x224x224"]
    for flag in ("--exportTimes=/c/e.trtexec.times.json", "--exportProfile=/c/e.trtexec.profile.json", "--exportLayerInfo=/c/e.trtexec.layers.json",
                 "--iterations=50", "--separateProfileRun"):
        assert flag in cmd
    with pytest.raises(FileNotFoundError, match="trtexec not found"):
        trtexec.profile_engine(str(tmp_path / "e.engine"), "input", [1, 3, 8, 8], executable=str(tmp_path / "no-trtexec"))
