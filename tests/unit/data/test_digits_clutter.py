"""Tests for the ``digits-clutter`` dataset (edgecam.data.digits_clutter)."""

from __future__ import annotations

import dataclasses
import re
import time
import warnings

import numpy as np
import pytest

from edgecam.data.digits_clutter import (
    SPLITS,
    DigitsClutter,
    DigitsClutterSpec,
    _load_source,
    _place_outside,
    _upscale,
    build_digits_clutter,
)
from edgecam.errors import ConfigError, EdgecamError

N_SOURCE = 1797
SPEC = DigitsClutterSpec()
CLEAN = DigitsClutterSpec(noise=0.0, copies_train=1)  # noise-free: pixels can be checked exactly


@pytest.fixture(scope="module")
def splits() -> dict[str, DigitsClutter]:
    return {split: build_digits_clutter(SPEC, split) for split in SPLITS}


@pytest.fixture(scope="module")
def clean() -> DigitsClutter:
    return build_digits_clutter(CLEAN, "test")


def _box_mask(box: np.ndarray, canvas: int) -> np.ndarray:
    x0, y0, x1, y1 = (int(v) for v in box)
    inside = np.zeros((canvas, canvas), dtype=bool)
    inside[y0:y1, x0:x1] = True
    return inside


def _background(image: np.ndarray) -> np.ndarray:
    """The colour of a noise-free (3, H, W) image's background: the most common colour."""
    values, counts = np.unique(image[0], return_counts=True)
    pixels = image[:, image[0] == values[counts.argmax()]]
    assert (pixels == pixels[:, :1]).all()  # one colour, not a coincidence in channel 0
    return pixels[:, 0]


# --- shapes, dtypes, ranges -------------------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
def test_arrays_have_documented_shapes_dtypes_and_ranges(splits, split):
    ds = splits[split]
    n, c = len(ds), SPEC.canvas
    assert ds.images.shape == (n, 3, c, c) and ds.images.dtype == np.float32
    assert ds.masks.shape == (n, c, c) and ds.masks.dtype == np.float32
    assert ds.labels.shape == (n,) and ds.labels.dtype == np.int64
    assert ds.boxes.shape == (n, 4) and ds.boxes.dtype == np.int64
    assert ds.source_ids.shape == (n,) and ds.source_ids.dtype == np.int64
    assert ds.fragment_source_ids.shape == (n, SPEC.n_fragments)
    assert ds.fragment_boxes.shape == (n, SPEC.n_fragments, 4)
    assert len(ds.ids) == n
    assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0
    assert 0.0 <= ds.masks.min() and ds.masks.max() <= 1.0
    assert set(np.unique(ds.labels)) <= set(range(10))
    assert ds.source_ids.min() >= 0 and ds.source_ids.max() < N_SOURCE
    assert ds.spec == SPEC and ds.split == split
    assert np.isfinite(ds.images).all()


def test_split_sizes_follow_copies_and_test_fraction(splits):
    n_train_sources = np.unique(splits["train"].source_ids).size
    n_test_sources = np.unique(splits["test"].source_ids).size
    assert n_train_sources + n_test_sources == N_SOURCE
    assert abs(n_test_sources - SPEC.test_fraction * N_SOURCE) <= 10  # per-class rounding
    assert len(splits["train"]) == SPEC.copies_train * n_train_sources
    assert len(splits["test"]) == SPEC.copies_test * n_test_sources
    # every source digit appears exactly `copies` times in its split
    assert set(np.bincount(splits["train"].source_ids)[np.unique(splits["train"].source_ids)]) == {2}
    assert set(np.bincount(splits["test"].source_ids)[np.unique(splits["test"].source_ids)]) == {1}


def test_copies_of_a_source_digit_get_different_placements(splits):
    ds = splits["train"]
    first = {}
    moved = same = 0
    for sid, box in zip(ds.source_ids.tolist(), ds.boxes.tolist()):
        if sid in first:
            moved += first[sid] != box
            same += first[sid] == box
        first[sid] = box
    assert moved > 0.9 * (moved + same)


def test_ids_are_stable_unique_and_prefixed_by_split(splits):
    for split, ds in splits.items():
        assert ds.ids[0] == f"{split}-00000"
        assert ds.ids[17] == f"{split}-00017"
        assert all(re.fullmatch(rf"{split}-\d{{5}}", i) for i in ds.ids)
        assert len(set(ds.ids)) == len(ds)


def test_labels_match_the_source_digits(splits):
    _, source_labels = _load_source()
    for ds in splits.values():
        np.testing.assert_array_equal(ds.labels, source_labels[ds.source_ids])


def test_bundled_source_read_equals_load_digits():
    from sklearn.datasets import load_digits

    digits, labels = _load_source()
    bunch = load_digits()
    np.testing.assert_array_equal(digits, bunch.images / 16.0)
    np.testing.assert_array_equal(labels, bunch.target)


# --- determinism -------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
def test_same_spec_builds_byte_identical_arrays(splits, split):
    again = build_digits_clutter(DigitsClutterSpec(), split)
    ds = splits[split]
    for name in ("images", "labels", "boxes", "masks", "source_ids", "fragment_source_ids", "fragment_boxes"):
        assert getattr(again, name).tobytes() == getattr(ds, name).tobytes(), name
    assert again.ids == ds.ids
    assert again.fingerprint() == ds.fingerprint()


def test_different_seed_gives_different_images_and_split(splits):
    other = build_digits_clutter(DigitsClutterSpec(seed=1), "test")
    ds = splits["test"]
    assert not np.array_equal(other.source_ids, ds.source_ids)
    n = min(len(other), len(ds))
    assert not np.array_equal(other.images[:n], ds.images[:n])
    assert other.fingerprint() != ds.fingerprint()


def test_seed_changes_placements_not_just_the_split(splits):
    from edgecam.data.digits_clutter import _upscaled_source

    _, patch_boxes, _ = _upscaled_source(SPEC.digit_size)

    def patch_corners(ds: DigitsClutter) -> np.ndarray:  # top-left of each digit's patch on the canvas
        return (ds.boxes - patch_boxes[ds.source_ids])[:, :2]

    other = build_digits_clutter(DigitsClutterSpec(seed=1), "test")
    n = min(len(other), len(splits["test"]))
    assert (patch_corners(other)[:n] != patch_corners(splits["test"])[:n]).any(axis=1).mean() > 0.9


def test_noise_has_the_requested_std_and_changes_nothing_else(clean):
    noisy = build_digits_clutter(dataclasses.replace(CLEAN, noise=0.05), "test")
    np.testing.assert_array_equal(noisy.masks, clean.masks)
    np.testing.assert_array_equal(noisy.fragment_boxes, clean.fragment_boxes)
    diff = noisy.images - clean.images
    unclipped = (clean.images > 0.3) & (clean.images < 0.7)  # >= 8 std from 0 and 1
    assert unclipped.sum() > 10_000
    assert abs(diff[unclipped].std() - 0.05) < 0.003
    assert abs(diff[unclipped].mean()) < 0.003


def test_train_and_test_splits_are_different_images(splits):
    n = min(len(splits["train"]), len(splits["test"]))
    assert not np.array_equal(splits["train"].images[:n], splits["test"].images[:n])


# --- split hygiene -----------------------------------------------------------------------------------


def test_no_source_digit_is_in_both_splits(splits):
    train = set(splits["train"].source_ids.tolist())
    test = set(splits["test"].source_ids.tolist())
    assert train and test and not train & test


def test_fragments_come_from_other_classes_of_the_same_split(splits):
    _, source_labels = _load_source()
    for ds in splits.values():
        own = set(ds.source_ids.tolist())
        donors = ds.fragment_source_ids
        placed = donors >= 0
        assert placed.mean() > 0.95  # default canvas leaves room beside the digit almost always
        assert set(donors[placed].tolist()) <= own
        donor_labels = source_labels[np.where(placed, donors, 0)]
        assert not (placed & (donor_labels == ds.labels[:, None])).any()


@pytest.mark.parametrize("split", SPLITS)
def test_every_class_is_in_both_splits(splits, split):
    assert set(np.unique(splits[split].labels).tolist()) == set(range(10))


def test_split_is_stratified_by_class(splits):
    _, source_labels = _load_source()
    test_sources = np.unique(splits["test"].source_ids)
    for cls in range(10):
        n_cls = int((source_labels == cls).sum())
        n_test = int((source_labels[test_sources] == cls).sum())
        assert abs(n_test - SPEC.test_fraction * n_cls) <= 1


def test_every_class_is_in_both_splits_even_with_extreme_test_fraction():
    for fraction in (0.001, 0.999):
        spec = DigitsClutterSpec(test_fraction=fraction, copies_train=1, n_fragments=0)
        for split in SPLITS:
            assert set(np.unique(build_digits_clutter(spec, split).labels).tolist()) == set(range(10))


# --- ground truth ------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
def test_box_is_the_tight_box_of_the_mask_and_inside_the_canvas(splits, split):
    ds = splits[split]
    c = SPEC.canvas
    x0, y0, x1, y1 = ds.boxes.T
    assert (0 <= x0).all() and (x0 < x1).all() and (x1 <= c).all()
    assert (0 <= y0).all() and (y0 < y1).all() and (y1 <= c).all()
    assert (x1 - x0 <= SPEC.digit_size).all() and (y1 - y0 <= SPEC.digit_size).all()
    for mask, box in zip(ds.masks, ds.boxes):
        rows = np.flatnonzero((mask > 0).any(axis=1))
        cols = np.flatnonzero((mask > 0).any(axis=0))
        assert (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1) == tuple(box.tolist())


@pytest.mark.parametrize("split", SPLITS)
def test_mask_is_zero_outside_the_box(splits, split):
    ds = splits[split]
    for mask, box in zip(ds.masks, ds.boxes):
        assert not mask[~_box_mask(box, SPEC.canvas)].any()


def test_mask_is_the_upscaled_source_digit(splits):
    digits, _ = _load_source()
    upscaled = _upscale(digits, SPEC.digit_size)
    ds = splits["test"]
    for i in range(0, len(ds), 37):
        x0, y0, x1, y1 = ds.boxes[i].tolist()
        patch = upscaled[ds.source_ids[i]]
        rows = np.flatnonzero(patch.any(axis=1))
        cols = np.flatnonzero(patch.any(axis=0))
        tight = patch[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        np.testing.assert_array_equal(ds.masks[i, y0:y1, x0:x1], tight)
        assert ds.masks[i].max() > 0.5


def test_upscale_is_bilinear_and_keeps_source_samples():
    digits, _ = _load_source()
    up = _upscale(digits[:50], 24)
    assert up.shape == (50, 24, 24) and up.dtype == np.float32
    # with pixel-centre alignment and factor 3, output pixel 3k+1 sits exactly on source pixel k
    np.testing.assert_allclose(up[:, 1::3, 1::3], digits[:50], atol=1e-6)
    # a constant image stays constant; zeros stay exact zeros
    np.testing.assert_allclose(_upscale(np.full((1, 8, 8), 0.7), 19), 0.7, atol=1e-6)
    assert not _upscale(np.zeros((1, 8, 8)), 13).any()
    # between two samples the value is in between (no overshoot)
    assert 0.0 <= up.min() and up.max() <= 1.0


@pytest.mark.parametrize("split", SPLITS)
def test_digit_is_brighter_than_its_surroundings(splits, split):
    ds = splits[split]
    gray = ds.images.mean(axis=1)
    inside = np.stack([_box_mask(box, SPEC.canvas) for box in ds.boxes])
    mean_in = (gray * inside).sum(axis=(1, 2)) / inside.sum(axis=(1, 2))
    mean_out = (gray * ~inside).sum(axis=(1, 2)) / (~inside).sum(axis=(1, 2))
    assert (mean_in > mean_out).mean() > 0.98
    assert mean_in.mean() > mean_out.mean() + 0.1


def test_digit_strokes_have_more_contrast_than_fragments(clean):
    # noise-free: contrast = distance of a pixel's colour from the background colour
    stroke, fragment = [], []
    for image, mask, box in zip(clean.images, clean.masks, clean.boxes):
        contrast = np.abs(image - _background(image)[:, None, None]).sum(axis=0)
        stroke.append(contrast[mask > 0.5].mean())
        outside = ~_box_mask(box, CLEAN.canvas)
        touched = outside & (contrast > 1e-6)
        if touched.any():
            fragment.append(contrast[touched].mean())
    assert len(fragment) > 0.95 * len(clean)
    assert np.mean(stroke) > 2 * np.mean(fragment)


def test_fragments_never_enter_the_digit_box(clean, splits):
    # geometry: the recorded fragment rectangles lie on the canvas and do not intersect the box
    for ds in (clean, *splits.values()):
        c = ds.spec.canvas
        placed = ds.fragment_source_ids >= 0
        assert placed.any()
        assert (ds.fragment_boxes[~placed] == -1).all()
        fx0, fy0, fx1, fy1 = (ds.fragment_boxes[..., k][placed] for k in range(4))
        x0, y0, x1, y1 = (np.broadcast_to(ds.boxes[:, None, k], placed.shape)[placed] for k in range(4))
        assert ((0 <= fx0) & (fx0 < fx1) & (fx1 <= c) & (0 <= fy0) & (fy0 < fy1) & (fy1 <= c)).all()
        assert ((fx1 <= x0) | (fx0 >= x1) | (fy1 <= y0) | (fy0 >= y1)).all()
    # pixels: in a noise-free image, the box's non-digit pixels are plain background
    for image, mask, box in zip(clean.images, clean.masks, clean.boxes):
        inside = _box_mask(box, CLEAN.canvas)
        background = _background(image)
        off_digit = image[:, inside & (mask == 0)]
        np.testing.assert_array_equal(off_digit, np.broadcast_to(background[:, None], off_digit.shape))


def test_without_fragments_or_noise_only_the_digit_differs_from_background():
    ds = build_digits_clutter(DigitsClutterSpec(n_fragments=0, noise=0.0), "test")
    for image, mask in zip(ds.images[:50], ds.masks[:50]):
        differs = (image != _background(image)[:, None, None]).any(axis=0)
        np.testing.assert_array_equal(differs, mask > 0)


def test_place_outside_matches_brute_force():
    rng = np.random.default_rng(123)
    for _ in range(2000):
        c = int(rng.integers(8, 30))
        h, w = (int(v) for v in rng.integers(1, c + 1, size=2))
        x0 = int(rng.integers(0, c))
        y0 = int(rng.integers(0, c))
        x1 = int(rng.integers(x0 + 1, c + 1))
        y1 = int(rng.integers(y0 + 1, c + 1))
        u = float(rng.random())
        ys, xs = np.arange(c - h + 1), np.arange(c - w + 1)
        valid = ((ys + h <= y0) | (ys >= y1))[:, None] | ((xs + w <= x0) | (xs >= x1))[None, :]
        flat = np.flatnonzero(valid)
        y, x, ok = _place_outside(np.array(u), c, np.array([h, w]), np.array([x0, y0, x1, y1]))
        assert bool(ok) == (flat.size > 0)
        if flat.size:
            pick = flat[min(int(u * flat.size), flat.size - 1)]
            assert (int(y), int(x)) == (pick // xs.size, pick % xs.size)


@pytest.mark.parametrize(
    "spec",
    [
        DigitsClutterSpec(canvas=8, digit_size=8, n_fragments=2, copies_train=1),
        DigitsClutterSpec(canvas=32, digit_size=32, copies_train=1),
        DigitsClutterSpec(canvas=40, digit_size=8, n_fragments=6, noise=0.0, copies_train=1, copies_test=3),
    ],
    ids=["tiny", "digit-fills-canvas", "small-digit-many-fragments"],
)
def test_non_default_specs_build_consistent_ground_truth(spec):
    ds = build_digits_clutter(spec, "test")
    c = spec.canvas
    assert ds.images.shape[1:] == (3, c, c) and ds.masks.shape[1:] == (c, c)
    assert len(ds) == spec.copies_test * np.unique(ds.source_ids).size
    assert (ds.boxes[:, 2] <= c).all() and (ds.boxes[:, 3] <= c).all()
    for mask, box in zip(ds.masks, ds.boxes):
        assert not mask[~_box_mask(box, c)].any()
        x0, y0, x1, y1 = box.tolist()
        assert mask[y0:y1, x0].any() and mask[y0:y1, x1 - 1].any()
        assert mask[y0, x0:x1].any() and mask[y1 - 1, x0:x1].any()


# --- validation --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("canvas", 4),
        ("canvas", 64.0),
        ("canvas", True),
        ("digit_size", 7),
        ("digit_size", 65),
        ("digit_size", "24"),
        ("n_fragments", -1),
        ("n_fragments", 1.5),
        ("noise", -0.1),
        ("noise", 1.5),
        ("noise", float("nan")),
        ("noise", "0.1"),
        ("test_fraction", 0.0),
        ("test_fraction", 1.0),
        ("test_fraction", None),
        ("copies_train", 0),
        ("copies_test", 0),
        ("copies_test", 1.0),
        ("seed", -1),
        ("seed", 0.5),
    ],
)
def test_bad_spec_values_raise_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"DigitsClutterSpec\.{field} must be") as info:
        DigitsClutterSpec(**{field: value})
    assert repr(value) in str(info.value)
    assert isinstance(info.value, EdgecamError)


def test_digit_size_error_says_what_was_expected():
    with pytest.raises(ConfigError, match=r"digit_size must be an integer between 8 and canvas \(32\)"):
        DigitsClutterSpec(canvas=32, digit_size=40)


def test_valid_edge_values_are_accepted():
    DigitsClutterSpec(canvas=8, digit_size=8, n_fragments=0, noise=0, test_fraction=0.5, seed=2**40)
    DigitsClutterSpec(noise=1.0, seed=np.int64(3), canvas=np.int32(64))


@pytest.mark.parametrize("split", ["val", "Train", "", None])
def test_bad_split_raises_config_error_listing_allowed_values(split):
    with pytest.raises(ConfigError, match=r"split must be one of 'train', 'test'"):
        build_digits_clutter(SPEC, split)


def test_spec_must_be_a_spec():
    with pytest.raises(ConfigError, match="spec must be a DigitsClutterSpec"):
        build_digits_clutter({"canvas": 64}, "train")  # type: ignore[arg-type]


# --- API: subset, fingerprint, immutability ----------------------------------------------------------


def test_subset_returns_the_first_n_samples(splits):
    ds = splits["test"]
    sub = ds.subset(10)
    assert len(sub) == 10 and isinstance(sub, DigitsClutter)
    assert sub.ids == ds.ids[:10]
    np.testing.assert_array_equal(sub.images, ds.images[:10])
    np.testing.assert_array_equal(sub.masks, ds.masks[:10])
    np.testing.assert_array_equal(sub.boxes, ds.boxes[:10])
    np.testing.assert_array_equal(sub.fragment_boxes, ds.fragment_boxes[:10])
    assert sub.spec == ds.spec and sub.split == ds.split
    assert sub.fingerprint() == ds.fingerprint()
    assert len(ds.subset(None)) == len(ds)
    assert len(ds.subset(0)) == 0
    assert len(ds.subset(len(ds) + 100)) == len(ds)
    # the first copy lists each source digit once, so a small subset has distinct source digits
    assert np.unique(splits["train"].subset(500).source_ids).size == 500


@pytest.mark.parametrize("n", [-1, 2.5, "3"])
def test_subset_rejects_bad_sizes(splits, n):
    with pytest.raises(ConfigError, match="subset size n"):
        splits["test"].subset(n)


def test_fingerprint_is_sha256_of_spec_and_split(splits):
    fp = splits["train"].fingerprint()
    assert re.fullmatch(r"[0-9a-f]{64}", fp)
    assert fp != splits["test"].fingerprint()
    assert build_digits_clutter(DigitsClutterSpec(noise=0.05, copies_train=1), "test").fingerprint() != (
        splits["test"].fingerprint()
    )


def test_dataset_and_spec_are_immutable(splits):
    ds = splits["test"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.labels = np.zeros(3)  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        SPEC.seed = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        ds.images[0, 0, 0, 0] = 1.0
    with pytest.raises(ValueError):
        ds.subset(5).masks[0, 0, 0] = 1.0
    assert hash(SPEC) == hash(DigitsClutterSpec())


# --- usefulness ------------------------------------------------------------------------------------


def test_building_both_splits_is_fast():
    _load_source()
    start = time.perf_counter()
    for split in SPLITS:
        build_digits_clutter(DigitsClutterSpec(seed=7), split)
    # ~1 s on a 2-core machine; generous so a loaded CI box does not flake
    assert time.perf_counter() - start < 10.0


def test_a_trivial_classifier_learns_the_labels(splits):
    """Logistic regression on a translation-invariant feature (|FFT| of the downsampled grey image)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def features(ds: DigitsClutter) -> np.ndarray:
        gray = ds.images.mean(axis=1)
        n, h, w = gray.shape
        small = gray.reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
        small = small - small.mean(axis=(1, 2), keepdims=True)
        return np.log1p(np.abs(np.fft.rfft2(small))).reshape(n, -1)

    train = splits["train"].subset(1000)
    test = splits["test"]
    scaler = StandardScaler().fit(features(train))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs may stop at max_iter; accuracy is what is tested
        clf = LogisticRegression(max_iter=200).fit(scaler.transform(features(train)), train.labels)
    accuracy = clf.score(scaler.transform(features(test)), test.labels)
    assert accuracy > 0.3, accuracy  # chance is 0.1; ~0.76 with the default spec


def test_module_needs_neither_torch_nor_cv2_nor_an_sklearn_import():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from edgecam.data.digits_clutter import DigitsClutterSpec, build_digits_clutter\n"
        "build_digits_clutter(DigitsClutterSpec(copies_train=1, n_fragments=1), 'test')\n"
        "print(sorted(m for m in ('torch', 'cv2', 'sklearn') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
