"""The ``digits-clutter`` dataset: scikit-learn's 8x8 digits placed on a cluttered colour canvas.

Every sample is built deterministically (seeded) from ``sklearn.datasets.load_digits`` -- bundled with
scikit-learn, so nothing is downloaded -- using only numpy and the standard library:

* the 8x8 digit (values 0..16, scaled to [0, 1]) is upscaled bilinearly to ``digit_size`` x ``digit_size``
  and drawn in a random bright colour at a random position of a ``canvas`` x ``canvas`` RGB image whose
  background is a random dim colour;
* ``n_fragments`` clutter fragments -- rectangular crops covering a third to a half of the area of a digit
  of ANOTHER class from the same split -- are drawn at random positions with lower contrast (alpha 0.35 to
  0.6), never intersecting the main digit's bounding box;
* Gaussian noise (std ``noise``) is added and the image clipped to [0, 1].

Ground truth per sample: ``label`` (0-9), ``box`` = (x0, y0, x1, y1) in pixels, x1/y1 exclusive, the tight
bounding box of the digit's non-zero pixels on the canvas, and ``mask`` (H, W) = the upscaled digit
intensity on the canvas (the map class activation maps are compared against).

The 1797 source digits are split into train and test with a seeded permutation, stratified by class, so
no source digit (and no fragment source) appears in both splits. Each source digit appears
``copies_train`` times in train and ``copies_test`` times in test, each time with a fresh placement.
Samples are ordered copy-major (all source digits once, in a shuffled order, then again), so
``subset(n)`` with ``n`` up to the number of source digits in the split gives distinct source digits.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np

from edgecam.data.datasets import MEAN, STD, ArraySplit, Datasets, normalise
from edgecam.data.spec import DATASETS, DatasetKind, DataSpec
from edgecam.errors import ConfigError

__all__ = [
    "DATASET_NAME",
    "SPLITS",
    "DigitsClutter",
    "DigitsClutterDataSpec",
    "DigitsClutterSpec",
    "build_digits_clutter",
    "load_digits_clutter_data",
]

DATASET_NAME = "digits-clutter"
SPLITS: tuple[str, ...] = ("train", "test")

# Bumped whenever the generator changes in a way that changes the pixels for the same spec; it is part of
# the fingerprint so stale caches are not reused.
_GENERATOR_VERSION = 1

_N_CLASSES = 10
_N_SOURCE = 1797
_SOURCE_SIZE = 8
_SOURCE_MAX = 16.0

# Colour / contrast ranges.
_BACKGROUND_RANGE = (0.0, 0.25)  # dim background colour, per channel
_DIGIT_COLOUR_RANGE = (0.6, 1.0)  # bright digit colour, per channel
_FRAGMENT_COLOUR_RANGE = (0.6, 1.0)  # fragment colour before its contrast is applied
_FRAGMENT_ALPHA_RANGE = (0.35, 0.6)  # fragment contrast: strictly lower than the digit's (1.0)
_FRAGMENT_AREA_RANGE = (1.0 / 3.0, 0.5)  # fraction of a digit's area a fragment covers
_FRAGMENT_TRIES = 8  # crop-size draws tried before a fragment that cannot be placed is skipped
_CROP_CANDIDATES = 4  # crop positions tried; the one with most ink wins
_CHUNK = 256  # samples per noise draw (bounds the noise buffer)

# Stream keys, so the split permutation and each split's samples draw from independent generators.
_STREAM_SPLIT = 0
_STREAM_SAMPLES = {"train": 1, "test": 2}


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: object) -> bool:
    real = (int, float, np.integer, np.floating)
    return isinstance(value, real) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class DigitsClutterSpec:
    """Everything that determines the dataset; two equal specs build byte-identical arrays."""

    canvas: int = 64
    digit_size: int = 24
    n_fragments: int = 3
    noise: float = 0.08
    test_fraction: float = 0.2
    copies_train: int = 2
    copies_test: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        def fail(field: str, expected: str) -> ConfigError:
            return ConfigError(
                f"DigitsClutterSpec.{field} must be {expected}, got {getattr(self, field)!r}"
            )

        if not _is_int(self.canvas) or self.canvas < _SOURCE_SIZE:
            raise fail("canvas", f"an integer >= {_SOURCE_SIZE} (the canvas side in pixels)")
        if not _is_int(self.digit_size) or not _SOURCE_SIZE <= self.digit_size <= self.canvas:
            raise fail("digit_size", f"an integer between {_SOURCE_SIZE} and canvas ({self.canvas})")
        if not _is_int(self.n_fragments) or self.n_fragments < 0:
            raise fail("n_fragments", "an integer >= 0")
        if not _is_real(self.noise) or not math.isfinite(self.noise) or not 0.0 <= self.noise <= 1.0:
            raise fail("noise", "a number between 0 and 1 (the Gaussian noise std)")
        if (
            not _is_real(self.test_fraction)
            or not math.isfinite(self.test_fraction)
            or not 0.0 < self.test_fraction < 1.0
        ):
            raise fail("test_fraction", "a number strictly between 0 and 1")
        if not _is_int(self.copies_train) or self.copies_train < 1:
            raise fail("copies_train", "an integer >= 1")
        if not _is_int(self.copies_test) or self.copies_test < 1:
            raise fail("copies_test", "an integer >= 1")
        if not _is_int(self.seed) or self.seed < 0:
            raise fail("seed", "an integer >= 0")

    def to_dict(self) -> dict[str, int | float]:
        """The spec as plain JSON-serialisable values."""
        return {
            f.name: (int(v) if _is_int(v := getattr(self, f.name)) else float(v))
            for f in dataclasses.fields(self)
        }


@dataclass(frozen=True, eq=False)
class DigitsClutter:
    """One split of ``digits-clutter``: read-only numpy arrays plus the spec that built them.

    ``images`` (N, 3, H, W) float32 in [0, 1], channel-first; ``labels`` (N,) int64; ``boxes`` (N, 4) int64
    as (x0, y0, x1, y1), x1/y1 exclusive; ``masks`` (N, H, W) float32 in [0, 1]; ``source_ids`` (N,) int64,
    indices into ``load_digits()``; ``ids`` stable string ids such as ``"test-00017"``.

    Clutter metadata, for tests and for measuring attention on distractors: ``fragment_source_ids``
    (N, n_fragments) int64, the source digit each fragment was cropped from, and ``fragment_boxes``
    (N, n_fragments, 4) int64, the rectangle (x0, y0, x1, y1) it was drawn in; both -1 for a fragment
    skipped because the canvas had no room beside the digit.
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray
    source_ids: np.ndarray
    ids: tuple[str, ...]
    spec: DigitsClutterSpec
    split: str
    fragment_source_ids: np.ndarray
    fragment_boxes: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, n: int | None) -> DigitsClutter:
        """The first ``n`` samples (``None``, or ``n`` >= ``len(self)``: all of them); shares memory."""
        if n is None:
            return self
        if not _is_int(n) or n < 0:
            raise ConfigError(f"subset size n must be None or an integer >= 0, got {n!r}")
        n = min(int(n), len(self))
        return dataclasses.replace(
            self,
            images=self.images[:n],
            labels=self.labels[:n],
            boxes=self.boxes[:n],
            masks=self.masks[:n],
            source_ids=self.source_ids[:n],
            ids=self.ids[:n],
            fragment_source_ids=self.fragment_source_ids[:n],
            fragment_boxes=self.fragment_boxes[:n],
        )

    def fingerprint(self) -> str:
        """sha256 hex of the spec (as JSON) plus the split, for cache keys.

        It identifies the generator's output for this spec and split; it does not include a ``subset``
        length, so callers that cache a subset should add ``len(self)`` to their key.
        """
        return _fingerprint(self.spec, self.split)


def _fingerprint(spec: DigitsClutterSpec, split: str) -> str:
    payload = {
        "dataset": DATASET_NAME,
        "generator_version": _GENERATOR_VERSION,
        "spec": spec.to_dict(),
        "split": split,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_bundled_digits() -> tuple[np.ndarray, np.ndarray] | None:
    """Read scikit-learn's bundled ``digits.csv.gz`` without importing sklearn (which costs ~1.5 s).

    This is the exact file ``sklearn.datasets.load_digits`` parses. Returns None when the file is not
    where scikit-learn keeps it, so the caller falls back to ``load_digits``.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "datasets" / "data" / "digits.csv.gz"
        if not path.is_file():
            continue
        try:
            with gzip.open(path, "rt", encoding="ascii") as handle:
                data = np.loadtxt(handle, delimiter=",", dtype=np.float64)
        except (OSError, ValueError):
            return None
        if data.shape != (_N_SOURCE, _SOURCE_SIZE * _SOURCE_SIZE + 1):
            return None
        images = data[:, :-1].reshape(-1, _SOURCE_SIZE, _SOURCE_SIZE)
        return images, data[:, -1].astype(np.int64)
    return None


@lru_cache(maxsize=1)
def _load_source() -> tuple[np.ndarray, np.ndarray]:
    """(digits (1797, 8, 8) float64 in [0, 1], labels (1797,) int64), read-only."""
    bundled = _read_bundled_digits()
    if bundled is None:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        bundled = np.asarray(bunch.images, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)
    images, labels = bundled
    digits = np.ascontiguousarray(images, dtype=np.float64) / _SOURCE_MAX
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    digits.setflags(write=False)
    labels.setflags(write=False)
    return digits, labels


@lru_cache(maxsize=4)
def _upscaled_source(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The source digits upscaled to ``size``, read-only, with what placement needs about them.

    Returns (upscaled (1797, size, size) float32, tight boxes (1797, 4) int64 as (x0, y0, x1, y1) within
    the patch, summed-area tables (1797, (size + 1) ** 2) float64, flattened row-major: entry
    [y * (size + 1) + x] is the ink of the patch's rows < y and columns < x).
    """
    digits, _ = _load_source()
    upscaled = _upscale(digits, size)
    rows = upscaled.any(axis=2)  # (N, size): which rows have ink
    cols = upscaled.any(axis=1)
    boxes = np.stack(
        [
            cols.argmax(axis=1),
            rows.argmax(axis=1),
            size - cols[:, ::-1].argmax(axis=1),
            size - rows[:, ::-1].argmax(axis=1),
        ],
        axis=1,
    ).astype(np.int64)
    tables = np.zeros((upscaled.shape[0], size + 1, size + 1), dtype=np.float64)
    tables[:, 1:, 1:] = upscaled.astype(np.float64).cumsum(axis=1).cumsum(axis=2)
    tables = tables.reshape(upscaled.shape[0], -1)
    for array in (upscaled, boxes, tables):
        array.setflags(write=False)
    return upscaled, boxes, tables


def _bilinear_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) matrix M such that M @ v resamples v bilinearly (pixel centres aligned, edges clamped)."""
    coords = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
    coords = np.clip(coords, 0.0, src - 1)
    lo = np.floor(coords).astype(np.int64)
    hi = np.minimum(lo + 1, src - 1)
    frac = coords - lo
    matrix = np.zeros((dst, src), dtype=np.float64)
    rows = np.arange(dst)
    np.add.at(matrix, (rows, lo), 1.0 - frac)
    np.add.at(matrix, (rows, hi), frac)
    return matrix


def _upscale(digits: np.ndarray, size: int) -> np.ndarray:
    """Bilinearly upscale (N, 8, 8) digits in [0, 1] to (N, size, size) float32 in [0, 1]."""
    matrix = _bilinear_matrix(digits.shape[-1], size)
    up = matrix @ digits @ matrix.T
    # Bilinear weights are convex, so values stay in [0, 1]; clip only guards float round-off, and
    # exact zeros (no ink in any contributing source pixel) stay exact zeros.
    return np.clip(up, 0.0, 1.0).astype(np.float32)


def _split_indices(spec: DigitsClutterSpec, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Stratified, seeded split of the source indices; each split's indices are returned shuffled."""
    rng = np.random.default_rng([spec.seed, _STREAM_SPLIT])
    train_parts: list[np.ndarray] = []
    test_parts: list[np.ndarray] = []
    for cls in range(_N_CLASSES):
        members = np.flatnonzero(labels == cls)
        members = members[rng.permutation(members.size)]
        n_test = int(round(spec.test_fraction * members.size))
        n_test = min(max(n_test, 1), members.size - 1)  # every class in both splits
        test_parts.append(members[:n_test])
        train_parts.append(members[n_test:])
    train = np.concatenate(train_parts)
    test = np.concatenate(test_parts)
    return {
        "train": train[rng.permutation(train.size)].astype(np.int64),
        "test": test[rng.permutation(test.size)].astype(np.int64),
    }


def _fragment_sizes(area: np.ndarray, long_u: np.ndarray, swap: np.ndarray, size: int) -> np.ndarray:
    """(..., 2) crop sizes (h, w) covering ``area`` (a third to a half) of a size x size digit.

    ``long_u`` in [0, 1) picks the longer side's fraction in [sqrt(area), 1]; ``swap`` makes it the width.
    """
    long_frac = np.sqrt(area) + long_u * (1.0 - np.sqrt(area))
    short_frac = area / long_frac
    long_px = np.clip(np.rint(long_frac * size), 1, size).astype(np.int64)
    short_px = np.clip(np.rint(short_frac * size), 1, size).astype(np.int64)
    h = np.where(swap, short_px, long_px)
    w = np.where(swap, long_px, short_px)
    return np.stack([h, w], axis=-1)


def _place_outside(
    u: np.ndarray, canvas: int, sizes: np.ndarray, boxes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uniformly random positions where rectangles fit the canvas without intersecting a box.

    ``u`` (...,) in [0, 1) picks the position; ``sizes`` (..., 2) are (h, w); ``boxes`` (..., 4) are
    (x0, y0, x1, y1). Returns (y, x, ok): the top-left corners, enumerated row-major over the valid
    positions, and whether any valid position exists (where it does not, y and x are meaningless).
    """
    h, w = sizes[..., 0], sizes[..., 1]
    x0, y0, x1, y1 = (boxes[..., k] for k in range(4))
    ny, nx = canvas - h + 1, canvas - w + 1  # top-left positions that fit the canvas
    # A rectangle at (y, x) intersects the box iff y0 - h < y < y1 and x0 - w < x < x1: a block of
    # positions [ylo, yhi) x [xlo, xhi) that are excluded.
    ylo, yhi = np.clip(y0 - h + 1, 0, ny), np.clip(y1, 0, ny)
    xlo, xhi = np.clip(x0 - w + 1, 0, nx), np.clip(x1, 0, nx)
    by, bx = np.maximum(yhi - ylo, 0), np.maximum(xhi - xlo, 0)
    n_valid = ny * nx - by * bx
    ok = n_valid > 0
    k = np.minimum((u * n_valid).astype(np.int64), np.maximum(n_valid - 1, 0))
    # Row-major walk: rows above the block (full), rows beside it (nx - bx each), rows below (full).
    above = ylo * nx
    beside_width = nx - bx
    beside = by * beside_width
    k_beside = k - above
    k_below = k_beside - beside
    safe_width = np.maximum(beside_width, 1)
    q = k_beside % safe_width
    y = np.where(
        k < above,
        k // nx,
        np.where(k_beside < beside, ylo + k_beside // safe_width, yhi + k_below // nx),
    )
    x = np.where(
        k < above,
        k % nx,
        np.where(k_beside < beside, np.where(q < xlo, q, q + bx), k_below % nx),
    )
    return y, x, ok


def _uniform(rng: np.random.Generator, bounds: tuple[float, float], size: tuple[int, ...]) -> np.ndarray:
    return rng.uniform(bounds[0], bounds[1], size=size)


@dataclass(frozen=True)
class _Draws:
    """Every random number of a split but the noise, drawn up front in a fixed order (the split's images are a
    function of the seed alone)."""

    background: np.ndarray  # (n, 3)
    digit_colour: np.ndarray  # (n, 3)
    position: np.ndarray  # (n, 2): (y, x) of the digit patch
    donor_rank: np.ndarray  # (n, f): which donor of another class
    frag_sizes: np.ndarray  # (n, f, tries, 2): candidate (h, w)
    crop_u: np.ndarray  # (n, f, crops, 2): candidate crops of the donor
    place_u: np.ndarray  # (n, f): placement pick
    frag_alpha: np.ndarray  # (n, f): contrast
    frag_colour: np.ndarray  # (n, f, 3)


def _draw(rng: np.random.Generator, n: int, f: int, c: int, d: int) -> _Draws:
    """The split's random numbers, in the order the generator has always been read (changing it changes the
    data set). Fragments: a donor of ANOTHER class from the same split, _FRAGMENT_TRIES candidate sizes (the
    first that fits beside the digit is used), crop candidates, a placement pick, contrast and colour."""
    background = _uniform(rng, _BACKGROUND_RANGE, (n, 3)).astype(np.float32)
    digit_colour = _uniform(rng, _DIGIT_COLOUR_RANGE, (n, 3)).astype(np.float32)
    position = rng.integers(0, c - d + 1, size=(n, 2))
    donor_rank = rng.random((n, f))
    frag_sizes = _fragment_sizes(
        _uniform(rng, _FRAGMENT_AREA_RANGE, (n, f, _FRAGMENT_TRIES)),
        rng.random((n, f, _FRAGMENT_TRIES)),
        rng.random((n, f, _FRAGMENT_TRIES)) < 0.5,
        d,
    )
    crop_u = rng.random((n, f, _CROP_CANDIDATES, 2))
    place_u = rng.random((n, f))
    frag_alpha = _uniform(rng, _FRAGMENT_ALPHA_RANGE, (n, f)).astype(np.float32)
    frag_colour = _uniform(rng, _FRAGMENT_COLOUR_RANGE, (n, f, 3)).astype(np.float32)
    return _Draws(background, digit_colour, position, donor_rank, frag_sizes, crop_u, place_u, frag_alpha, frag_colour)


def _fragment_geometry(draws: _Draws, boxes: np.ndarray, c: int) -> tuple[np.ndarray, ...]:
    """Fragment geometry, vectorised: whether each fragment has room beside the digit (a fragment with none is
    skipped), and the first candidate size with room and its position: (placed, y, x, h, w), each (n, f)."""
    n, f = draws.place_u.shape
    tries_y, tries_x, tries_ok = _place_outside(
        np.broadcast_to(draws.place_u[:, :, None], (n, f, _FRAGMENT_TRIES)),
        c,
        draws.frag_sizes,
        np.broadcast_to(boxes[:, None, None, :], (n, f, _FRAGMENT_TRIES, 4)),
    )
    placed = tries_ok.any(axis=2)
    first = tries_ok.argmax(axis=2)[..., None]
    frag_y = np.take_along_axis(tries_y, first, axis=2)[..., 0]
    frag_x = np.take_along_axis(tries_x, first, axis=2)[..., 0]
    frag_h = np.take_along_axis(draws.frag_sizes[..., 0], first, axis=2)[..., 0]
    frag_w = np.take_along_axis(draws.frag_sizes[..., 1], first, axis=2)[..., 0]
    return placed, frag_y, frag_x, frag_h, frag_w


def _donors(draws: _Draws, labels: np.ndarray, split_sources: np.ndarray, split_labels: np.ndarray) -> np.ndarray:
    """(n, f) source ids of each fragment's donor: an image of another class from the same split."""
    donor_pool_sizes = np.array([(split_labels != cls).sum() for cls in range(_N_CLASSES)])
    donor_pools = [split_sources[split_labels != cls] for cls in range(_N_CLASSES)]
    donor_pick = (draws.donor_rank * donor_pool_sizes[labels][:, None]).astype(np.int64)
    donors = np.empty(draws.donor_rank.shape, dtype=np.int64)
    for cls in range(_N_CLASSES):
        rows = labels == cls
        donors[rows] = donor_pools[cls][donor_pick[rows]]
    return donors


def _paste_fragments(images: np.ndarray, draws: _Draws, donors: np.ndarray, geometry: tuple[np.ndarray, ...], upscaled: np.ndarray,
                     ink_tables_flat: np.ndarray, d: int) -> None:
    """Blend each placed fragment into `images`: among the candidate crops of its donor, the one with the most
    ink (4 look-ups per crop in the donors' summed-area tables)."""
    placed, frag_y, frag_x, frag_h, frag_w = geometry
    crop_y = (draws.crop_u[..., 0] * (d - frag_h + 1)[..., None]).astype(np.int64)  # (n, f, K)
    crop_x = (draws.crop_u[..., 1] * (d - frag_w + 1)[..., None]).astype(np.int64)
    table = donors[..., None]  # (n, f, 1): the donors' rows in ink_tables_flat
    y_lo, x_lo = crop_y, crop_x
    y_hi, x_hi = crop_y + frag_h[..., None], crop_x + frag_w[..., None]
    side = d + 1
    ink = (
        ink_tables_flat[table, y_hi * side + x_hi]
        - ink_tables_flat[table, y_lo * side + x_hi]
        - ink_tables_flat[table, y_hi * side + x_lo]
        + ink_tables_flat[table, y_lo * side + x_lo]
    )
    best = ink.argmax(axis=2)[..., None]
    crop_y = np.take_along_axis(crop_y, best, axis=2)[..., 0]
    crop_x = np.take_along_axis(crop_x, best, axis=2)[..., 0]
    for i, j in zip(*np.nonzero(placed)):
        h, w = int(frag_h[i, j]), int(frag_w[i, j])
        cy, cx, fy, fx = int(crop_y[i, j]), int(crop_x[i, j]), int(frag_y[i, j]), int(frag_x[i, j])
        crop = upscaled[donors[i, j], cy : cy + h, cx : cx + w]
        region = images[i, :, fy : fy + h, fx : fx + w]
        region += (draws.frag_alpha[i, j] * crop)[None] * (draws.frag_colour[i, j][:, None, None] - region)


def _paste_digits(images: np.ndarray, masks: np.ndarray, draws: _Draws, source_ids: np.ndarray, upscaled: np.ndarray, d: int) -> None:
    """Blend each image's digit in and write its mask. Fragments never intersect the digit's box and the digit
    is zero outside it, so drawing it after the fragments is the same as drawing it first."""
    for i in range(len(images)):
        py, px = int(draws.position[i, 0]), int(draws.position[i, 1])
        digit = upscaled[source_ids[i]]
        masks[i, py : py + d, px : px + d] = digit
        region = images[i, :, py : py + d, px : px + d]
        region += digit[None] * (draws.digit_colour[i][:, None, None] - region)


def _add_noise(images: np.ndarray, rng: np.random.Generator, noise: float) -> None:
    """Gaussian noise drawn chunk by chunk into one reused buffer, then clipped to [0, 1], in place."""
    n = len(images)
    buffer = np.empty((min(_CHUNK, n),) + images.shape[1:], dtype=np.float32)
    for lo in range(0, n, _CHUNK):
        chunk = images[lo : lo + _CHUNK]
        if noise > 0:
            draw = buffer[: chunk.shape[0]]
            rng.standard_normal(dtype=np.float32, out=draw)
            draw *= np.float32(noise)
            chunk += draw
        np.clip(chunk, 0.0, 1.0, out=chunk)


def build_digits_clutter(spec: DigitsClutterSpec, split: str) -> DigitsClutter:
    """Build one split (``"train"`` or ``"test"``) of ``digits-clutter`` for ``spec``; deterministic."""
    if not isinstance(spec, DigitsClutterSpec):
        raise ConfigError(f"spec must be a DigitsClutterSpec, got {type(spec).__name__}")
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(repr(s) for s in SPLITS)}; got {split!r}")

    _, source_labels = _load_source()
    upscaled, digit_boxes, ink_tables_flat = _upscaled_source(spec.digit_size)
    split_sources = _split_indices(spec, source_labels)[split]
    copies = spec.copies_train if split == "train" else spec.copies_test

    source_ids = np.tile(split_sources, copies).astype(np.int64)
    labels = source_labels[source_ids].astype(np.int64)
    n, c, d, f = source_ids.size, spec.canvas, spec.digit_size, spec.n_fragments

    # Every random number is drawn up front, in a fixed order, from one generator per split.
    rng = np.random.default_rng([spec.seed, _STREAM_SAMPLES[split]])
    draws = _draw(rng, n, f, c, d)
    boxes = digit_boxes[source_ids] + np.concatenate([draws.position[:, ::-1], draws.position[:, ::-1]], axis=1)
    geometry = _fragment_geometry(draws, boxes, c)
    placed, frag_y, frag_x, frag_h, frag_w = geometry
    donors = _donors(draws, labels, split_sources, source_labels[split_sources])

    images = np.empty((n, 3, c, c), dtype=np.float32)
    masks = np.zeros((n, c, c), dtype=np.float32)
    images[:] = draws.background[:, :, None, None]
    if f > 0:
        _paste_fragments(images, draws, donors, geometry, upscaled, ink_tables_flat, d)
    _paste_digits(images, masks, draws, source_ids, upscaled, d)
    _add_noise(images, rng, spec.noise)

    fragment_source_ids = np.where(placed, donors, -1).astype(np.int64)
    fragment_boxes = np.stack([frag_x, frag_y, frag_x + frag_w, frag_y + frag_h], axis=-1).astype(np.int64)
    fragment_boxes[~placed] = -1

    ids = tuple(f"{split}-{i:05d}" for i in range(n))
    for array in (images, labels, boxes, masks, source_ids, fragment_source_ids, fragment_boxes):
        array.setflags(write=False)
    return DigitsClutter(images=images, labels=labels, boxes=boxes, masks=masks, source_ids=source_ids, ids=ids, spec=spec, split=split,
                         fragment_source_ids=fragment_source_ids, fragment_boxes=fragment_boxes)


# -- the `[data]` spec and loader of this kind (registered in edgecam.data.DATASETS) -----------------------


@dataclass(frozen=True)
class DigitsClutterDataSpec(DataSpec):
    """`[data] name = "digits-clutter"`: the generator's canvas and digit size (pixels), test copies per
    source digit (360 test images per copy); `seed` seeds the split and every placement. Normalised with
    `MEAN` / `STD` unless mean / std are given."""

    KIND: ClassVar[str] = DATASET_NAME

    name: str = DATASET_NAME
    canvas: int = 64
    digit_size: int = 24
    copies_test: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.canvas < _SOURCE_SIZE:
            raise ConfigError(f"data.canvas: expected an integer >= {_SOURCE_SIZE} (pixels), got {self.canvas}")
        if not _SOURCE_SIZE <= self.digit_size <= self.canvas:
            raise ConfigError(f"data.digit_size: expected an integer from {_SOURCE_SIZE} to data.canvas ({self.canvas}): the digit is drawn whole "
                              f"on the canvas; got data.digit_size = {self.digit_size} with data.canvas = {self.canvas}")
        if self.copies_test < 1:
            raise ConfigError(f"data.copies_test: expected a positive integer, got {self.copies_test}")

    def generator_spec(self) -> DigitsClutterSpec:
        """The `DigitsClutterSpec` this builds (the generator's other settings at their defaults)."""
        return DigitsClutterSpec(canvas=self.canvas, digit_size=self.digit_size, seed=self.seed, copies_test=self.copies_test)


def load_digits_clutter_data(spec: DigitsClutterDataSpec) -> Datasets:
    """Both splits, generated and normalised in memory (small: 64 x 64); the fingerprint covers both
    splits' generator fingerprints."""
    from edgecam.cache import stable_hash

    gen = spec.generator_spec()
    train, test = build_digits_clutter(gen, "train"), build_digits_clutter(gen, "test")
    mean, std = spec.mean or MEAN, spec.std or STD
    return Datasets(
        ArraySplit(normalise(train.images, mean, std), train.labels, train.ids, train.masks),
        ArraySplit(normalise(test.images, mean, std), test.labels, test.ids, test.masks),
        stable_hash([train.fingerprint(), test.fingerprint()]), _N_CLASSES, mean, std,
        {"dataset": DATASET_NAME, "canvas": spec.canvas, "digit_size": spec.digit_size, "seed": spec.seed, "copies_test": spec.copies_test,
         "normalisation": {"mean": mean, "std": std}},
    )


DATASETS.add(DATASET_NAME, DatasetKind(DigitsClutterDataSpec, load_digits_clutter_data))
