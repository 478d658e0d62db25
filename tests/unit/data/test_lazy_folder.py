"""Image folders load lazily: `load_data` indexes and checks (no pixel decoded), shards decode only their
images and equal what the eager version-1 loader produced (bit-identical without JPEG draft, within the
stated tolerance with it), bad files still fail in `load_data` naming the file, and memory stays flat in the
number of images."""

from __future__ import annotations

import shutil
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edgecam.data import IMAGENET_MEAN, IMAGENET_STD, DataSpec, load_data, normalise
from edgecam.data import image_folder
from edgecam.data.decode import Preprocessing
from edgecam.data.image_folder import boxes_to_mask, read_voc_boxes, reference_decode, transform_boxes, voc_xml, write_skimage_folder
from edgecam.errors import ConfigError
from image_files import header_only_png, write_photo_views

RESIZE, CROP = 72, 64  # the photos' shorter sides (300 - 512 px) are >= 4x: JPEG draft applies


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("folders")
    return {
        "tree-boxes": write_skimage_folder(root / "tb", layout="tree", boxes=True),
        "tree-no-boxes": write_skimage_folder(root / "tn", layout="tree", boxes=False),
        "csv-boxes": write_skimage_folder(root / "cb", layout="csv", boxes=True),
    }


def _spec(folder: Any, **kw: Any) -> DataSpec:
    return DataSpec(name="image-folder", path=str(folder.images), labels_csv=str(folder.labels_csv) if folder.labels_csv else None,
                    boxes_dir=str(folder.boxes) if folder.boxes else None, resize=RESIZE, crop=CROP, limit=None, **kw)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every path `FolderSplit` decodes, in order (the real decode runs)."""
    seen: list[Path] = []
    real = image_folder.decode_image

    def counting(path, prep, limits=None):  # type: ignore[no-untyped-def]
        seen.append(Path(path))
        return real(path, prep, limits)

    monkeypatch.setattr(image_folder, "decode_image", counting)
    return seen


def _version1_reference(folder: Any, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """What version 1's eager loader gave for one image: the whole image resized, then cropped, normalised;
    the mask drawn from the box file through the same resize and crop."""
    path = Path(folder.images) / image_id
    prep = Preprocessing(RESIZE, CROP)
    x = normalise(reference_decode(path, prep)[None], IMAGENET_MEAN, IMAGENET_STD)[0]
    mask = np.zeros((CROP, CROP), np.float32)
    box_file = Path(folder.boxes) / f"{Path(image_id).stem}.xml" if folder.boxes else None
    if box_file is not None and box_file.is_file():
        boxes, _names, _size = read_voc_boxes(box_file)
        mask = boxes_to_mask(transform_boxes(boxes, *Image.open(path).size, prep), CROP)
    return x, mask


@pytest.mark.parametrize("draft", [False, True], ids=["exact", "jpeg-draft"])
@pytest.mark.parametrize("kind", ["tree-boxes", "tree-no-boxes", "csv-boxes"])
def test_shards_decode_what_the_eager_loader_produced(folders: dict[str, Any], kind: str, draft: bool) -> None:
    folder = folders[kind]
    data = load_data(_spec(folder, jpeg_draft=draft))
    assert data.input_shape == (3, CROP, CROP) and data.n_test + data.n_train == 6 and data.n_test >= 2
    std = np.asarray(IMAGENET_STD, np.float32)[:, None, None]
    for shard in (data.test_shard(0, 2), data.test_shard(2, data.n_test)):
        assert shard.x.dtype == np.float32 and shard.x.shape == (len(shard), 3, CROP, CROP)
        for i, image_id in enumerate(shard.ids):
            x, mask = _version1_reference(folder, image_id)
            if draft:  # tolerance on [0, 1] pixels: max 6/255, mean 0.6/255 (measured up to 5 and 0.48)
                diff = np.abs((shard.x[i] - x) * std)
                assert diff.max() <= 6 / 255 + 1e-5 and diff.mean() <= 0.6 / 255, (image_id, diff.max() * 255)
            else:
                np.testing.assert_array_equal(shard.x[i], x, err_msg=image_id)
            np.testing.assert_array_equal(shard.masks[i], mask)
            assert bool(shard.has_box[i]) == (folder.boxes is not None) == bool(mask.any())
    expected = {cls: k for k, cls in enumerate(sorted(folder.class_names))}
    names = {Path(fname).name: cls for _f, cls, fname, _b in image_folder.SKIMAGE_PHOTOS}
    assert [expected[names[Path(i).name]] for i in data.test_ids] == data.test_labels.tolist()
    np.testing.assert_array_equal(data.test_x[2:], data.test_shard(2, data.n_test).x)  # materialised == shards


def test_only_the_requested_shard_is_decoded(folders: dict[str, Any], decodes: list[Path]) -> None:
    folder = folders["tree-boxes"]
    data = load_data(_spec(folder))
    assert decodes == []  # indexing, header checks and the fingerprint decode no pixel
    paths = [Path(folder.images) / i for i in data.test_ids]
    first = data.test_shard(1, 3)
    assert decodes == paths[1:3]
    assert data.test_shard(1, 3) is first and len(decodes) == 2  # the cached shard
    data.test_shard(0, 1)
    data.test_shard(1, 3)  # the cache holds one shard: decoded again
    assert decodes == paths[1:3] + paths[0:1] + paths[1:3]
    del decodes[:]
    batch = data.test_batch([2, 0])
    assert decodes == [paths[2], paths[0]] and batch.ids == (data.test_ids[2], data.test_ids[0])
    del decodes[:]
    masks = data.test_masks
    assert decodes == [] and masks.shape == (data.n_test, CROP, CROP) and masks.any()  # masks come from the boxes
    x, y = data.train_subset(2, seed=5)
    order = np.random.default_rng(5).permutation(data.n_train)[:2]
    train_ids = [r.id for r in data.train.records]  # type: ignore[attr-defined]
    assert decodes == [Path(folder.images) / train_ids[i] for i in order] and x.shape == (len(order), 3, CROP, CROP) == (data.n_train, 3, CROP, CROP)
    np.testing.assert_array_equal(y, data.train_y[order])
    del decodes[:]
    assert len(data.test_x) == data.n_test and len(decodes) == data.n_test  # old callers: the whole split, once
    data.test_x
    data.test_shard(0, data.n_test)
    assert len(decodes) == data.n_test


def test_the_fingerprint_hashes_bytes_not_pixels(folders: dict[str, Any], decodes: list[Path], tmp_path: Path) -> None:
    folder = folders["tree-no-boxes"]
    copy = tmp_path / "copy"
    shutil.copytree(folder.images, copy)
    a = load_data(_spec(folder))
    b = load_data(DataSpec(name="image-folder", path=str(copy), resize=RESIZE, crop=CROP, limit=None))
    assert a.fingerprint == b.fingerprint  # same bytes, other place and mtimes
    assert load_data(_spec(folder, jpeg_draft=False)).fingerprint != a.fingerprint  # other pixels
    assert load_data(_spec(folder, max_decode_pixels=10**7)).fingerprint == a.fingerprint  # the cap changes no pixel
    rocket = copy / "rocket" / "rocket.jpg"
    rocket.write_bytes(rocket.read_bytes() + b"\0")  # different bytes (after the end marker), same pixels
    assert load_data(DataSpec(name="image-folder", path=str(copy), resize=RESIZE, crop=CROP, limit=None)).fingerprint != a.fingerprint
    assert decodes == []


def _small(path: Path, size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 10, 10)).save(path)


@pytest.mark.parametrize(
    ("setup", "extra", "message"),
    [
        (lambda r: (r / "img" / "b" / "bad.jpg").write_bytes(b"not a jpeg"), {}, r"image .*bad.jpg: cannot be decoded as an image"),
        (lambda r: (r / "xml").mkdir() or (r / "xml" / "a0.xml").write_text(voc_xml("a0.png", 500, 375, [("a", (1, 1, 4, 4))])),
         {"boxes_dir": "xml"}, r"box file .*a0.xml: declares <size> 500x375 but image .*a0.png is 40x30"),
        (lambda r: _small(r / "img" / "b" / "wide.png", (400, 300)), {"max_decode_pixels": 100_000}, r"image .*wide.png: 400 x 300 decodes to 120,000 pixels, over data.max_decode_pixels = 100,000"),
        (lambda r: header_only_png(r / "img" / "b" / "bomb.png", 20_000, 20_000), {}, r"image .*bomb.png: too large to decode"),
    ],
    ids=["undecodable", "box-size-mismatch", "over-the-cap", "decompression-bomb"],
)
def test_bad_files_fail_in_load_data_naming_the_file_before_any_decode(tmp_path: Path, decodes: list[Path], setup: Any, extra: dict, message: str) -> None:
    for cls in ("a", "b"):
        for i in range(3):
            _small(tmp_path / "img" / cls / f"{cls}{i}.png")
    setup(tmp_path)
    kw = {k: str(tmp_path / v) if k == "boxes_dir" else v for k, v in extra.items()}
    with pytest.raises(ConfigError, match=message):
        load_data(DataSpec(name="image-folder", path=str(tmp_path / "img"), resize=32, crop=32, limit=None, **kw))
    assert decodes == []


def test_memory_stays_flat_in_the_number_of_images(tmp_path: Path) -> None:
    """Peak traced memory (numpy arrays, Python objects) of load_data + every test shard + a calibration subset,
    at 224 px: 300 images need at most a shard more than 100 (version 1 held every image twice, ~1.2 MB each)."""
    write_photo_views(tmp_path / "all", 300)
    small = tmp_path / "small"
    for p in sorted((tmp_path / "all").rglob("*.jpg"))[:100]:  # every class's first 25
        (small / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, small / p.parent.name / p.name)
    shard_size = 16
    shard_bytes = shard_size * (3 + 1) * 224 * 224 * 4  # inputs + masks
    peaks = {}
    for name, n in (("small", 100), ("all", 300)):
        tracemalloc.start()
        try:
            data = load_data(DataSpec(name="image-folder", path=str(tmp_path / name), limit=None))
            assert data.n_test + data.n_train == n
            seen = sum(len(s) for s in data.iter_test_shards(shard_size))
            x, _y = data.train_subset(shard_size, seed=0)
            assert seen == data.n_test and x.shape == (shard_size, 3, 224, 224)
            del data, x
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peaks[300] - peaks[100] < shard_bytes, peaks  # 200 more images: less than one shard more
    assert peaks[300] < 3 * shard_bytes, peaks  # a few shards in all, not ~1.2 MB per image (360 MB)


def test_an_index_built_without_checking_images_reads_sizes_and_checks_box_sizes_at_use(folders: dict[str, Any], tmp_path: Path) -> None:
    from edgecam.data.image_folder import FolderSplit, index_image_folder

    folder = folders["tree-boxes"]
    prep = Preprocessing(RESIZE, CROP)
    checked = index_image_folder(folder.images, boxes_dir=folder.boxes, prep=prep)
    lazy = index_image_folder(folder.images, boxes_dir=folder.boxes, check_images=False)
    assert all(r.size is not None and r.boxes is not None for r in checked.records)
    assert all(r.size is None and r.boxes is None and r.box_file is not None for r in lazy.records)
    a, b = (FolderSplit(ix.records, prep, IMAGENET_MEAN, IMAGENET_STD) for ix in (checked, lazy))
    np.testing.assert_array_equal(b.all_masks(), a.all_masks())
    np.testing.assert_array_equal(b.images([0, 3]), a.images([0, 3]))
    (tmp_path / "img" / "c").mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(tmp_path / "img" / "c" / "a.png")
    (tmp_path / "xml").mkdir()
    (tmp_path / "xml" / "a.xml").write_text(voc_xml("a.png", 500, 375, [("c", (1, 1, 4, 4))]))
    unchecked = index_image_folder(tmp_path / "img", boxes_dir=tmp_path / "xml", check_images=False)
    with pytest.raises(ConfigError, match=r"a.xml: declares <size> 500x375 but image .*a.png is 40x30"):
        FolderSplit(unchecked.records, prep, IMAGENET_MEAN, IMAGENET_STD).masks([0])


def test_a_large_training_split_decodes_to_disk_not_to_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Training needs the whole training split; past `IN_MEMORY_BYTES` it goes to a memory map of an
    unlinked scratch file: the same values, process memory bounded by one fill chunk (traced numpy memory),
    nothing left on disk, and torch trains on it without a copy."""
    import torch

    write_photo_views(tmp_path / "photos", 120)
    monkeypatch.setenv("EDGECAM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(image_folder, "IN_MEMORY_BYTES", 8 << 20)
    monkeypatch.setattr(image_folder, "FILL_CHUNK", 8)
    data = load_data(DataSpec(name="image-folder", path=str(tmp_path / "photos"), limit=None))
    n = data.n_train
    assert n * 3 * 224 * 224 * 4 > 4 * (8 << 20)  # the split is several times the in-memory limit
    tracemalloc.start()
    try:
        x = data.train_x
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    chunk_bytes = 8 * 3 * 224 * 224 * 4
    assert x.shape == (n, 3, 224, 224) and x.dtype == np.float32
    assert peak < 3 * chunk_bytes < x.nbytes, (peak, x.nbytes)  # a few chunks, not the split
    assert list((tmp_path / "cache" / "scratch").iterdir()) == []  # unlinked at once
    idx = np.array([0, n // 2, n - 1])
    np.testing.assert_array_equal(x[idx], _decoded(data, idx))
    t = torch.from_numpy(np.ascontiguousarray(x))
    assert t.data_ptr() == x.ctypes.data  # no copy


def _decoded(data: Any, idx: np.ndarray) -> np.ndarray:
    """The same training images decoded afresh (not through the split's kept array)."""
    from edgecam.data.image_folder import FolderSplit

    split = data.train
    fresh = FolderSplit(split.records, split.prep, tuple(split.mean.ravel()), tuple(split.std.ravel()), split.limits)
    return fresh.images(idx)
