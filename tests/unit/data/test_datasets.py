"""`load_data` through the registry and `Datasets.test_shard`: normalised shards with ids, labels, masks and
`has_box` (True where a box file / generated mask exists), for both kinds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecam.data import IMAGENET_MEAN, IMAGENET_STD, MEAN, STD, DataSpec, Datasets, TestShard, load_data, normalise
from edgecam.data.digits_clutter import build_digits_clutter
from edgecam.data.image_folder import load_image_folder, write_skimage_folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory):
    return write_skimage_folder(tmp_path_factory.mktemp("photos"), layout="tree", boxes=True)


def _folder_spec(photos, boxes_dir, **kw) -> DataSpec:
    return DataSpec(name="image-folder", path=str(photos.images), boxes_dir=boxes_dir, resize=40, crop=32, limit=None, **kw)


def test_normalise_is_per_channel_and_leaves_its_input_alone() -> None:
    x = np.random.default_rng(0).random((2, 3, 4, 4), dtype=np.float32)
    before = x.copy()
    y = normalise(x, (0.1, 0.2, 0.3), (0.5, 0.25, 2.0))
    np.testing.assert_array_equal(x, before)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[:, 1], (x[:, 1] - 0.2) / 0.25, rtol=1e-6)
    np.testing.assert_allclose(normalise(x)[:, 2], (x[:, 2] - MEAN[2]) / STD[2], rtol=1e-6)


def test_digits_clutter_shards_are_the_normalised_test_split_with_every_box() -> None:
    spec = DataSpec(canvas=16, digit_size=10, seed=2)
    data = load_data(spec)
    raw = build_digits_clutter(spec.generator_spec(), "test")
    assert data.n_test == len(raw) == len(data.test_ids) and data.n_classes == 10
    assert data.test_has_box.dtype == bool and data.test_has_box.all() and data.has_ground_truth
    shard = data.test_shard(5, 12)
    assert isinstance(shard, TestShard) and len(shard) == 7 and shard.start == 5
    np.testing.assert_array_equal(shard.x, normalise(raw.images[5:12], MEAN, STD))
    np.testing.assert_array_equal(shard.labels, raw.labels[5:12])
    np.testing.assert_array_equal(shard.masks, raw.masks[5:12])
    assert shard.ids == tuple(raw.ids[5:12]) == ("test-00005", "test-00006", "test-00007", "test-00008", "test-00009", "test-00010", "test-00011")
    assert shard.has_box.shape == (7,) and shard.has_box.all()
    assert data.source == {"dataset": "digits-clutter", "canvas": 16, "digit_size": 10, "seed": 2, "copies_test": 1, "normalisation": {"mean": MEAN, "std": STD}}


def test_digits_clutter_shards_are_views_of_the_in_memory_split_and_bounded() -> None:
    data = load_data(DataSpec(canvas=16, digit_size=10, seed=2))
    shard = data.test_shard(1, data.n_test)
    assert np.shares_memory(shard.x, data.test_x) and shard.x.shape[0] == data.n_test - 1  # no copy per shard
    assert shard.ids == tuple(data.test_ids[1:]) and shard.indices.tolist() == list(range(1, data.n_test))
    assert len(data.test_shard(2, 2)) == 0 and data.test_shard(2, 2).x.shape == (0, 3, 16, 16)
    for s0, s1 in ((-1, 2), (3, 2), (0, data.n_test + 1)):
        with pytest.raises(IndexError, match=f"test shard {s0}:{s1} outside 0:{data.n_test}"):
            data.test_shard(s0, s1)


def test_digits_clutter_has_the_accessors_of_a_lazy_split() -> None:
    spec = DataSpec(canvas=16, digit_size=10, seed=2)
    data = load_data(spec)
    raw = build_digits_clutter(spec.generator_spec(), "test")
    assert data.input_shape == (3, 16, 16) and data.test_labels is data.test_y and data.test_labels.shape == (data.n_test,)
    np.testing.assert_array_equal(data.test_labels, raw.labels)
    batch = data.test_batch([7, 2, 2])
    assert batch.start == -1 and batch.indices.tolist() == [7, 2, 2] and batch.ids == ("test-00007", "test-00002", "test-00002")
    np.testing.assert_array_equal(batch.x, data.test_x[[7, 2, 2]])
    np.testing.assert_array_equal(batch.masks, raw.masks[[7, 2, 2]])
    assert data.test_batch(range(3, 6)).start == 3  # contiguous indices keep their start
    with pytest.raises(IndexError, match=r"test indices outside 0:359: \[359, -1\]"):
        data.test_batch([0, 359, -1])
    shards = list(data.iter_test_shards(100, stop=250))
    assert [(s.start, len(s)) for s in shards] == [(0, 100), (100, 100), (200, 50)]
    assert [len(s) for s in data.iter_test_shards(200)] == [200, 159]
    with pytest.raises(ValueError, match="shard_size must be >= 1"):
        next(data.iter_test_shards(0))
    x, y = data.train_subset(50, seed=3)
    idx = np.random.default_rng(3).permutation(data.n_train)[:50]  # the exporters' calibration_subset rule
    np.testing.assert_array_equal(x, data.train_x[idx])
    np.testing.assert_array_equal(y, data.train_y[idx])
    assert data.train_subset(10**6)[0].shape == (data.n_train, 3, 16, 16)
    with pytest.raises(ValueError, match="n must be >= 1"):
        data.train_subset(0)


def test_the_fingerprint_of_digits_clutter_is_unchanged() -> None:
    from edgecam.cache import stable_hash

    spec = DataSpec(canvas=16, digit_size=10, seed=2)
    gen = spec.generator_spec()
    expected = stable_hash([build_digits_clutter(gen, "train").fingerprint(), build_digits_clutter(gen, "test").fingerprint()])
    assert load_data(spec).fingerprint == expected


def test_datasets_pickle_without_their_cache_and_take_poisoned_inputs() -> None:
    import pickle

    data = load_data(DataSpec(canvas=16, digit_size=10, seed=2))
    data.test_shard(0, 4)
    back = pickle.loads(pickle.dumps(data))
    assert back.fingerprint == data.fingerprint and back._shards == {}
    np.testing.assert_array_equal(back.test_shard(0, 4).x, data.test_shard(0, 4).x)
    x = data.test_x.copy()
    x[0, 0, 0, 0] = np.nan
    poisoned = data.with_test_x(x)
    assert np.isnan(poisoned.test_shard(0, 2).x[0, 0, 0, 0]) and not np.isnan(data.test_shard(0, 2).x).any()
    assert poisoned.test_ids == data.test_ids and poisoned.fingerprint == data.fingerprint
    np.testing.assert_array_equal(poisoned.test_shard(0, 3).masks, data.test_shard(0, 3).masks)
    with pytest.raises(ValueError, match="expected 359 images, got 2"):
        data.with_test_x(x[:2])


def test_image_folder_with_box_files_has_box_everywhere(photos) -> None:
    data = load_data(_folder_spec(photos, str(photos.boxes)))
    folder = load_image_folder(photos.images, boxes_dir=photos.boxes, resize=40, crop=32)
    shard = data.test_shard(0, data.n_test)
    assert shard.has_box.all() and data.has_ground_truth
    assert all(m.sum() > 0 for m in shard.masks)  # every box became a non-empty mask
    idx = [folder.ids.index(i) for i in shard.ids]
    np.testing.assert_array_equal(shard.labels, folder.labels[idx])
    np.testing.assert_array_equal(shard.masks, folder.masks[idx])
    np.testing.assert_allclose(shard.x, normalise(folder.images[idx], IMAGENET_MEAN, IMAGENET_STD))
    assert data.source["with_boxes"] == 6 and data.source["test_images"] == data.n_test


def test_image_folder_without_box_files_has_no_box_and_empty_masks(photos) -> None:
    data = load_data(_folder_spec(photos, None))
    shard = data.test_shard(0, data.n_test)
    assert shard.has_box.shape == (data.n_test,) and not shard.has_box.any() and not data.has_ground_truth
    assert not shard.masks.any()


def test_image_folder_with_some_box_files_marks_exactly_those(photos, tmp_path: Path) -> None:
    partial = tmp_path / "boxes"
    partial.mkdir()
    kept = sorted(Path(photos.boxes).glob("*.xml"))[:2]
    for p in kept:
        (partial / p.name).write_text(p.read_text())
    data = load_data(_folder_spec(photos, str(partial)))
    shard = data.test_shard(0, data.n_test)
    with_box = {i for i, b in zip(shard.ids, shard.has_box) if b}
    assert with_box == {i for i in shard.ids if Path(i).stem in {p.stem for p in kept}}
    assert data.has_ground_truth and 0 < len(with_box) < data.n_test
    for m, b in zip(shard.masks, shard.has_box):
        assert bool(m.any()) == bool(b)


def test_datasets_from_arrays_checks_its_lengths() -> None:
    z = np.zeros((2, 3, 4, 4), np.float32)
    with pytest.raises(ValueError, match="test_has_box must have shape \\(2,\\)"):
        Datasets.from_arrays(z, np.zeros(2), z, np.zeros(2), np.zeros((2, 4, 4)), ["a", "b"], "fp", test_has_box=np.ones(3, bool))
    with pytest.raises(ValueError, match="differ in length"):
        Datasets.from_arrays(z, np.zeros(2), z, np.zeros(2), np.zeros((1, 4, 4)), ["a", "b"], "fp")
    d = Datasets.from_arrays(z, np.zeros(2), z, np.zeros(2), np.zeros((2, 4, 4)), ["a", "b"], "fp")
    assert d.test_has_box.tolist() == [True, True] and d.n_train == 2 and d.input_shape == (3, 4, 4)
