"""A real image folder end to end: scikit-image's bundled photographs (nothing downloaded) as an
ImageNet-style class tree with Pascal-VOC boxes, through training, export, ONNX Runtime, CAMs and WSOL; and
the CLI's --data / --weights / --models overrides failing before any work on what does not exist."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from edgecam.config import BenchSpec, DataSpec, ExplainSpec, ModelSpec, RunConfig, RuntimeSpec, apply_overrides, load_config
from edgecam.data.image_folder import write_skimage_folder
from edgecam.errors import ConfigError
from edgecam.exporters.base import PRECISIONS
from edgecam.models.train import TrainSpec
from conftest import edgecam

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_skimage_photos_run_end_to_end_with_boxes(session_cache: Path, tmp_path: Path) -> None:
    from edgecam.bench.sweep import run

    folder = write_skimage_folder(tmp_path / "photos", layout="tree", boxes=True)
    cfg = RunConfig(
        name="photos",
        data=DataSpec(name="image-folder", path=str(folder.images), boxes_dir=str(folder.boxes), resize=72, crop=64, test_fraction=0.5, limit=None),
        train=TrainSpec(epochs=1, batch_size=4),
        models=(ModelSpec("tinycnn"),),
        runtimes=(RuntimeSpec("onnxruntime", threads=1),),
        bench=BenchSpec(warmup=1, iterations=3, memory=False),
        explain=ExplainSpec(methods=("gradcampp",), faithfulness_images=2, emd_size=8, bootstrap=100),
    )
    cfg = cfg.replace(export=dataclasses.replace(cfg.export, precisions=("fp32", "int8"), qat_epochs=1, calib_samples=4))
    out = run(cfg, tmp_path / "run", log=lambda m: None)
    assert not out["failed"]
    rows = out["results"]
    ids = set(rows["image_id"])
    assert ids and all("/" in i for i in ids)  # ids are the images' paths relative to the folder: class/file
    assert len(rows) == len(ids) * 2 and (rows["label"] < len(folder.class_names)).all()
    assert rows["sim_gt"].notna().all()  # the boxes became masks: every photo has one
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    data = manifest["data"]
    assert data["dataset"] == "image-folder" and data["with_boxes"] == 6 and data["class_names"] == list(folder.class_names)
    assert data["preprocessing"]["resize_shorter_side"] == 72 and data["preprocessing"]["center_crop"] == 64
    assert data["normalisation"]["mean"] == [0.485, 0.456, 0.406]
    assert len(out["wsol"]) == 2


@pytest.mark.parametrize("name", ["quickstart", "digits-demo", "cam-quant-2403.09939", "pact-lowbit-2411.05858", "qxai-rogers2023", "saliency-qat-2411.05858"])
def test_shipped_configs_load(name: str) -> None:
    path = CONFIGS / f"{name}.toml"
    if not path.is_file():
        pytest.fail(f"{path} is missing")
    cfg = load_config(path)
    assert cfg.name == name
    assert set(cfg.export.precisions) <= set(PRECISIONS)


def test_cam_quant_config_has_the_papers_six_models() -> None:
    cfg = load_config(CONFIGS / "cam-quant-2403.09939.toml")
    assert [m.name for m in cfg.models] == ["vgg16", "resnet50", "densenet121", "mobilenet_v2", "squeezenet1_0", "efficientnet_b0"]
    assert cfg.export.precisions == ("fp32", "int16", "int8") and cfg.explain.methods == ("gradcampp",)


def test_overrides_name_what_does_not_exist(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "cam-quant-2403.09939.toml")
    with pytest.raises(ConfigError, match=r"--models: alexnet not in this config; its models are: vgg16, resnet50"):
        apply_overrides(cfg, models="mobilenet_v2,alexnet")
    with pytest.raises(ConfigError, match=r"--data: .*nowhere is not a folder"):
        apply_overrides(cfg, data=str(tmp_path / "nowhere"))
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "mobilenet_v2.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"no state dict for model 'squeezenet1_0' in .*: expected squeezenet1_0.pt or squeezenet1_0.pth \(found: mobilenet_v2.pt\)"):
        apply_overrides(cfg, weights=str(weights), models="mobilenet_v2,squeezenet1_0")
    two = apply_overrides(cfg, weights=str(weights), models="mobilenet_v2", data="digits-clutter")
    assert [m.weights for m in two.models] == [str(weights / "mobilenet_v2.pt")]


def test_cli_refuses_a_missing_data_folder_before_any_work(tmp_path: Path) -> None:
    proc = edgecam(["run", str(CONFIGS / "cam-quant-2403.09939.toml"), "--data", str(tmp_path / "no-such-dir"), "--out", str(tmp_path / "r")], tmp_path / "cache")
    assert proc.returncode == 2 and "no-such-dir is not a folder" in proc.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "cache").exists()
