"""Image-folder datasets: both layouts on scikit-image's bundled photos, torchvision-equal preprocessing,
boxes mapped with the pixels, and bad input rejected naming the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecam.data.image_folder import (
    SKIMAGE_PHOTOS,
    Preprocessing,
    index_image_folder,
    load_image_folder,
    stratified_split,
    voc_xml,
    write_skimage_folder,
)
from edgecam.errors import ConfigError


@pytest.fixture(scope="module")
def skimage_tree(tmp_path_factory: pytest.TempPathFactory):
    return write_skimage_folder(tmp_path_factory.mktemp("tree"), layout="tree")


@pytest.fixture(scope="module")
def skimage_csv(tmp_path_factory: pytest.TempPathFactory):
    return write_skimage_folder(tmp_path_factory.mktemp("csv"), layout="csv")


def test_tree_layout_loads_the_photos_with_boxes(skimage_tree) -> None:
    d = load_image_folder(skimage_tree.images, boxes_dir=skimage_tree.boxes, resize=72, crop=64)
    assert d.class_names == ["cat", "cup", "motorcycle", "person", "rocket"]  # sorted folder names
    assert d.images.shape == (len(SKIMAGE_PHOTOS), 3, 64, 64) and d.images.dtype == np.float32
    assert 0.0 <= d.images.min() and d.images.max() <= 1.0 and d.images.std() > 0.1
    assert d.ids == sorted(d.ids) and "person/astronaut.JPEG" in d.ids  # relative POSIX paths
    expected = {f"{cls}/{fname}": cls for _f, cls, fname, _b in SKIMAGE_PHOTOS}
    assert [d.class_names[y] for y in d.labels] == [expected[i] for i in d.ids]
    assert d.has_box.all() and all(len(b) == 1 for b in d.boxes)
    assert d.masks.shape == (len(d), 64, 64) and set(np.unique(d.masks)) == {0.0, 1.0}
    rocket = d.ids.index("rocket/rocket.jpg")
    assert 0.02 < d.masks[rocket].mean() < 0.25  # the slim rocket covers a small part of the crop
    cam = d.ids.index("person/camera.png")  # grayscale photo, converted to RGB
    assert np.array_equal(d.images[cam, 0], d.images[cam, 1]) and np.array_equal(d.images[cam, 1], d.images[cam, 2])
    assert d.preprocessing["resize_shorter_side"] == 72 and d.preprocessing["center_crop"] == 64
    assert d.source["layout"] == "tree" and d.source["with_boxes"] == len(d)


def test_csv_layout_gives_the_same_pixels_and_labels(skimage_tree, skimage_csv) -> None:
    tree = load_image_folder(skimage_tree.images, boxes_dir=skimage_tree.boxes, resize=72, crop=64)
    flat = load_image_folder(skimage_csv.images, labels_csv=skimage_csv.labels_csv, boxes_dir=skimage_csv.boxes, resize=72, crop=64)
    assert flat.class_names == tree.class_names and flat.source["layout"] == "csv"
    by_name = {Path(i).name: k for k, i in enumerate(tree.ids)}
    for k, image_id in enumerate(flat.ids):
        t = by_name[image_id]
        assert flat.labels[k] == tree.labels[t]
        np.testing.assert_array_equal(flat.images[k], tree.images[t])
        np.testing.assert_array_equal(flat.masks[k], tree.masks[t])


def test_preprocessing_equals_torchvision_resize_and_center_crop(tmp_path: Path) -> None:
    from torchvision import transforms

    rng = np.random.default_rng(0)
    for size in ((97, 53), (40, 120), (64, 64)):
        img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        path = tmp_path / "c" / f"{size[0]}x{size[1]}.png"
        path.parent.mkdir(exist_ok=True)
        img.save(path)
        ours = load_image_folder(tmp_path, resize=36, crop=32)
        ref = transforms.Compose([transforms.Resize(36), transforms.CenterCrop(32), transforms.ToTensor()])(img).numpy()
        np.testing.assert_allclose(ours.images[ours.ids.index(f"c/{path.name}")], ref, atol=1e-6)


def test_boxes_follow_the_pixels_through_resize_and_crop(tmp_path: Path) -> None:
    """A red rectangle drawn where the box says: after preprocessing the mask covers exactly the red pixels."""
    (tmp_path / "img" / "a").mkdir(parents=True)
    (tmp_path / "xml").mkdir()
    pixels = np.zeros((100, 200, 3), dtype=np.uint8)
    pixels[20:80, 60:140, 0] = 255  # box (60, 20, 140, 80)
    pixels[:, 0:20, 1] = 255  # green strip that the centre crop removes
    Image.fromarray(pixels).save(tmp_path / "img" / "a" / "red.png")
    Image.fromarray(pixels).save(tmp_path / "img" / "a" / "nobox.png")
    objects = [("thing", (60, 20, 140, 80)), ("gone", (0, 0, 20, 100))]  # the second lies outside the crop
    (tmp_path / "xml" / "red.xml").write_text(voc_xml("red.png", 200, 100, objects))
    d = load_image_folder(tmp_path / "img", boxes_dir=tmp_path / "xml", resize=50, crop=40)
    red, nobox = d.ids.index("a/red.png"), d.ids.index("a/nobox.png")
    # resize 200x100 -> 100x50 (x0.5), centre crop 40: left 30, top 5 -> (60,20,140,80) -> (0,5,40,35)
    np.testing.assert_allclose(d.boxes[red], [[0, 5, 40, 35]])
    redness = d.images[red, 0]
    assert np.array_equal(d.masks[red] == 1, redness > 0.5)
    assert d.images[red, 1].max() == 0.0  # the green strip is outside the crop
    assert d.has_box.tolist()[red] and not d.has_box[nobox] and d.masks[nobox].sum() == 0 and d.boxes[nobox].shape == (0, 4)


def test_union_of_two_boxes_and_rgba_input(tmp_path: Path) -> None:
    (tmp_path / "img" / "k").mkdir(parents=True)
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., 2] = 200
    rgba[..., 3] = 10  # nearly transparent: alpha is dropped, not composited
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "img" / "k" / "x.png")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.xml").write_text(voc_xml("x.png", 64, 64, [("k", (0, 0, 10, 10)), ("k", (30, 30, 64, 40))]))
    d = load_image_folder(tmp_path / "img", boxes_dir=tmp_path / "b", resize=64, crop=64)
    assert d.images.shape == (1, 3, 64, 64)
    np.testing.assert_allclose(d.images[0, 2], 200 / 255, atol=1e-6)
    assert d.masks[0].sum() == 10 * 10 + 34 * 10 and len(d.boxes[0]) == 2


def test_fingerprint_covers_files_boxes_and_preprocessing(tmp_path: Path) -> None:
    paths = write_skimage_folder(tmp_path, layout="tree")
    a = load_image_folder(paths.images, boxes_dir=paths.boxes, resize=40, crop=32)
    assert load_image_folder(paths.images, boxes_dir=paths.boxes, resize=40, crop=32).fingerprint == a.fingerprint
    assert load_image_folder(paths.images, boxes_dir=paths.boxes, resize=48, crop=32).fingerprint != a.fingerprint
    assert load_image_folder(paths.images, resize=40, crop=32).fingerprint != a.fingerprint
    xml = paths.boxes / "rocket.xml"
    xml.write_text(xml.read_text().replace("<xmin>300</xmin>", "<xmin>290</xmin>"))
    assert load_image_folder(paths.images, boxes_dir=paths.boxes, resize=40, crop=32).fingerprint != a.fingerprint


def test_limit_takes_images_round_robin_over_classes(tmp_path: Path) -> None:
    for cls, n in (("a", 5), ("b", 1), ("c", 3)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.new("RGB", (8, 8), (i * 10, 0, 0)).save(tmp_path / cls / f"{i}.png")
    idx = index_image_folder(tmp_path, limit=5)
    assert [r.id for r in idx.records] == ["a/0.png", "a/1.png", "b/0.png", "c/0.png", "c/1.png"]
    assert len(index_image_folder(tmp_path, limit=100)) == 9


def test_class_names_fix_the_label_indices(tmp_path: Path) -> None:
    for cls in ("zebra", "ant"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / cls / "x.png")
    idx = index_image_folder(tmp_path, class_names=["zebra", "ant", "unused"])
    assert {r.id: r.label for r in idx.records} == {"ant/x.png": 1, "zebra/x.png": 0}
    with pytest.raises(ConfigError, match=r"class folder\(s\) zebra not among the class names"):
        index_image_folder(tmp_path, class_names=["ant"])


def test_csv_integer_labels_and_subfolders(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("p.png", "sub/q.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    (tmp_path / "l.csv").write_text("Filename,Class\np.png,2\nsub/q.png,0\n")
    idx = index_image_folder(tmp_path, labels_csv=tmp_path / "l.csv")
    assert idx.class_names == ("0", "1", "2") and [(r.id, r.label) for r in idx.records] == [("p.png", 2), ("sub/q.png", 0)]


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)


@pytest.mark.parametrize(
    ("setup", "kwargs", "message"),
    [
        (lambda p: None, {"root": "missing"}, r"image folder .*missing: not found"),
        (lambda p: (p / "empty").mkdir(), {"root": "empty"}, r"empty: empty; expected ROOT/<class>/<image>"),
        (lambda p: _img(p / "r" / "loose.png"), {"root": "r"}, r"expected one sub-folder per class .*loose.png: pass a labels CSV"),
        (lambda p: (p / "r" / "cls").mkdir(parents=True) or _img(p / "r" / "ok" / "a.png"), {"root": "r"}, r"class folder 'cls' holds no image"),
        (lambda p: (p / "r" / "c").mkdir(parents=True) or (p / "r" / "c" / "bad.JPEG").write_bytes(b"not a jpeg"), {"root": "r"}, r"image .*bad.JPEG: cannot be decoded"),
        (lambda p: _img(p / "r" / "a.png") or (p / "l.csv").write_text("name,y\na.png,0\n"), {"root": "r", "labels_csv": "l.csv"}, r"l.csv: expected a header row with a file column named one of file, filename.*found columns \['name', 'y'\]"),
        (lambda p: _img(p / "r" / "a.png") or (p / "l.csv").write_text("file,category\na.png,0\n"), {"root": "r", "labels_csv": "l.csv"}, r"label column named one of label, class"),
        (lambda p: _img(p / "r" / "a.png") or (p / "l.csv").write_text("file,label\na.png,dog\nmissing.png,dog\n"), {"root": "r", "labels_csv": "l.csv"}, r"l.csv line 3: image 'missing.png' not found"),
        (lambda p: _img(p / "r" / "a.png") or (p / "l.csv").write_text("file,label\na.png,wolf\n"), {"root": "r", "labels_csv": "l.csv", "class_names": ["dog", "cat"]}, r"line 2: unknown label 'wolf'; expected a class name \(dog, cat\) or an index in \[0, 1\]"),
        (lambda p: _img(p / "r" / "a.png") or _img(p / "r" / "b.png") or (p / "l.csv").write_text("file,label\na.png,3\nb.png,dog\n"), {"root": "r", "labels_csv": "l.csv"}, r"line 2: label '3' is an index but other labels are class names"),
        (lambda p: _img(p / "r" / "a.png") or (p / "l.csv").write_text("file,label\na.png,0\na.png,0\n"), {"root": "r", "labels_csv": "l.csv"}, r"line 3: 'a.png' already listed on line 2"),
        (lambda p: _img(p / "r" / "a.png") or (p / "l.csv").write_text("file,label\n../x.png,0\n"), {"root": "r", "labels_csv": "l.csv"}, r"is outside"),
        (lambda p: _img(p / "r" / "c" / "a.png") or (p / "x").mkdir() or (p / "x" / "a.xml").write_text("<annotation><object>"), {"root": "r", "boxes_dir": "x"}, r"box file .*a.xml: malformed XML"),
        (lambda p: _img(p / "r" / "c" / "a.png") or (p / "x").mkdir() or (p / "x" / "a.xml").write_text("<annotation><object><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>q</xmax><ymax>5</ymax></bndbox></object></annotation>"), {"root": "r", "boxes_dir": "x"}, r"a.xml: <object> #1 <xmax> is 'q', expected a number"),
        (lambda p: _img(p / "r" / "c" / "a.png"), {"root": "r", "boxes_dir": "nope"}, r"boxes folder .*nope: not found"),
        (lambda p: _img(p / "r" / "c" / "a.png") or (p / "x").mkdir() or (p / "x" / "a.xml").write_text("<annotation><size><width>inf</width><height>8</height></size><object><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>5</ymax></bndbox></object></annotation>"),
         {"root": "r", "boxes_dir": "x"}, r"a.xml: <size> <width> is 'inf', expected a finite pixel coordinate"),
        (lambda p: _img(p / "r" / "a.png") or (p / "l.csv").write_bytes(b"file,label\na.png,caf\xe9\n"), {"root": "r", "labels_csv": "l.csv"}, r"l.csv line 2: not UTF-8 text \(byte b'\\xe9'"),
        (lambda p: _img(p / "r" / "c" / os.fsdecode(b"bad\xff.png")), {"root": "r"}, r"file name b'bad\\xff.png' is not valid UTF-8 \(byte b'\\xff'\)"),
        (lambda p: _img(p / "r" / "cat" / "a.png") or (p / "r" / "dog").mkdir() or (p / "r" / "dog" / "a.png").symlink_to(p / "r" / "cat" / "a.png"), {"root": "r"}, r"dog/a.png is the same file as one in class 'cat'"),
    ],
    ids=["missing", "empty", "flat-without-csv", "empty-class", "undecodable", "csv-no-file-col", "csv-no-label-col", "csv-missing-file", "csv-unknown-label", "csv-mixed-labels", "csv-duplicate", "csv-outside", "xml-malformed", "xml-bad-number", "boxes-dir-missing",
         "xml-inf-size", "csv-not-utf8", "name-not-utf8", "one-file-two-classes"],
)
def test_bad_input_is_rejected_before_decoding_naming_the_file(tmp_path: Path, setup, kwargs: dict, message: str) -> None:
    setup(tmp_path)
    kw = {k: (tmp_path / v if k in ("root", "labels_csv", "boxes_dir") else v) for k, v in kwargs.items()}
    with pytest.raises(ConfigError, match=message):
        index_image_folder(**kw)


def test_a_symlink_loop_repeats_no_image(tmp_path: Path) -> None:
    """`r/c/loop -> ..` (a link back up the tree) and two links to one file: each image is indexed once."""
    for name in ("a.png", "b.png"):
        _img(tmp_path / "r" / "c" / name)
    (tmp_path / "r" / "c" / "loop").symlink_to(tmp_path / "r")
    (tmp_path / "r" / "c" / "again.png").symlink_to(tmp_path / "r" / "c" / "a.png")
    _img(tmp_path / "r" / "d" / "z.png")
    idx = index_image_folder(tmp_path / "r")
    assert sorted(r.id for r in idx.records) == ["c/a.png", "c/b.png", "d/z.png"]


def test_box_size_mismatch_and_bad_preprocessing(tmp_path: Path) -> None:
    _img(tmp_path / "r" / "c" / "a.png")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.xml").write_text(voc_xml("a.png", 500, 375, [("c", (1, 1, 4, 4))]))
    with pytest.raises(ConfigError, match=r"a.xml: declares <size> 500x375 but image .*a.png is 8x8"):
        load_image_folder(tmp_path / "r", boxes_dir=tmp_path / "x", resize=8, crop=8)
    with pytest.raises(ConfigError, match=r"data.crop: expected at most data.resize \(32\)"):
        Preprocessing(resize=32, crop=48)


def test_stratified_split_keeps_every_class_on_both_sides() -> None:
    labels = np.repeat(np.arange(4), [2, 5, 10, 1])
    train, test = stratified_split(labels, 0.3, seed=1)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(labels)))
    for c in (0, 1, 2):
        assert c in labels[train] and c in labels[test]
    assert np.array_equal(stratified_split(labels, 0.3, seed=1)[1], test)
