"""Bad input is rejected before any work (training, export, device runs) starts, naming the model, the file
and what was expected."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgecam.bench.prepare import preflight
from edgecam.config import ModelSpec, RunConfig
from edgecam.errors import ArtifactError, ConfigError

HERE = Path(__file__).parent


def gray_model(num_classes: int) -> Any:
    """A model built for 1-channel input: the 3-channel data does not fit it."""
    from torch import nn

    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


def five_classes(num_classes: int) -> Any:
    """A model that ignores the dataset's class count."""
    from torch import nn

    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))


def _cfg(**model: Any) -> RunConfig:
    return RunConfig(models=(ModelSpec(**model),))


def test_model_that_does_not_take_the_datas_input_is_refused(data) -> None:
    with pytest.raises(ConfigError, match=r"test_preflight:gray_model\): the model does not accept the data's input of shape \(3, 64, 64\)"):
        preflight(_cfg(name="test_preflight:gray_model", target_layer="0"), data)


def test_model_with_the_wrong_class_count_is_refused(data) -> None:
    with pytest.raises(ConfigError, match=r"expected logits of shape \(batch, 10\) for the data's 10 classes, got \(1, 5\)"):
        preflight(_cfg(name="test_preflight:five_classes", target_layer="0"), data)


def test_truncated_state_dict_is_refused_naming_the_file(data, tmp_path: Path) -> None:
    import torch

    from edgecam.models import build_model

    good = tmp_path / "tinycnn.pt"
    torch.save(build_model("tinycnn", 10)[0].state_dict(), good)
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    preflight(_cfg(name="tinycnn", weights=str(good)), data)  # the intact file passes
    with pytest.raises(ArtifactError, match=f"weights file {bad} for 'tinycnn' is corrupt"):
        preflight(_cfg(name="tinycnn", weights=str(bad)), data)


def test_cli_refuses_before_creating_the_run_dir(tmp_path: Path) -> None:
    cfg = tmp_path / "gray.toml"
    cfg.write_text('[[models]]\nname = "test_preflight:gray_model"\ntarget_layer = "0"\n')
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "EDGECAM_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "edgecam.cli", "run", str(cfg), "--out", str(out), "--allow-code"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "does not accept the data's input of shape (3, 64, 64)" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and not (tmp_path / "cache" / "checkpoints").exists()  # nothing trained, nothing written


def _folder(tmp_path: Path, per_class: int, calib: str | None = None) -> Any:
    from PIL import Image

    from edgecam.data import load_data
    from edgecam.config import DataSpec

    for k, cls in enumerate(["a", "b"]):
        for j in range(per_class):
            (tmp_path / "imgs" / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (36, 36), (90 * k + j, 40, 200)).save(tmp_path / "imgs" / cls / f"{j}.png")
    return load_data(DataSpec(name="image-folder", path=str(tmp_path / "imgs"), resize=32, crop=32, limit=None, calib_path=calib))


def test_training_on_the_evaluated_images_is_refused_before_work(tmp_path: Path) -> None:
    import dataclasses

    one = _folder(tmp_path, 1)
    assert one.train_is_test
    cfg = RunConfig(models=(ModelSpec("tinycnn"),))  # no weights: it would be trained
    with pytest.raises(ConfigError, match=r"imgs: no class has two images, so the only images to train on are the evaluated ones; models.name = 'tinycnn' has no weights"):
        preflight(cfg, one)
    qat = RunConfig(models=(ModelSpec("test_preflight:two_classes", target_layer="0", pretrained=True),))
    with pytest.raises(ConfigError, match=r'export.quant = "qat" fine-tunes the quantized models'):
        preflight(qat, one)
    ptq = qat.replace(export=dataclasses.replace(qat.export, quant="ptq"))
    preflight(ptq, one)  # PTQ calibration on the evaluated images is allowed (and recorded)


def test_unlabelled_calibration_folder_serves_ptq_only(tmp_path: Path) -> None:
    import dataclasses

    from PIL import Image

    (tmp_path / "cal").mkdir()
    for j in range(3):
        Image.new("RGB", (36, 36), (j, 9, 9)).save(tmp_path / "cal" / f"{j}.jpg")
    data = _folder(tmp_path, 2, str(tmp_path / "cal"))
    cfg = RunConfig(models=(ModelSpec("test_preflight:two_classes", target_layer="0", pretrained=True),))
    with pytest.raises(ConfigError, match=r"data.calib_path \(.*cal\): its images have no labels .*Unlabelled images serve PTQ calibration only"):
        preflight(cfg, data)
    preflight(cfg.replace(export=dataclasses.replace(cfg.export, quant="ptq")), data)


def two_classes(num_classes: int) -> Any:
    """A 'pretrained' custom factory: seeded weights it returns as they are."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


def test_packaged_weights_with_another_normalisation_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgecam.config import DataSpec
    from edgecam.data import load_data

    monkeypatch.setenv("EDGECAM_CACHE_DIR", str(tmp_path / "cache"))
    cfg = RunConfig(models=(ModelSpec("efficientnet_lite0", pretrained=True),))
    imagenet = load_data(DataSpec(name="sample-photos", views=1, calib_views=1))  # torchvision's ImageNet mean / std by default
    with pytest.raises(ConfigError, match=r"expect inputs normalised with mean \[0.498039, 0.498039, 0.498039\], std \[0.501961, .*the data uses mean \[0.485000"):
        preflight(cfg, imagenet)
    lite = load_data(DataSpec(name="sample-photos", views=1, calib_views=1, mean=(127 / 255,) * 3, std=(128 / 255,) * 3))
    preflight(cfg, lite)
