"""What a run's stages read: normalised train / test arrays (`Datasets`), test images shard by shard
(`Datasets.test_shard`), and `load_data(spec)`, which dispatches to the kind's loader through `DATASETS`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from edgecam.data.spec import DATASETS, DataSpec

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MEAN", "STD", "Datasets", "TestShard", "load_data", "normalise"]

MEAN = (0.5, 0.5, 0.5)  # digits-clutter's normalisation
STD = (0.25, 0.25, 0.25)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet normalisation (image folders' default)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalise(images: np.ndarray, mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD) -> np.ndarray:
    """(x - mean) / std per channel, float32, a new array; the artifact manifest records mean and std."""
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return ((images - m) / s).astype(np.float32)


@dataclass(frozen=True)
class TestShard:
    """Test images `start` .. `start + len - 1`: normalised inputs `x` (N, C, H, W), `ids`, `labels` (N,),
    ground-truth `masks` (N, H, W) and `has_box` (N,) bool (False: no box / mask, its mask is all zeros).
    Treat the arrays as read-only: today they are views of the in-memory split (torch warns on truly
    read-only arrays, so they are not flagged), later freshly decoded shards."""

    __test__ = False  # not a pytest test class

    start: int
    x: np.ndarray
    ids: tuple[str, ...]
    labels: np.ndarray
    masks: np.ndarray
    has_box: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Datasets:
    """Normalised train (training / calibration / QAT) and test (evaluated) images, and what describes them.

    `test_has_box` (N,) bool says which test images have a ground-truth box / mask (None: all of them).
    Stages should read test images through `test_shard`: the arrays are in memory today, but shards will
    be decoded lazily."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    test_masks: np.ndarray
    test_ids: list[str]
    fingerprint: str
    n_classes: int = 10
    mean: tuple[float, ...] = MEAN
    std: tuple[float, ...] = STD
    source: dict[str, Any] = field(default_factory=dict)  # recorded in the manifest (incl. preprocessing)
    test_has_box: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        n = len(self.test_ids)
        if not len(self.test_x) == len(self.test_y) == len(self.test_masks) == n:
            raise ValueError(f"Datasets: test_x, test_y, test_masks and test_ids differ in length ({len(self.test_x)}, {len(self.test_y)}, {len(self.test_masks)}, {n})")
        has_box = np.ones(n, dtype=bool) if self.test_has_box is None else np.asarray(self.test_has_box, dtype=bool)
        if has_box.shape != (n,):
            raise ValueError(f"Datasets: test_has_box must have shape ({n},), got {has_box.shape}")
        self.test_has_box = has_box

    @property
    def n_test(self) -> int:
        """Number of test images."""
        return len(self.test_ids)

    @property
    def has_ground_truth(self) -> bool:
        """Whether any test image has a ground-truth box / mask (localisation and "v. mask" metrics)."""
        return bool(np.any(self.test_has_box))

    def test_shard(self, s0: int, s1: int) -> TestShard:
        """Test images s0 .. s1 - 1 (0 <= s0 <= s1 <= n_test)."""
        if not 0 <= s0 <= s1 <= self.n_test:
            raise IndexError(f"test shard {s0}:{s1} outside 0:{self.n_test}")
        assert self.test_has_box is not None  # set in __post_init__
        return TestShard(s0, self.test_x[s0:s1], tuple(self.test_ids[s0:s1]), self.test_y[s0:s1], self.test_masks[s0:s1], self.test_has_box[s0:s1])


def load_data(spec: DataSpec) -> Datasets:
    """The dataset `spec` describes, normalised with its mean / std, by its kind's loader. Bad folders, CSVs,
    box files and images that do not decode fail here, before any training or export, naming the file."""
    return DATASETS.get(spec.name).load(spec)
