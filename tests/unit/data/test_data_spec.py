"""The data registry and the per-kind `[data]` specs: each kind validates its own fields, rejects the
fields of other kinds by name, and `DataSpec(name=...)` / `switch_kind` pick the kind's class."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from edgecam.data import DATASETS, DataSpec, DigitsClutterDataSpec, FashionMnistDataSpec, ImageFolderDataSpec, MnistDataSpec, SamplePhotosDataSpec, load_data, switch_kind
from edgecam.data.digits_clutter import DigitsClutterSpec
from edgecam.errors import ConfigError, UnknownNameError


def test_registry_maps_each_kind_to_its_spec_class_and_loader() -> None:
    assert sorted(DATASETS.names()) == ["digits-clutter", "fashion-mnist", "image-folder", "mnist", "sample-photos"]
    assert DATASETS.get("digits-clutter").spec is DigitsClutterDataSpec
    assert DATASETS.get("mnist").spec is MnistDataSpec and DATASETS.get("fashion-mnist").spec is FashionMnistDataSpec
    assert DATASETS.get("image-folder").spec is ImageFolderDataSpec
    assert DATASETS.get("sample-photos").spec is SamplePhotosDataSpec
    for name in DATASETS:
        entry = DATASETS.get(name)
        assert entry.spec.KIND == name and callable(entry.load)


def test_unknown_kind_lists_the_known_kinds() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown dataset 'imagenet'; known datasets: digits-clutter, fashion-mnist, image-folder, mnist"):
        DATASETS.get("imagenet")
    with pytest.raises(ConfigError, match=r"data.name: unknown dataset 'imagenet'; known datasets: digits-clutter, fashion-mnist, image-folder, mnist"):
        DataSpec(name="imagenet")


def test_dataspec_picks_the_kind_class_and_keeps_the_attribute_names() -> None:
    d = DataSpec()
    assert type(d) is DigitsClutterDataSpec and isinstance(d, DataSpec)
    # data.limit unset means every test image (issue 36: a default of 200 cut a 900-image folder silently)
    assert (d.name, d.canvas, d.digit_size, d.copies_test, d.seed, d.limit, d.mean, d.std) == ("digits-clutter", 64, 24, 1, 0, None, None, None)
    f = DataSpec(name="image-folder", path="/x", boxes_dir="boxes", resize=72, crop=64)
    assert type(f) is ImageFolderDataSpec
    assert (f.path, f.resize, f.crop, f.test_fraction, f.num_classes, f.limit) == ("/x", 72, 64, 0.5, None, None)
    assert str(f.resolve(f.boxes_dir)) == "/x/boxes" and str(f.resolve("/abs/l.csv")) == "/abs/l.csv" and f.resolve(None) is None
    assert not hasattr(d, "resize") and not hasattr(f, "canvas")
    assert dataclasses.replace(f, limit=4) == DataSpec(name="image-folder", path="/x", boxes_dir="boxes", resize=72, crop=64, limit=4)
    assert pickle.loads(pickle.dumps(f)) == f and hash(f) == hash(pickle.loads(pickle.dumps(f)))


@pytest.mark.parametrize(
    "fields,needle",
    [
        ({"resize": 256}, "data.resize: not a setting of data.name = 'digits-clutter' (its settings: canvas, copies_test, digit_size, limit, mean, name, seed, std); "
                          "resize is a setting of data.name = 'image-folder'"),
        ({"test_fraction": 0.3}, "data.test_fraction: not a setting of data.name = 'digits-clutter'"),
        ({"name": "image-folder", "path": "p", "canvas": 32}, "data.canvas: not a setting of data.name = 'image-folder' (its settings: boxes_dir, calib_path, crop, jpeg_draft, labels_csv, limit, "
                                                           "max_decode_pixels, mean"),
        ({"name": "image-folder", "path": "p", "wat": 1}, "data.wat: not a setting of data.name = 'image-folder'"),
        ({"canvas": 16, "digit_size": 40}, "data.digit_size: expected an integer from 8 to data.canvas (16): the digit is drawn whole on the canvas; "
                                           "got data.digit_size = 40 with data.canvas = 16"),
        ({"canvas": 7, "digit_size": 7}, "data.canvas: expected an integer >= 8 (pixels), got 7"),
        ({"digit_size": 7}, "data.digit_size: expected an integer from 8 to data.canvas (64)"),
        ({"copies_test": 0}, "data.copies_test: expected a positive integer, got 0"),
        ({"seed": -1}, "data.seed: expected an integer >= 0, got -1"),
        ({"limit": 0}, "data.limit: expected a positive integer or nothing, got 0"),
        ({"mean": (0.5, 0.5)}, "data.mean: expected three finite numbers (one per RGB channel), got [0.5, 0.5]"),
        ({"std": (0.2, 0.0, 0.2)}, "data.std: expected three finite numbers (one per RGB channel), all > 0, got [0.2, 0.0, 0.2]"),
        ({"name": "image-folder"}, "data.path: required for data.name = 'image-folder'"),
        ({"name": "image-folder", "path": "p", "crop": 300}, "data.crop: expected at most data.resize (256)"),
        ({"name": "image-folder", "path": "p", "resize": 0}, "data.resize: expected a positive integer (pixels), got 0"),
        ({"name": "image-folder", "path": "p", "test_fraction": 1.0}, "data.test_fraction: expected a number in (0, 1), got 1.0"),
        ({"name": "image-folder", "path": "p", "num_classes": 1}, "data.num_classes: expected an integer >= 2, got 1"),
        ({"name": "image-folder", "path": "p", "max_decode_pixels": 0}, "data.max_decode_pixels: expected a positive integer (pixels), got 0"),
        ({"name": "image-folder", "path": "p", "jpeg_draft": "yes"}, "data.jpeg_draft: expected true or false, got 'yes'"),
        ({"other_kinds": {"image-folder": {"canvas": 3}}}, "data.other_kinds.image-folder.canvas: not a setting of data.name = 'image-folder'"),
        ({"other_kinds": {"image-folder": {"limit": 3}}}, "data.other_kinds.image-folder.limit: every kind has limit: set data.limit instead"),
        ({"other_kinds": {"digits-clutter": {"canvas": 32}}}, "data.other_kinds.digits-clutter: expected a table of settings of a kind other than data.name = 'digits-clutter'"),
        ({"other_kinds": {"coco": {}}}, "data.other_kinds: unknown dataset 'coco'"),
    ],
)
def test_each_kind_validates_its_own_fields(fields: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        DataSpec(**fields)
    assert needle in str(exc.value)


def test_a_kind_spec_refuses_another_kinds_name() -> None:
    with pytest.raises(ConfigError, match=r"data.name: ImageFolderDataSpec is the spec of 'image-folder', got 'digits-clutter'"):
        ImageFolderDataSpec(name="digits-clutter", path="p")


@pytest.mark.parametrize("canvas,digit_size", [(8, 8), (9, 8), (8, 9), (7, 8), (24, 24), (24, 25), (64, 24), (16, 40), (40, 16), (8, 7)])
def test_digits_clutter_spec_accepts_exactly_what_the_generator_can_build(canvas: int, digit_size: int) -> None:
    """The config-time check is the generator's own constraint (8 <= digit_size <= canvas), no more, no less."""
    try:
        DigitsClutterSpec(canvas=canvas, digit_size=digit_size)
        generator_ok = True
    except ConfigError:
        generator_ok = False
    try:
        spec = DataSpec(canvas=canvas, digit_size=digit_size)
    except ConfigError as exc:
        assert not generator_ok
        assert "data.canvas" in str(exc) and ("data.digit_size" in str(exc) or canvas < 8)
    else:
        assert generator_ok
        assert spec.generator_spec() == DigitsClutterSpec(canvas=canvas, digit_size=digit_size)
    assert generator_ok == (8 <= digit_size <= canvas)


def test_the_smallest_accepted_canvas_really_builds() -> None:
    data = load_data(DataSpec(canvas=8, digit_size=8, seed=1))
    assert data.test_x.shape[1:] == (3, 8, 8) and data.n_test == len(data.test_ids) > 0


def test_switch_kind_carries_the_shared_fields_and_the_held_settings() -> None:
    d = DataSpec(limit=7, seed=3, mean=(0.1, 0.2, 0.3), other_kinds={"image-folder": {"resize": 80, "crop": 64}})
    f = switch_kind(d, "image-folder", path="/data")
    assert type(f) is ImageFolderDataSpec
    assert (f.limit, f.seed, f.mean, f.path, f.resize, f.crop, f.other_kinds) == (7, 3, (0.1, 0.2, 0.3), "/data", 80, 64, {})
    back = switch_kind(f, "digits-clutter")
    assert back == DigitsClutterDataSpec(limit=7, seed=3, mean=(0.1, 0.2, 0.3))  # the image-folder settings are dropped
    assert switch_kind(d, "digits-clutter", limit=2) == dataclasses.replace(d, limit=2)
    with pytest.raises(ConfigError, match="data.path: required"):
        switch_kind(d, "image-folder")
