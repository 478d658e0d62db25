"""torchvision named weights, read only from the torch hub cache (never downloaded): a state dict saved by the
test under the file name torchvision would cache loads; a missing file names the path looked for."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import torch

from edgecam.errors import ArtifactError, ConfigError
from edgecam.models import build_model, torchvision_weights_info


@pytest.fixture()
def hub_dir(tmp_path: Path) -> Iterator[Path]:
    """A private torch hub cache for the test (restored afterwards)."""
    before = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        yield tmp_path / "hub"
    finally:
        torch.hub.set_dir(before)


def _default_url(name: str) -> str:
    import torchvision

    return torchvision.models.get_model_weights(name).DEFAULT.url


def _save_as_cached(name: str, num_classes: int, hub: Path) -> dict[str, torch.Tensor]:
    """Save a seeded random state dict where torchvision would cache `name`'s DEFAULT weights."""
    torch.manual_seed(1)
    state = build_model(name, num_classes)[0].state_dict()
    target = hub / "checkpoints" / Path(_default_url(name)).name
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, target)
    return state


def test_cached_named_weights_load_from_the_hub_cache(hub_dir: Path) -> None:
    state = _save_as_cached("squeezenet1_0", 1000, hub_dir)
    model, layer = build_model("squeezenet1_0", 1000, weights="torchvision:DEFAULT")
    loaded = model.state_dict()
    assert layer == "features.12" and set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    info = torchvision_weights_info("squeezenet1_0", "IMAGENET1K_V1")
    assert info["file"] == hub_dir / "checkpoints" / "squeezenet1_0-b66bff10.pth"
    assert info["preprocessing"] == {"resize": 256, "crop": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "interpolation": "bilinear"}
    assert info["num_classes"] == 1000 and info["weights"] == "SqueezeNet1_0_Weights.IMAGENET1K_V1"


def test_densenet_checkpoint_key_layout_is_remapped(hub_dir: Path) -> None:
    """torchvision's DenseNet files use the old `norm.1` keys; they load into `norm1` modules."""
    state = _save_as_cached("densenet121", 1000, hub_dir)
    old = {k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v for k, v in state.items()}
    assert old.keys() != state.keys()
    torch.save(old, hub_dir / "checkpoints" / Path(_default_url("densenet121")).name)
    model, _ = build_model("densenet121", 1000, weights="torchvision:DEFAULT")
    assert torch.equal(model.state_dict()["features.denseblock1.denselayer1.norm1.weight"], state["features.denseblock1.denselayer1.norm1.weight"])


def test_missing_cache_file_names_what_was_looked_for(hub_dir: Path) -> None:
    with pytest.raises(ArtifactError, match=r"not in the torch hub cache: looked for .*hub/checkpoints/mobilenet_v2-7ebf99e0.pth.*never downloads"):
        build_model("mobilenet_v2", 1000, weights="torchvision:DEFAULT")
    assert not (hub_dir / "checkpoints").exists()  # nothing was fetched


def test_named_weights_errors(hub_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown tag 'IMAGENET9K'; expected one of IMAGENET1K_V1, DEFAULT"):
        build_model("squeezenet1_0", 1000, weights="torchvision:IMAGENET9K")
    with pytest.raises(ConfigError, match=r"'tinycnn' is not a torchvision architecture; expected one of vgg16, resnet50"):
        build_model("tinycnn", 10, weights="torchvision:DEFAULT")
    _save_as_cached("squeezenet1_0", 1000, hub_dir)
    with pytest.raises(ConfigError, match=r"classify 1000 classes, the experiment 10"):
        build_model("squeezenet1_0", 10, weights="torchvision:DEFAULT")


def test_pipeline_records_the_hub_file_of_named_weights(hub_dir: Path) -> None:
    """prepare_model hashes the cached file the named weights came from (what the manifest and job keys use)."""
    import numpy as np

    from edgecam.bench.prepare import prepare_model
    from edgecam.cache import sha256_file
    from edgecam.config import ModelSpec
    from edgecam.data.datasets import Datasets

    _save_as_cached("squeezenet1_0", 1000, hub_dir)
    x, y = np.zeros((2, 3, 64, 64), np.float32), np.zeros(2, np.int64)
    data = Datasets.from_arrays(x, y, x, y, np.zeros((2, 64, 64), np.float32), ["a", "b"], "fp", 1000)
    _model, layer, meta = prepare_model(ModelSpec("squeezenet1_0", weights="torchvision:DEFAULT"), None, data)  # type: ignore[arg-type]
    cached = hub_dir / "checkpoints" / "squeezenet1_0-b66bff10.pth"
    assert meta["file"] == str(cached) and meta["sha256"] == sha256_file(cached) and meta["source"] == "torchvision:DEFAULT"
