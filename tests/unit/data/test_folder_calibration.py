"""Image folders as sample sets are laid out: symlinked files, one image per class, a separate calibration
folder (`data.calib_path`); and the bundled `sample-photos` kind (real photos, ImageNet labels, boxes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecam.config import DataSpec
from edgecam.data import load_data
from edgecam.data.image_folder import index_image_folder
from edgecam.errors import ConfigError


def _img(path: Path, value: int = 0, size: tuple[int, int] = (40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, 90)).save(path)
    return path


def _folder(data: Path, spec_kwargs: dict) -> DataSpec:
    return DataSpec(name="image-folder", path=str(data), resize=32, crop=32, limit=None, **spec_kwargs)


def test_symlinked_files_are_followed_in_both_layouts(tmp_path: Path) -> None:
    store = tmp_path / "store"  # where the bytes are, outside the folder (the ImageNet layout)
    tree, flat = tmp_path / "tree", tmp_path / "flat"
    for k, cls in enumerate(["cat", "dog"]):
        for j in range(2):
            src = _img(store / f"{cls}{j}.png", 40 * k + j)
            (tree / cls).mkdir(parents=True, exist_ok=True)
            (tree / cls / f"{j}.png").symlink_to(src)
            flat.mkdir(exist_ok=True)
            (flat / f"{cls}{j}.png").symlink_to(src)
    (flat / "labels.csv").write_text("file,label\n" + "".join(f"{c}{j}.png,{c}\n" for c in ["cat", "dog"] for j in range(2)))
    a = index_image_folder(tree)
    b = index_image_folder(flat, flat / "labels.csv")
    assert len(a) == len(b) == 4 and a.class_names == b.class_names == ("cat", "dog")
    assert [r.label for r in a.records] == [r.label for r in b.records] == [0, 0, 1, 1]
    (flat / "bad.csv").write_text("file,label\n../store/cat0.png,cat\n")
    with pytest.raises(ConfigError, match=r"bad.csv line 2: '../store/cat0.png' is outside .*without '\.\.'"):
        index_image_folder(flat, flat / "bad.csv")


def test_one_image_per_class_is_evaluated_and_calibrates_on_itself(tmp_path: Path) -> None:
    for k, cls in enumerate(["a", "b", "c"]):
        _img(tmp_path / "one" / cls / "x.png", 60 * k)
    data = load_data(_folder(tmp_path / "one", {}))
    assert data.n_test == 3 and data.n_train == 3 and data.train_is_test
    assert data.source["calibration"]["from"].startswith("the evaluated images")
    assert data.train.ids == data.test.ids  # calibration reads the evaluated images themselves


def test_a_class_with_one_image_beside_larger_classes(tmp_path: Path) -> None:
    _img(tmp_path / "mix" / "solo" / "x.png", 10)
    for j in range(4):
        _img(tmp_path / "mix" / "many" / f"{j}.png", 50 + j)
    data = load_data(_folder(tmp_path / "mix", {}))
    assert not data.train_is_test and data.n_train >= 1
    assert "solo/x.png" in data.test_ids  # evaluated, never held out for calibration only


def test_calibration_folder_labelled_or_not(tmp_path: Path) -> None:
    for k, cls in enumerate(["a", "b"]):
        _img(tmp_path / "eval" / cls / "x.png", 60 * k)
        for j in range(3):
            _img(tmp_path / "cal" / cls / f"{j}.png", 60 * k + j)
            _img(tmp_path / "loose" / f"{cls}{j}.jpg", 60 * k + j)
    labelled = load_data(_folder(tmp_path / "eval", {"calib_path": str(tmp_path / "cal")}))
    assert labelled.n_test == 2 and labelled.n_train == 6 and labelled.train_labelled and not labelled.train_is_test
    assert sorted(labelled.train_y.tolist()) == [0, 0, 0, 1, 1, 1]
    loose = load_data(_folder(tmp_path / "eval", {"calib_path": str(tmp_path / "loose")}))
    assert loose.n_train == 6 and not loose.train_labelled and set(loose.train_y.tolist()) == {-1}
    assert loose.fingerprint != labelled.fingerprint
    assert loose.train_subset(2, 0)[0].shape == (2, 3, 32, 32)
    with pytest.raises(ConfigError, match=r"data.calib_path: .*nowhere is not a folder"):
        load_data(_folder(tmp_path / "eval", {"calib_path": str(tmp_path / "nowhere")}))
    (tmp_path / "void").mkdir()
    with pytest.raises(ConfigError, match=r"data.calib_path: .*void holds no image"):
        load_data(_folder(tmp_path / "eval", {"calib_path": str(tmp_path / "void")}))


def test_sample_photos_are_real_imagenet_labelled_views_with_boxes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgecam.data.sample_photos import PHOTOS, imagenet_class_names

    monkeypatch.setenv("EDGECAM_CACHE_DIR", str(tmp_path / "cache"))
    data = load_data(DataSpec(name="sample-photos", views=3, calib_views=2, limit=None))
    names = imagenet_class_names()
    assert data.n_classes == 1000 and len(set(names)) == 1000
    assert data.n_test == 3 * len(PHOTOS) and data.n_train == 2 * len(PHOTOS)
    assert sorted(set(data.test_y.tolist())) == sorted(p.label for p in PHOTOS) and data.train_labelled
    assert data.test_has_box.sum() >= len(PHOTOS)  # every original photo has its box; crops keep theirs when it is in view
    shard = data.test_batch(list(range(data.n_test)))
    assert shard.x.shape == (data.n_test, 3, 224, 224)
    for i in np.flatnonzero(shard.has_box):
        assert 0 < shard.masks[i].mean() <= 1.0
    again = load_data(DataSpec(name="sample-photos", views=3, calib_views=2, limit=None))
    assert again.fingerprint == data.fingerprint  # written once, the same bytes
    with pytest.raises(ConfigError, match="data.views: expected a positive integer"):
        DataSpec(name="sample-photos", views=0)
