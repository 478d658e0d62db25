"""Bounded decoding of one image file into the torchvision-style ``Resize(resize)`` + ``CenterCrop(crop)``
input: memory per image is bounded by the crop, the cap on decoded pixels and a fixed resize budget, never by
the file's shape.

* **Header check** (`read_header`): `Image.open` reads the size, `verify` walks the file's structure (PNG
  chunks / CRCs); no pixel is decoded. The size after JPEG draft is checked against the cap here, so an
  oversized file fails before any work, naming it.
* **JPEG draft**: a JPEG whose shorter side is at least ``2 * DRAFT_GAP * resize`` is decoded by libjpeg at
  1/2, 1/4 or 1/8 scale (the largest that keeps ``DRAFT_GAP`` = 2 source pixels per output pixel, Pillow's
  ``thumbnail`` rule), then resized from there. Measured on a detailed 6000 x 4000 photo mosaic at resize
  256 / crop 224: at most 3/255 from the full decode, mean 0.3/255. ``jpeg_draft = False`` decodes in full.
* **Crop before resize**: the shorter side is resized exactly as before and the image is resized whole and
  cropped (bit-identical to torchvision) while the resized image has at most
  ``max(exact_resize_pixels, 4 * resize**2)`` pixels, i.e. for every aspect ratio up to 61:1 at resize 256.
  Beyond that (a 1 x 2000 strip would resize to 256 x 512,000) only the rows (or columns) of the crop are
  resampled along the long axis: Pillow takes the box in float32, so those pixels may differ from the
  resize-then-crop by up to 2/255 (measured), while the short axis stays exact.
* **Cap**: more than ``max_pixels`` decoded pixels (after draft) is refused with a `ConfigError` naming the
  file; Pillow's own decompression-bomb error (over ``2 * Image.MAX_IMAGE_PIXELS``) becomes one too.
"""

from __future__ import annotations

import math
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from edgecam.errors import ConfigError

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["DRAFT_GAP", "IMAGE_EXTENSIONS", "DecodeLimits", "ImageHeader", "Preprocessing", "decode_image", "draft_scale", "read_header", "to_unit"]

DRAFT_GAP = 2.0  # source pixels per output pixel kept by JPEG draft (Pillow's `thumbnail` reducing_gap)
# torchvision's IMG_EXTENSIONS (compared lower-case, so ImageNet's ".JPEG" matches)
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_FORMATS = f"readable {', '.join(IMAGE_EXTENSIONS)} file"


def _pixels(key: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{key}: expected a positive integer (pixels), got {value!r}")


@dataclass(frozen=True)
class Preprocessing:
    """torchvision-style ``Resize(resize)`` (shorter side) then ``CenterCrop(crop)``; pixels in [0, 1]."""

    resize: int = 256
    crop: int = 224

    def __post_init__(self) -> None:
        _pixels("data.resize", self.resize)
        _pixels("data.crop", self.crop)
        if self.crop > self.resize:
            raise ConfigError(f"data.crop: expected at most data.resize ({self.resize}) so the centre crop needs no padding, got {self.crop}")

    def to_dict(self) -> dict[str, Any]:
        """What the artifact manifest records about the input pipeline."""
        import PIL

        return {
            "resize_shorter_side": self.resize,
            "center_crop": self.crop,
            "interpolation": "bilinear (PIL, antialiased)",
            "library": f"Pillow {PIL.__version__}",
            "colour": "RGB (grayscale / palette / CMYK converted, alpha dropped)",
            "value_range": [0.0, 1.0],
            "layout": "NCHW",
            "dtype": "float32",
        }

    def geometry(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(resized width, resized height, crop left, crop top): torchvision's ``_compute_resized_output_size``
        (the longer side is ``int(resize * long / short)``) and ``center_crop`` (``int(round((h - crop) / 2))``)."""
        if width <= height:
            new_w, new_h = self.resize, int(self.resize * height / width)
        else:
            new_w, new_h = int(self.resize * width / height), self.resize
        return new_w, new_h, int(round((new_w - self.crop) / 2.0)), int(round((new_h - self.crop) / 2.0))


@dataclass(frozen=True)
class DecodeLimits:
    """How an image may be decoded: `max_pixels` decoded pixels at most (after JPEG draft), `jpeg_draft`
    (decode large JPEGs at a reduced scale), `exact_resize_pixels` (the resize-then-crop budget, see module)."""

    max_pixels: int = 50_000_000
    jpeg_draft: bool = True
    exact_resize_pixels: int = 4_000_000

    def __post_init__(self) -> None:
        _pixels("data.max_decode_pixels", self.max_pixels)
        _pixels("exact_resize_pixels", self.exact_resize_pixels)
        if not isinstance(self.jpeg_draft, bool):
            raise ConfigError(f"data.jpeg_draft: expected true or false, got {self.jpeg_draft!r}")


@dataclass(frozen=True)
class ImageHeader:
    """What the header says: the file's (width, height), and the size and scale it decodes at."""

    size: tuple[int, int]
    decoded: tuple[int, int]
    draft: int  # 1, 2, 4 or 8


def draft_scale(width: int, height: int, prep: Preprocessing) -> int:
    """The JPEG draft scale (1, 2, 4, 8) for a `width` x `height` file: the largest that keeps `DRAFT_GAP`
    source pixels per resized pixel (Pillow's `draft` rule on the requested size)."""
    new_w, new_h, _, _ = prep.geometry(width, height)
    fit = min(width // max(1, int(new_w * DRAFT_GAP)), height // max(1, int(new_h * DRAFT_GAP)))
    return next(s for s in (8, 4, 2, 1) if fit >= s or s == 1)


@contextmanager
def _opened(path: Path) -> Iterator["PILImage.Image"]:
    """`Image.open(path)`, with Pillow's decompression-bomb warning silenced (our own cap applies) and its
    error, and unreadable files, turned into `ConfigError` naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ConfigError(f"image {path}: too large to decode ({exc}); expected at most data.max_decode_pixels pixels (Pillow refuses more than "
                          f"{2 * (Image.MAX_IMAGE_PIXELS or 0)}); downscale the file") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ConfigError(f"image {path}: cannot be decoded as an image ({type(exc).__name__}: {exc}); expected a {_FORMATS}") from exc
    with img:
        yield img


def _draft(img: "PILImage.Image", prep: Preprocessing | None, limits: DecodeLimits) -> tuple[int, tuple[float, float]]:
    """Apply JPEG draft where it pays; returns (scale, the original image's extent in the drafted pixels)."""
    width, height = img.size
    full = 1, (float(width), float(height))
    if prep is None or not limits.jpeg_draft or img.format not in ("JPEG", "MPO") or draft_scale(width, height, prep) == 1:
        return full
    new_w, new_h, _, _ = prep.geometry(width, height)
    result = img.draft(img.mode, (max(1, int(new_w * DRAFT_GAP)), max(1, int(new_h * DRAFT_GAP))))  # the same rule as draft_scale
    if result is None:  # not a single-tile baseline image: Pillow decodes in full
        return full
    ex_w, ex_h = float(result[1][2]), float(result[1][3])
    return int(round(width / ex_w)), (ex_w, ex_h)


def _check_cap(path: Path, size: tuple[int, int], decoded: tuple[int, int], limits: DecodeLimits) -> None:
    pixels = decoded[0] * decoded[1]
    if pixels > limits.max_pixels:
        how = f" (after JPEG draft: {decoded[0]} x {decoded[1]})" if decoded != size else ""
        raise ConfigError(f"image {path}: {size[0]} x {size[1]} decodes to {pixels:,} pixels{how}, over data.max_decode_pixels = {limits.max_pixels:,}; "
                          "downscale the file or raise data.max_decode_pixels")


def read_header(path: str | os.PathLike[str], prep: Preprocessing | None = None, limits: DecodeLimits | None = None) -> ImageHeader:
    """Check `path` without decoding pixels: it opens, its header gives a size, its structure verifies, and
    what it would decode to (JPEG draft for `prep`, if given) is within `limits.max_pixels`."""
    path, limits = Path(path), limits or DecodeLimits()
    with _opened(path) as img:
        size = img.size
        scale, _extent = _draft(img, prep, limits)
        decoded = img.size
        _check_cap(path, size, decoded, limits)
        try:
            img.verify()
        except (OSError, SyntaxError, ValueError) as exc:
            raise ConfigError(f"image {path}: cannot be decoded as an image ({type(exc).__name__}: {exc}); expected a {_FORMATS}") from exc
    return ImageHeader(size, decoded, scale)


def to_unit(img: "PILImage.Image") -> np.ndarray:
    """An RGB PIL image as (3, H, W) float32 in [0, 1] (what torchvision's `ToTensor` gives)."""
    return (np.asarray(img, dtype=np.float32) / 255.0).transpose(2, 0, 1)


def _resize_crop(img: "PILImage.Image", prep: Preprocessing, size: tuple[int, int], extent: tuple[float, float], limits: DecodeLimits) -> "PILImage.Image":
    """`prep`'s resize and centre crop of an image whose original `size` spans `extent` of `img`'s pixels
    (`img.size` unless JPEG draft reduced it): exact resize-then-crop within the budget, else the crop's
    rows / columns only along the long axis (see the module)."""
    from PIL import Image

    bilinear = Image.Resampling.BILINEAR
    new_w, new_h, left, top = prep.geometry(*size)
    c, (ex_w, ex_h) = prep.crop, extent
    if new_w * new_h <= max(limits.exact_resize_pixels, 4 * prep.resize * prep.resize):
        box = None if (ex_w, ex_h) == tuple(float(v) for v in img.size) else (0.0, 0.0, ex_w, ex_h)
        return img.resize((new_w, new_h), bilinear, box=box).crop((left, top, left + c, top + c))
    if new_h >= new_w:  # tall: resample only the crop's rows vertically
        sy = ex_h / new_h
        return img.resize((new_w, c), bilinear, box=(0.0, top * sy, ex_w, (top + c) * sy)).crop((left, 0, left + c, c))
    sx = ex_w / new_w  # wide: only the crop's columns horizontally
    return img.resize((c, new_h), bilinear, box=(left * sx, 0.0, (left + c) * sx, ex_h)).crop((0, top, c, top + c))


def decode_image(path: str | os.PathLike[str], prep: Preprocessing, limits: DecodeLimits | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode `path` bounded (JPEG draft, pixel cap, crop before resize): ((3, crop, crop) float32 in [0, 1],
    the file's (width, height)). Grayscale is resized as is and replicated (identical to converting first);
    other modes are converted to RGB first, alpha dropped (torchvision's `pil_loader`)."""
    path, limits = Path(path), limits or DecodeLimits()
    with _opened(path) as img:
        size = img.size
        _scale, extent = _draft(img, prep, limits)
        _check_cap(path, size, img.size, limits)
        try:
            img.load()
            src = img if img.mode in ("RGB", "L") else img.convert("RGB")
            out = _resize_crop(src, prep, size, extent, limits)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ConfigError(f"image {path}: cannot be decoded ({type(exc).__name__}: {exc})") from exc
    return to_unit(out if out.mode == "RGB" else out.convert("RGB")), size
