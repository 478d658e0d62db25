"""Model registry: the seven architectures build with their CAM layers; custom factories and weights files."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from edgecam.errors import ArtifactError, ConfigError
from edgecam.models import MODELS, build_model


@pytest.mark.parametrize("name", ["tinycnn", "mnistcnn", "mobilenet_v2", "squeezenet1_0", "efficientnet_b0", "resnet50", "densenet121", "vgg16", "efficientnet_lite0"])
def test_registry_models_build_with_target_layer(name: str) -> None:
    model, layer = build_model(name, 7)
    feats: list[torch.Tensor] = []
    model.get_submodule(layer).register_forward_hook(lambda m, i, o: feats.append(o))
    with torch.no_grad():
        y = model(torch.zeros(1, 1, 28, 28) if name == "mnistcnn" else torch.zeros(1, 3, 64, 64))
    assert y.shape == (1, 7)
    assert feats[0].ndim == 4 and feats[0].shape[-1] >= 2  # a spatial map to explain


def test_custom_factory_with_state_dict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mymodels.py").write_text(
        "import torch\n"
        "def small(num_classes):\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model, layer = build_model("mymodels:small", 3, target_layer="1")
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    loaded, _ = build_model("mymodels:small", 3, weights=weights, target_layer="1")
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    sys.modules.pop("mymodels", None)


def test_bad_weights_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not found: .*missing.pt"):
        build_model("tinycnn", 10, weights=tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage")
    with pytest.raises(ArtifactError, match="corrupt.pt.*corrupt"):
        build_model("tinycnn", 10, weights=corrupt)
    other = tmp_path / "other.pt"
    torch.save(build_model("tinycnn", 5)[0].state_dict(), other)
    with pytest.raises(ArtifactError, match="does not fit model 'tinycnn'"):
        build_model("tinycnn", 10, weights=other)


def test_custom_model_errors() -> None:
    with pytest.raises(ConfigError, match=r"no module 'no_such_module_xyz': edgecam looked for no_such_module_xyz.py .* working directory .*PYTHONPATH"):
        build_model("no_such_module_xyz:f", 10, target_layer="x")
    with pytest.raises(ConfigError, match="target_layer"):
        build_model("torch.nn:Identity", 10)
    with pytest.raises(ConfigError, match="not a submodule"):
        build_model("tinycnn", 10, target_layer="features.99")
    with pytest.raises(ConfigError, match="is a float, not a factory"):
        build_model("math:pi", 10, target_layer="x")
    with pytest.raises(ConfigError, match=r"capwords\(num_classes=10\) failed: TypeError"):
        build_model("string:capwords", 10, target_layer="x")  # a callable that is no model factory
    with pytest.raises(ConfigError, match="returned a dict, not a torch.nn.Module"):
        build_model("builtins:dict", 10, target_layer="x")
    with pytest.raises(ConfigError, match=r"module 'this' \(.*this.py\) has no 'f'"):
        build_model("this:f", 10, target_layer="x")  # a module with an import side effect (it prints the Zen) and no `f`


def test_a_factory_module_in_the_working_directory_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`edgecam` is a console script: its search path lacks the folder it runs in, so a user's `mynet.py` there
    was "No module named 'mynet'". The working directory is searched (after installed packages); a module that
    the user's module imports and that is missing is named as such, not as the user's module."""
    (tmp_path / "edgecam_cwd_net.py").write_text("import torch\n\ndef build(num_classes):\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, num_classes))\n")
    (tmp_path / "edgecam_cwd_broken.py").write_text("import edgecam_not_installed_dep\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    model = build_model("edgecam_cwd_net:build", 7, target_layer="0")[0]
    assert model(torch.zeros(1, 3, 8, 8)).shape == (1, 7)
    with pytest.raises(ConfigError, match=r"importing 'edgecam_cwd_broken' failed: No module named 'edgecam_not_installed_dep'"):
        build_model("edgecam_cwd_broken:build", 7, target_layer="0")


def test_registry_has_the_papers_architectures() -> None:
    assert set(MODELS.names()) == {"tinycnn", "mnistcnn", "vgg16", "resnet50", "densenet121", "mobilenet_v2", "squeezenet1_0", "efficientnet_b0", "efficientnet_lite0"}


def test_shifted_copies_are_seeded_translations() -> None:
    from edgecam.models.train import shifted_copies

    rng = np.random.default_rng(0)
    x = rng.random((5, 3, 16, 16)).astype(np.float32)
    a = shifted_copies(x, 2, 3, seed=7)
    assert a.shape == (10, 3, 16, 16) and a.dtype == x.dtype
    assert np.array_equal(a, shifted_copies(x, 2, 3, seed=7))
    assert not np.array_equal(a, shifted_copies(x, 2, 3, seed=8))
    for i, img in enumerate(a):  # each copy is its source translated by at most 3 px (edge-padded)
        src = x[i % 5]
        padded = np.pad(src, ((0, 0), (3, 3), (3, 3)), mode="edge")
        hits = [(dy, dx) for dy in range(7) for dx in range(7) if np.array_equal(padded[:, dy : dy + 16, dx : dx + 16], img)]
        assert hits, f"copy {i} is not a translation of image {i % 5}"
    assert np.array_equal(shifted_copies(x, 1, 0, seed=0), x)  # no shift: identity


@pytest.mark.parametrize("damage", ["flip", "truncate", "meta"])
def test_a_rotted_cached_checkpoint_is_trained_again(tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    """A cached checkpoint whose bytes no longer match its recorded SHA-256 (a bit flip, a half copy) or whose
    meta.json is garbage is retrained and replaced, as a rotted artifact is rebuilt; never reported forever."""
    import json

    import torch

    from edgecam.cache import sha256_file
    from edgecam.models.train import cached_checkpoint

    trained: list[int] = []

    def train(model: torch.nn.Module) -> dict[str, Any]:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(0.5)
        trained.append(1)
        return {"epochs": 1}

    def build() -> torch.nn.Module:
        return torch.nn.Linear(4, 3)

    key = {"model": "lin", "data": "x"}
    _, ckpt, meta, now = cached_checkpoint(key, tmp_path, build, train)
    assert now and trained == [1]
    _, _, _, now = cached_checkpoint(key, tmp_path, build, train)
    assert not now and trained == [1]  # an intact cache entry is used
    raw = bytearray(ckpt.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0x10
        ckpt.write_bytes(bytes(raw))
    elif damage == "truncate":
        ckpt.write_bytes(bytes(raw[: len(raw) // 3]))
    else:
        (ckpt.parent / "meta.json").write_text("{not json")
    with caplog.at_level("WARNING"):
        model, ckpt2, meta2, now = cached_checkpoint(key, tmp_path, build, train)
    assert now and trained == [1, 1] and "training it again" in caplog.text
    assert meta2["sha256"] == sha256_file(ckpt2) and json.loads((ckpt2.parent / "meta.json").read_text())["sha256"] == meta2["sha256"]
    assert torch.all(model.weight == 0.5)
