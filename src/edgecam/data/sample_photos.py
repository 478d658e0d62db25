"""`[data] name = "sample-photos"`: real photographs that ship inside installed packages (scikit-image's
and matplotlib's sample data: nothing downloaded), labelled with their ImageNet class and a hand-placed box,
for ImageNet-pretrained models (the quickstart's EfficientNet-Lite0).

Each photo gives `views` evaluated images: the photo itself and `views - 1` seeded random crops (40-100% of
the area, aspect 3/4-4/3) with horizontal flips, its box mapped through the same crop and flip. Calibration
images (`calib_views` per photo) are other seeded crops and flips with brightness / contrast jitter: PTQ
scales come from views of the same scenes, never from the evaluated pixels themselves. The views are written
once as JPEGs under edgecam's cache (an image folder: `test/` + `test.csv` + `boxes/`, `calib/<class>/`)
and read through the image-folder path (lazy shards, bounded decoding), so this kind exercises exactly what
a user's folder does. Labels are ImageNet indices: `n_classes` is 1,000.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from edgecam.data.datasets import Datasets
from edgecam.data.decode import DecodeLimits, Preprocessing
from edgecam.data.spec import DATASETS, DatasetKind, DataSpec
from edgecam.errors import ConfigError

__all__ = ["PHOTOS", "SamplePhoto", "SamplePhotosDataSpec", "imagenet_class_names", "load_sample_photos", "write_sample_photos"]

KIND = "sample-photos"
_VERSION = 1  # bump when the written views change for the same settings


def _skimage(func: str) -> Callable[[], np.ndarray]:
    from edgecam.data.image_folder import skimage_photo

    return lambda: skimage_photo(func)


def _matplotlib(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import matplotlib.cbook
        from PIL import Image

        with matplotlib.cbook.get_sample_data(name) as f:
            return np.asarray(Image.open(f).convert("RGB"))

    return load


@dataclass(frozen=True)
class SamplePhoto:
    """One bundled photo: its loader, ImageNet class index (the label), and the object's box (xmin, ymin,
    xmax, ymax) in the photo's pixels, placed by hand on the object of that class."""

    name: str
    load: Callable[[], np.ndarray]
    label: int
    box: tuple[int, int, int, int]


# ImageNet indices: torchvision's category list (`imagenet_class_names`). Boxes placed by hand.
PHOTOS: tuple[SamplePhoto, ...] = (
    SamplePhoto("chelsea", _skimage("chelsea"), 281, (5, 0, 400, 300)),  # tabby cat, 451 x 300
    SamplePhoto("coffee", _skimage("coffee"), 967, (175, 15, 425, 300)),  # espresso, 600 x 400
    SamplePhoto("rocket", _skimage("rocket"), 657, (300, 125, 345, 410)),  # missile (Falcon 9 on the pad), 640 x 427
    SamplePhoto("motorcycle", _skimage("stereo_motorcycle"), 665, (90, 20, 690, 450)),  # moped, 741 x 500
    SamplePhoto("camera", _skimage("camera"), 872, (225, 140, 410, 512)),  # tripod (with the camera on it), grayscale 512 x 512
    SamplePhoto("grace_hopper", _matplotlib("grace_hopper.jpg"), 652, (15, 20, 512, 600)),  # military uniform, 512 x 600
)


def imagenet_class_names() -> tuple[str, ...]:
    """The 1,000 ImageNet class names in index order (from torchvision, no download), made unique: the two
    names ImageNet repeats ("crane", "maillot") carry their index."""
    from edgecam.models.efficientnet_lite import imagenet_categories

    names = imagenet_categories()
    seen = {n for n in names if names.count(n) > 1}
    return tuple(f"{n} ({i})" if n in seen else n for i, n in enumerate(names))


@dataclass(frozen=True)
class SamplePhotosDataSpec(DataSpec):
    """`[data] name = "sample-photos"`: `views` evaluated images per photo (the photo and seeded crops /
    flips), `calib_views` calibration views per photo, resized / centre-cropped to `resize` / `crop`.
    Normalised with ImageNet's mean / std unless mean / std are given (EfficientNet-Lite0: 127/255, 128/255)."""

    KIND: ClassVar[str] = KIND

    name: str = KIND
    views: int = 4
    calib_views: int = 8
    resize: int = 256
    crop: int = 224

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.views < 1:
            raise ConfigError(f"data.views: expected a positive integer (1: the photos only), got {self.views}")
        if self.calib_views < 1:
            raise ConfigError(f"data.calib_views: expected a positive integer, got {self.calib_views}")
        Preprocessing(self.resize, self.crop)


def _view(img: "Any", box: tuple[float, float, float, float], rng: np.random.Generator, min_area: float, jitter: bool) -> tuple["Any", tuple[float, float, float, float] | None]:
    """A seeded random crop (area fraction in [min_area, 1], aspect in [3/4, 4/3]) and horizontal flip of the
    PIL image `img`, optionally with brightness / contrast jitter; the box mapped through it (None: cut away)."""
    from PIL import Image, ImageEnhance

    w, h = img.size
    for _ in range(20):
        area = rng.uniform(min_area, 1.0) * w * h
        aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        cw, ch = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
        if cw <= w and ch <= h:
            break
    else:
        cw, ch = w, h
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = img.crop((x0, y0, x0 + cw, y0 + ch))
    bx0, by0, bx1, by1 = max(box[0] - x0, 0), max(box[1] - y0, 0), min(box[2] - x0, cw), min(box[3] - y0, ch)
    mapped: tuple[float, float, float, float] | None = (bx0, by0, bx1, by1) if bx1 > bx0 and by1 > by0 else None
    if rng.random() < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
        if mapped is not None:
            mapped = (cw - mapped[2], mapped[1], cw - mapped[0], mapped[3])
    if jitter:
        out = ImageEnhance.Brightness(out).enhance(float(rng.uniform(0.8, 1.2)))
        out = ImageEnhance.Contrast(out).enhance(float(rng.uniform(0.8, 1.2)))
    return out, mapped


def write_sample_photos(root: Path, views: int, calib_views: int, seed: int) -> Path:
    """Write the views (once: a marker file names what is complete) under `root`; returns `root`."""
    from PIL import Image

    from edgecam.data.image_folder import voc_xml

    marker = root / ".complete"
    if marker.is_file():
        return root
    names = imagenet_class_names()
    rows: list[tuple[str, int]] = []
    for k, photo in enumerate(PHOTOS):
        img = Image.fromarray(photo.load()).convert("RGB")
        rng = np.random.default_rng([seed, k])
        for v in range(views):
            view, box = (img, tuple(float(b) for b in photo.box)) if v == 0 else _view(img, photo.box, rng, 0.4, jitter=False)
            fname = f"{photo.name}-{v:02d}.jpg"
            (root / "test").mkdir(parents=True, exist_ok=True)
            view.save(root / "test" / fname, quality=95)
            rows.append((fname, photo.label))
            if box is not None:
                (root / "boxes").mkdir(parents=True, exist_ok=True)
                (root / "boxes" / f"{Path(fname).stem}.xml").write_text(voc_xml(fname, view.size[0], view.size[1], [(names[photo.label], box)]))
        calib_dir = root / "calib" / names[photo.label]
        calib_dir.mkdir(parents=True, exist_ok=True)
        for v in range(calib_views):
            view, _box = _view(img, photo.box, rng, 0.3, jitter=True)
            view.save(calib_dir / f"{photo.name}-calib-{v:02d}.jpg", quality=95)
    with open(root / "test.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label"])
        writer.writerows(rows)
    marker.write_text("ok")
    return root


def load_sample_photos(spec: SamplePhotosDataSpec) -> Datasets:
    """The views as an image folder (written under the cache on first use), evaluated whole, calibrated on
    the calibration views."""
    from edgecam.cache import cache_dir, stable_hash
    from edgecam.data.datasets import IMAGENET_MEAN, IMAGENET_STD
    from edgecam.data.image_folder import folder_datasets, index_calibration_folder, index_image_folder

    key = stable_hash([_VERSION, spec.views, spec.calib_views, spec.seed, [p.name for p in PHOTOS]])
    root = write_sample_photos(cache_dir() / "data" / f"{KIND}-{key}", spec.views, spec.calib_views, spec.seed)
    prep = Preprocessing(spec.resize, spec.crop)
    names = imagenet_class_names()
    limits = DecodeLimits()
    test = index_image_folder(root / "test", root / "test.csv", root / "boxes", class_names=names, prep=prep, limits=limits)
    calib = index_calibration_folder(root / "calib", names, prep, limits)
    mean, std = spec.mean or IMAGENET_MEAN, spec.std or IMAGENET_STD
    return folder_datasets(test, calib, prep, limits, mean, std, len(names), KIND, [KIND, key],
                           {"photos": [{"name": p.name, "label": p.label, "class": names[p.label]} for p in PHOTOS], "views": spec.views, "calib_views": spec.calib_views})


DATASETS.add(KIND, DatasetKind(SamplePhotosDataSpec, load_sample_photos))
