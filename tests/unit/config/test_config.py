"""Experiment files: valid ones load; every bad input names the file / field and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecam.config import RunConfig, default_config_path, load_config
from edgecam.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.toml"
    p.write_text(text)
    return p


def test_quickstart_loads() -> None:
    cfg = load_config(default_config_path())
    assert [m.name for m in cfg.models] == ["tinycnn", "mobilenet_v2"]
    assert cfg.export.precisions == ("fp32", "int16", "int8")
    assert cfg.runtimes[0].name == "onnxruntime"
    assert isinstance(cfg, RunConfig)


def test_frozen() -> None:
    cfg = RunConfig()
    with pytest.raises(Exception):
        cfg.name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    "text,needle",
    [
        ('[data]\nlimt = 3\n', "unknown key data.limt; allowed keys in data: boxes_dir, canvas, copies_test, crop, digit_size, labels_csv, limit, mean, name, num_classes, path, resize, seed, std, test_fraction"),
        ('bogus = 1\n', "unknown key bogus"),
        ('[bench]\niterations = "many"\n', "bench.iterations: expected int, got str 'many'"),
        ('[[models]]\nname = "resnet9000"\n', "unknown model 'resnet9000'; known models: densenet121"),
        ('[[runtimes]]\nname = "tensorflow"\n', "unknown runtime 'tensorflow'; known runtimes: fault, litert, null, onnxruntime"),
        ('[[runtimes]]\nname = "fault"\n', "runtimes.fault: set it exactly when name = 'fault'"),
        ('[[runtimes]]\nname = "fault"\nfault = "meteor"\n', "runtimes.fault: expected one of segfault, kill, oom, hang, exit, raise, nan, got 'meteor'"),
        ('[export]\nprecisions = ["fp32", "int3"]\n', "export.precisions: expected values from fp32, int16, int8, got 'int3'"),
        ('[explain]\nmethods = ["gradcampp", "magic"]\n', "unknown CAM method 'magic'"),
        ('[export]\nformats = ["coreml"]\n', "unknown export format 'coreml'; known export formats: onnx, tflite"),
        ('[data]\nlimit = 0\n', "data.limit: expected a positive integer"),
        ('[[models]]\nweights = "x.pt"\n', "models"),
        ('name = "x"\n[data\n', "malformed TOML"),
        ('[explain]\nsaliency = "itti"\n', "unknown saliency provider 'itti'; known saliency providers: directory, fine_grained, gt_mask, spectral_residual"),
        ('[explain]\nsaliency = "directory"\n', "explain.saliency_dir: required when explain.saliency = 'directory'"),
        ('[explain]\nemd_size = 1\n', "explain.emd_size: expected 0 (off) or an integer >= 2, got 1"),
        ('[explain]\nshard_size = 0\n', "explain.shard_size: expected a positive integer, got 0"),
        ('[explain]\nbootstrap = 10\n', "explain.bootstrap: expected at least 100 resamples, got 10"),
        ('[[models]]\nname = "tinycnn"\nshift_copies = -1\n', "models.shift_copies (tinycnn): expected an integer >= 0, got -1"),
        ('[data]\ncopies_test = 0\n', "data.copies_test: expected a positive integer, got 0"),
    ],
)
def test_bad_config_is_rejected_with_the_field(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(path) in str(exc.value)
    assert needle in str(exc.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
