"""What a run's stages read: `Datasets` (a train and a test `Split`, plus what describes them), which
`spec.load_data(spec)` gets from the kind's loader (registered in `spec.DATASETS`).

Pixels are read through bounded accessors: `test_shard(s0, s1)` / `iter_test_shards(size)` (a small LRU of
decoded shards), `test_batch(indices)` and `train_subset(n, seed)`. Labels, ids and has-box flags are small
and stay in memory. A split is either in memory (`ArraySplit`: digits-clutter, generated and small) or
decoded on demand (image folders); `test_x` / `train_x` / `test_masks` still give whole arrays, decoding the
split once and keeping it, for callers that need all of it (training a model on a folder does)."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MEAN", "STD", "ArraySplit", "Datasets", "Split", "TestShard", "load_data", "normalise"]

MEAN = (0.5, 0.5, 0.5)  # digits-clutter's normalisation
STD = (0.25, 0.25, 0.25)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet normalisation (image folders' default)
IMAGENET_STD = (0.229, 0.224, 0.225)

Index = Union[slice, np.ndarray]  # what Split.images / Split.masks take: a slice, or an (n,) int array


def normalise(images: np.ndarray, mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD) -> np.ndarray:
    """(x - mean) / std per channel, float32, a new array; the artifact manifest records mean and std."""
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return ((images - m) / s).astype(np.float32)


class Split(ABC):
    """One split: `labels` (N,) int64, `ids`, `has_box` (N,) bool and `input_shape` (C, H, W) in memory;
    normalised images and ground-truth masks on demand (`images`, `masks`), the whole split once through
    `all_images` (kept)."""

    labels: np.ndarray
    ids: tuple[str, ...]
    has_box: np.ndarray
    input_shape: tuple[int, int, int]

    def __len__(self) -> int:
        return len(self.ids)

    @abstractmethod
    def images(self, index: Index) -> np.ndarray:
        """Normalised float32 (n, C, H, W) images at `index`."""

    @abstractmethod
    def masks(self, index: Index) -> np.ndarray:
        """(n, H, W) float32 ground-truth masks at `index` (all zeros where `has_box` is False)."""

    @abstractmethod
    def all_images(self) -> np.ndarray:
        """Every image, normalised (decoded once and kept by lazy splits)."""

    @abstractmethod
    def all_masks(self) -> np.ndarray:
        """Every mask (N, H, W)."""


class ArraySplit(Split):
    """A split held in memory: `images` of contiguous ranges are views (no copy), of index arrays copies."""

    def __init__(self, x: np.ndarray, labels: np.ndarray, ids: Sequence[str], masks: Optional[np.ndarray] = None, has_box: Optional[np.ndarray] = None) -> None:
        self.x, self.labels, self.ids = x, np.asarray(labels), tuple(str(i) for i in ids)
        n = len(self.ids)
        self._masks = masks  # None: no ground truth (all-zero masks, made on demand)
        n_masks = n if masks is None else len(masks)
        if not len(x) == len(self.labels) == n_masks == n:
            raise ValueError(f"Datasets: images, labels, masks and ids differ in length ({len(x)}, {len(self.labels)}, {n_masks}, {n})")
        self.has_box = np.full(n, masks is not None) if has_box is None else np.asarray(has_box, dtype=bool)
        if self.has_box.shape != (n,):
            raise ValueError(f"Datasets: test_has_box must have shape ({n},), got {self.has_box.shape}")
        self.input_shape = tuple(int(d) for d in x.shape[1:])  # type: ignore[assignment]

    def images(self, index: Index) -> np.ndarray:
        return self.x[index]

    def masks(self, index: Index) -> np.ndarray:
        if self._masks is None:
            return np.zeros((len(np.arange(len(self))[index]), *self.input_shape[1:]), dtype=np.float32)
        return self._masks[index]

    def all_images(self) -> np.ndarray:
        return self.x

    def all_masks(self) -> np.ndarray:
        return self.masks(slice(None)) if self._masks is None else self._masks


@dataclass(frozen=True)
class TestShard:
    """Test images at `indices` (`start` .. `start + len - 1` for a shard; `start` is -1 for a `test_batch`
    of non-contiguous indices): normalised inputs `x` (N, C, H, W), `ids`, `labels` (N,), ground-truth
    `masks` (N, H, W) and `has_box` (N,) bool (False: no box / mask, its mask is all zeros). Treat the arrays
    as read-only: in-memory splits give views (torch warns on truly read-only arrays, so they are not
    flagged), lazy splits freshly decoded arrays that the shard cache may hand out again."""

    __test__ = False  # not a pytest test class

    start: int
    x: np.ndarray
    ids: tuple[str, ...]
    labels: np.ndarray
    masks: np.ndarray
    has_box: np.ndarray
    indices: Optional[np.ndarray] = None  # set in __post_init__ when not given

    def __post_init__(self) -> None:
        if self.indices is None:
            object.__setattr__(self, "indices", np.arange(self.start, self.start + len(self.ids), dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(eq=False)
class Datasets:
    """A run's train (training / calibration / QAT) and test (evaluated) splits, and what describes them.

    Read test images through `test_shard` / `iter_test_shards` / `test_batch` and training images through
    `train_subset`: each decodes only what it returns (image folders). `shard_cache` decoded shards are kept
    (least recently used dropped). `test_x`, `test_masks` and `train_x` materialise the whole split."""

    train: Split
    test: Split
    fingerprint: str
    n_classes: int = 10
    mean: tuple[float, ...] = MEAN
    std: tuple[float, ...] = STD
    source: dict[str, Any] = field(default_factory=dict)  # recorded in the manifest (incl. preprocessing)
    shard_cache: int = 1
    train_is_test: bool = False  # the "training" split is the evaluated images (calibration only: never train on it)
    train_labelled: bool = True  # False: calibration images without labels (PTQ only, no training or QAT)
    _shards: "OrderedDict[tuple[int, int], TestShard]" = field(default_factory=OrderedDict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.shard_cache < 0:
            raise ValueError(f"Datasets: shard_cache must be >= 0, got {self.shard_cache}")

    @classmethod
    def from_arrays(cls, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, test_masks: np.ndarray, test_ids: Sequence[str],
                    fingerprint: str, n_classes: int = 10, mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD,
                    source: Optional[dict[str, Any]] = None, test_has_box: Optional[np.ndarray] = None) -> "Datasets":
        """In-memory splits from normalised arrays (the former `Datasets(...)` arguments, in that order)."""
        train = ArraySplit(train_x, train_y, [f"train-{i:05d}" for i in range(len(train_x))])
        return cls(train, ArraySplit(test_x, test_y, test_ids, test_masks, test_has_box), fingerprint, n_classes, mean, std, dict(source or {}))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lock", None)
        state["_shards"] = OrderedDict()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- cheap, in memory --------------------------------------------------------------------------------

    @property
    def n_test(self) -> int:
        """Number of test images."""
        return len(self.test)

    @property
    def n_train(self) -> int:
        """Number of training images."""
        return len(self.train)

    @property
    def test_labels(self) -> np.ndarray:
        """(n_test,) int64 labels of the test split."""
        return self.test.labels

    test_y = test_labels  # the former name

    @property
    def train_y(self) -> np.ndarray:
        """(n_train,) int64 labels of the training split."""
        return self.train.labels

    @property
    def test_ids(self) -> tuple[str, ...]:
        """The test images' ids (image folders: paths relative to the folder)."""
        return self.test.ids

    @property
    def test_has_box(self) -> np.ndarray:
        """(n_test,) bool: which test images have a ground-truth box / mask."""
        return self.test.has_box

    @property
    def has_ground_truth(self) -> bool:
        """Whether any test image has a ground-truth box / mask (localisation and "v. mask" metrics)."""
        return bool(np.any(self.test.has_box))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one normalised input."""
        return self.test.input_shape

    # -- bounded decoding --------------------------------------------------------------------------------

    def test_shard(self, s0: int, s1: int) -> TestShard:
        """Test images s0 .. s1 - 1 (0 <= s0 <= s1 <= n_test), decoded now unless the shard cache has them."""
        if not 0 <= s0 <= s1 <= self.n_test:
            raise IndexError(f"test shard {s0}:{s1} outside 0:{self.n_test}")
        key = (s0, s1)
        with self._lock:
            if key in self._shards:
                self._shards.move_to_end(key)
                return self._shards[key]
            while self._shards and len(self._shards) >= self.shard_cache:  # evict first: one shard less at the peak
                self._shards.popitem(last=False)
        t, sl = self.test, slice(s0, s1)
        shard = TestShard(s0, t.images(sl), t.ids[s0:s1], t.labels[sl], t.masks(sl), t.has_box[sl])
        if self.shard_cache:
            with self._lock:
                self._shards[key] = shard
                while len(self._shards) > self.shard_cache:
                    self._shards.popitem(last=False)
        return shard

    def iter_test_shards(self, shard_size: int, stop: Optional[int] = None) -> Iterator[TestShard]:
        """`test_shard`s of `shard_size` images covering test images 0 .. `stop` - 1 (default: all)."""
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        stop = self.n_test if stop is None else min(int(stop), self.n_test)
        for s0 in range(0, stop, shard_size):
            yield self.test_shard(s0, min(stop, s0 + shard_size))

    def test_batch(self, indices: Sequence[int] | np.ndarray) -> TestShard:
        """The test images at `indices` (any order, repeats allowed), decoded now (not cached): e.g. the
        bounded input set of a timing or memory pass."""
        idx = _checked(indices, self.n_test, "test")
        t = self.test
        contiguous = len(idx) > 0 and bool(np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))))
        return TestShard(int(idx[0]) if contiguous else -1, t.images(idx), tuple(t.ids[i] for i in idx), t.labels[idx], t.masks(idx), t.has_box[idx], idx)

    def train_indices(self, n: int, seed: int = 0) -> np.ndarray:
        """The seeded subset `train_subset` decodes: `default_rng(seed).permutation(n_train)[:n]`, in that
        order (the rows the exporters' `calibration_subset` picks from the whole split with the same seed)."""
        if n < 1:
            raise ValueError(f"train_subset: n must be >= 1, got {n}")
        return np.random.default_rng(seed).permutation(self.n_train)[:n].astype(np.int64)

    def train_subset(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(x, y): `n` seeded training images (normalised, (n, C, H, W)) and their labels, decoding only those;
        all of them (permuted) when `n` >= n_train. For calibration and QAT."""
        idx = self.train_indices(n, seed)
        return self.train.images(idx), self.train.labels[idx]

    def calibration_arrays(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Training images for calibration and QAT: the whole split when it is in memory already (generated
        data: the exporters' seeded selections stay what they were), else `train_subset(n, seed)` so that a
        folder of thousands of 224 px images never decodes more than `n` of them."""
        if isinstance(self.train, ArraySplit) or self.n_train <= n:
            return self.train_x, self.train_y
        return self.train_subset(n, seed)

    # -- whole splits (decoded once, kept) ---------------------------------------------------------------

    @property
    def test_x(self) -> np.ndarray:
        """Every test image, normalised (image folders: decodes the whole split once and keeps it)."""
        return self.test.all_images()

    @property
    def test_masks(self) -> np.ndarray:
        """Every test mask (N, H, W) (image folders: drawn from the boxes, no pixel decoded)."""
        return self.test.all_masks()

    @property
    def train_x(self) -> np.ndarray:
        """Every training image, normalised: training a model on the data needs the whole split (image
        folders: decoded once and kept). Calibration and QAT should use `train_subset`."""
        return self.train.all_images()

    def with_test_x(self, x: np.ndarray) -> "Datasets":
        """A copy whose test images are the normalised array `x` (same length), e.g. poisoned inputs."""
        t = self.test
        if len(x) != self.n_test:
            raise ValueError(f"with_test_x: expected {self.n_test} images, got {len(x)}")
        test = ArraySplit(x, t.labels, t.ids, t.all_masks(), t.has_box)
        return Datasets(self.train, test, self.fingerprint, self.n_classes, self.mean, self.std, dict(self.source), self.shard_cache)


def _checked(indices: Sequence[int] | np.ndarray, n: int, what: str) -> np.ndarray:
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(idx) and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"{what} indices outside 0:{n}: {idx[(idx < 0) | (idx >= n)][:5].tolist()}")
    return idx
