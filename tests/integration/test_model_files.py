"""A model given by its files, end to end (issue 34): an fp32 ONNX exported here from torchvision's MobileNetV2
(random weights) is quantized by edgecam to int8 and int16 and explained, its mirror Grad-CAM++ equal to Grad-CAM++
of the PyTorch model it came from; the real ST MobileNetV2 pair (../shared/models, skipped where absent) runs from
one command line; and every file or setting that cannot be one model is refused before any work, with its name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgecam.config import BenchSpec, DataSpec, ExplainSpec, ModelSpec, RunConfig, RuntimeSpec, config_from_dict
from edgecam.errors import ConfigError
from conftest import edgecam

ST = Path(__file__).resolve().parents[2].parent / "shared" / "models" / "st-mobilenet"
needs_st = pytest.mark.skipif(not ST.is_dir(), reason=f"the real deployed models are not here ({ST})")
MNV2 = "mobilenet_v2_1.0_224_int8_per_tensor"


def _torchvision_onnx(path: Path) -> "object":
    """torchvision's MobileNetV2 (seeded random weights, 1,000 classes) as a user's fp32 ONNX: one input, the logits."""
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None).eval()
    torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), str(path), input_names=["image"], output_names=["scores"], opset_version=17,
                      dynamo=False, dynamic_axes={"image": {0: "n"}, "scores": {0: "n"}})
    return model


def test_an_fp32_onnx_is_quantized_by_edgecam_and_its_mirror_grad_cam_pp_is_the_pytorch_model_s(session_cache: Path, tmp_path: Path) -> None:
    import cv2

    from edgecam.bench.outputs import read_kept
    from edgecam.bench.sweep import run
    from edgecam.data.spec import load_data
    from edgecam.explain.cams import CamContext, gradient_cams
    from edgecam.explain.metrics import cc
    from edgecam.exporters.inspect import inspect_model_file

    torch_model = _torchvision_onnx(tmp_path / "mnv2.onnx")
    cfg = RunConfig(name="byo", data=DataSpec(name="sample-photos", views=1, calib_views=1), models=(ModelSpec("mnv2", files=(str(tmp_path / "mnv2.onnx"),)),),
                    runtimes=(RuntimeSpec("onnxruntime", threads=2),), bench=BenchSpec(warmup=1, iterations=3, memory=False),
                    explain=ExplainSpec(methods=("gradcampp",), faithfulness=False, emd_size=0, bootstrap=100, keep_cam_size=224))
    cfg = cfg.replace(export=type(cfg.export)(precisions=("fp32", "int16", "int8"), quant="ptq", calib_samples=6))
    out = run(cfg, tmp_path / "run", log=lambda m: None)
    assert not out["failed"]
    bench = out["bench"].set_index("precision")
    assert sorted(bench.index) == ["fp32", "int16", "int8"] and bench["ok"].all()
    for precision in ("int8", "int16"):  # really quantized to that width, as read back from the file
        art = tmp_path / "run" / "artifacts" / f"mnv2-onnx-{precision}"
        assert inspect_model_file(art / "model.onnx").precision == precision
        assert json.loads((art / "manifest.json").read_text())["quantization"]["quantized_by"].startswith("edgecam")
    data = load_data(cfg.data)
    kept = read_kept(tmp_path / "run")
    ids = [str(i) for i in data.test_batch(list(range(data.n_test))).ids]
    mirror = np.stack([kept["cam|mnv2|onnx|fp32|onnxruntime|gradcampp|mirror"][i] for i in ids])
    targets = np.stack([kept["logits|mnv2|onnx|fp32|onnxruntime"][i] for i in ids]).argmax(1)
    x = data.test_x
    want = gradient_cams(CamContext(torch_model, "features.18", x), "gradcampp", list(targets))
    assert want.shape == mirror.shape == (6, 224, 224)
    ccs = [cc(mirror[i], cv2.resize(want[i], (224, 224), interpolation=cv2.INTER_AREA)) for i in range(len(x))]
    assert min(ccs) >= 0.999, ccs


@needs_st
def test_the_st_pair_runs_from_one_command_line(session_cache: Path, tmp_path: Path) -> None:
    """`edgecam run a.tflite a.onnx`: both files in their runtimes, the dequantized reference, the runtime gap."""
    r = edgecam(["run", str(ST / f"{MNV2}.tflite"), str(ST / f"{MNV2}.onnx"), "--out", str(tmp_path / "run")], session_cache, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    run_dir = tmp_path / "run"
    import pandas as pd

    rows = pd.read_parquet(run_dir / "results.parquet")
    first = rows[rows.image_id.isin(["chelsea-00.jpg", "coffee-00.jpg"]) & (rows.cam_method == "eigencam")]
    for _, row in first.iterrows():  # the photos themselves: a cat, an espresso, in every variant
        assert (281 <= row.pred <= 285) if row.image_id.startswith("chelsea") else row.pred == 967
    assert set(zip(rows.format, rows.precision_effective)) == {("onnx", "fp32-dequantized"), ("onnx", "int8"), ("tflite", "int8")}
    gap = pd.read_parquet(run_dir / "runtime_gap.parquet")
    assert not gap.empty and set(gap.cam_method) == {"gradcampp", "eigencam"}
    for name in (f"{MNV2}-tflite-int8", f"{MNV2}-onnx-int8"):
        manifest = json.loads((run_dir / "artifacts" / name / "manifest.json").read_text())
        assert manifest["surgery"]["max_abs_diff"] == 0.0 and manifest["surgery"]["images"] == 16
    assert "is a <b>dequantized reference</b>" in (run_dir / "report.html").read_text()
    ref = json.loads((run_dir / "artifacts" / f"{MNV2}-onnx-fp32" / "manifest.json").read_text())
    assert ref["reference_kind"] == "dequantized" and ref["reference_check"]["top1_agrees_with_source"] >= 0.9


@needs_st
def test_a_tflite_only_model_gets_the_gradient_free_cams_and_no_fp32_comparison(session_cache: Path, tmp_path: Path) -> None:
    """No ONNX, so no float graph to differentiate: Eigen-CAM and Score-CAM run through the device session, the rows
    say "v. fp32" is not measured (NaN) and the host accuracy is NaN, not a made-up number."""
    import dataclasses

    from edgecam.bench.sweep import run
    from edgecam.config import files_config

    cfg = files_config([str(ST / f"{MNV2}.tflite")])
    assert cfg.explain.methods == ("eigencam", "scorecam") and [r.name for r in cfg.runtimes] == ["litert"]
    cfg = cfg.replace(data=dataclasses.replace(cfg.data, views=1), bench=BenchSpec(warmup=1, iterations=3, memory=False))
    out = run(cfg, tmp_path / "run", log=lambda m: None)
    assert not out["failed"]
    rows = out["results"]
    assert set(rows.cam_method) == {"eigencam", "scorecam"} and len(rows) == 12
    assert rows["cc_fp32"].isna().all() and rows["cc_host_ref"].isna().all() and rows["cc_sal"].notna().all()
    assert np.isnan(out["manifest"]["models"][MNV2]["checkpoint"]["host_fp32_accuracy"])
    assert out["bench"]["agrees_fp32"].isna().all() and out["bench"]["accuracy"].notna().all()
    report = (tmp_path / "run" / "report.html").read_text()  # a report without a fidelity axis still renders, and says why
    assert 'id="reference"' in report and "does not exist (TFLite files only)" in report


def test_gradient_cams_of_a_tflite_only_model_are_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "m.tflite").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"explain.methods: gradcampp differentiate a float graph, and model 'm' is given by TFLite files only"):
        config_from_dict({"name": "x", "models": [{"name": "m", "files": [str(tmp_path / "m.tflite")]}]})
    cfg = config_from_dict({"name": "x", "models": [{"name": "m", "files": [str(tmp_path / "m.tflite")]}], "explain": {"methods": ["eigencam", "rise"]}})
    assert cfg.models[0].is_files


def _config(tmp_path: Path, **model: object) -> RunConfig:
    return config_from_dict({"name": "x", "models": [{"name": "m", **model}]})


def _tiny_onnx(path: Path, classes: int = 5, size: int = 16) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("GlobalAveragePool", ["c"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]), helper.make_node("Gemm", ["f", "fc"], ["s"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, classes])],
                              [numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w"),
                               numpy_helper.from_array(rng.normal(size=(8, classes)).astype(np.float32), "fc")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize(("model", "match"), [
    ({"files": ["nope.onnx"]}, r"models.files \(m\): nope.onnx: model file not found"),
    ({"files": ["a.pt"]}, r"a.pt: not a model file edgecam reads"),
    ({"files": ["{tiny}"], "reference": "{tiny_tflite}"}, r"models.reference \(m\): .*tiny.tflite: the float reference must be an .onnx file"),
    ({"files": ["{tiny}"], "weights": "w.pt"}, r"models \(m\): weights belong to a model edgecam builds"),
    ({"files": ["{tiny}", "{tiny}"]}, r"a file is listed twice"),
    ({"files": ["{tiny}"], "label_offset": -1}, r"models.label_offset \(m\): expected the number of leading non-class outputs"),
    ({"cam_tensor": "x"}, r"models.cam_tensor \(m\): a setting of a model given by its files"),
    ({"files": ["{tiny}"], "labels": "nope.txt"}, r"models.labels \(m\): nope.txt: file not found"),
])
def test_file_model_settings_are_refused_before_any_work(tmp_path: Path, model: dict[str, object], match: str) -> None:
    tiny = _tiny_onnx(tmp_path / "tiny.onnx")
    (tmp_path / "tiny.tflite").write_bytes(b"x")
    fill = lambda v: v.format(tiny=tiny, tiny_tflite=tmp_path / "tiny.tflite") if isinstance(v, str) else [fill(i) for i in v] if isinstance(v, list) else v  # noqa: E731
    with pytest.raises(ConfigError, match=match):
        _config(tmp_path, **{k: fill(v) for k, v in model.items()})


def test_files_that_cannot_be_one_model_or_do_not_fit_the_data_are_refused(tmp_path: Path) -> None:
    from edgecam.bench.model_files import plan_files

    a, b = _tiny_onnx(tmp_path / "a.onnx"), _tiny_onnx(tmp_path / "b.onnx", classes=7)
    with pytest.raises(ConfigError, match=r"b.onnx gives 7 class scores, .*a.onnx 5"):
        plan_files(ModelSpec("m", files=(str(a), str(b))), 5)
    c = _tiny_onnx(tmp_path / "c.onnx", size=24)
    with pytest.raises(ConfigError, match=r"c.onnx takes 24x24 images, .*a.onnx 16x16"):
        plan_files(ModelSpec("m", files=(str(a), str(c))), 5)
    with pytest.raises(ConfigError, match=r"a.onnx gives 5 class scores and the data has 3 classes"):
        plan_files(ModelSpec("m", files=(str(a),)), 3)
    with pytest.raises(ConfigError, match=r"less the offset 1 that is 4, the data has 5 classes"):
        plan_files(ModelSpec("m", files=(str(a),), label_offset=1), 5)
    assert plan_files(ModelSpec("m", files=(str(a),)), 4).label_offset == 1  # one more score than classes: a background class first
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n")
    with pytest.raises(ConfigError, match=r"models.labels \(m\): .*labels.txt names 3 classes, the data has 4"):
        plan_files(ModelSpec("m", files=(str(a),), labels=str(tmp_path / "labels.txt")), 4)
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\nfish\n\n")
    plan = plan_files(ModelSpec("m", files=(str(a),), labels=str(tmp_path / "labels.txt")), 4)
    assert plan.class_names == ("cat", "dog", "bird", "fish") and plan.label_offset == 1
