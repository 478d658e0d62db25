"""Real image-folder datasets: ImageNet-style class trees or a flat folder plus a labels CSV, with optional
Pascal-VOC XML boxes (the ImageNet validation box format) for weakly-supervised localisation.

Two layouts:

* tree: ``ROOT/<class>/<file>`` (sub-folders of a class folder are walked too), class index = position of
  the folder name in the sorted folder names (torchvision's ``ImageFolder`` order), or in ``class_names``;
* csv:  images anywhere under ``ROOT`` and a CSV with a header row naming a file column and a label column
  (see ``FILE_COLUMNS`` / ``LABEL_COLUMNS``); a label is a class name or an integer class index.

Boxes: ``boxes_dir/<relative dir>/<stem>.xml`` or ``boxes_dir/<stem>.xml`` per image,
``<annotation><size>..</size><object><name>..</name><bndbox><xmin>..``. Coordinates are used as written
(the convention of Choe et al., CVPR 2020, ``wsolevaluation``), mapped through the same resize and crop as
the pixels; the mask is the union of every box of the image (ImageNet validation files hold only objects of
the image's class). Images without a box file get an all-zero mask and ``has_box = False``.

Preprocessing (torchvision's ``Resize(resize)`` + ``CenterCrop(crop)`` on PIL images): the shorter side is
resized to ``resize`` with PIL's antialiased bilinear filter, the centre ``crop`` x ``crop`` is cut, pixels
become float32 in [0, 1], (N, 3, crop, crop). Grayscale, palette, CMYK and RGBA images are converted to
RGB (alpha dropped, as torchvision's ``pil_loader`` does). Normalisation by mean / std is the model's
business and is left to the caller.

Decoding is bounded (``decode.py``: JPEG draft for files much larger than the target, crop before resize
for extreme aspect ratios, a cap on decoded pixels, ``data.max_decode_pixels``).

``index_image_folder`` checks everything (folders, CSV, XML, every image's header and decoded size, box
sizes against image sizes) before any pixel is decoded; ``load_image_folder_data`` (the registered loader)
returns lazy splits (`FolderSplit`) that decode shard by shard; ``load_image_folder`` decodes a whole folder
at once (small folders, tests). All raise ``ConfigError`` naming the file and what was expected.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Optional, Sequence

import numpy as np

from edgecam.data.datasets import IMAGENET_MEAN, IMAGENET_STD, Datasets, Index, Split
from edgecam.data.decode import IMAGE_EXTENSIONS, DecodeLimits, Preprocessing, decode_image, read_header, to_unit
from edgecam.data.spec import DATASETS, DatasetKind, DataSpec
from edgecam.errors import ConfigError

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = [
    "IMAGE_EXTENSIONS",
    "FILE_COLUMNS",
    "LABEL_COLUMNS",
    "Preprocessing",
    "ImageRecord",
    "ImageFolderIndex",
    "ImageFolderData",
    "ImageFolderDataSpec",
    "DecodeLimits",
    "FolderSplit",
    "index_image_folder",
    "load_image_folder",
    "load_image_folder_data",
    "preprocess",
    "reference_decode",
    "stratified_split",
    "read_voc_boxes",
    "transform_boxes",
    "boxes_to_mask",
    "SKIMAGE_PHOTOS",
    "SkimageFolder",
    "skimage_photo",
    "voc_xml",
    "write_skimage_folder",
]

FILE_COLUMNS: tuple[str, ...] = ("file", "filename", "file_name", "image", "image_id", "path")
LABEL_COLUMNS: tuple[str, ...] = ("label", "class", "class_name", "target")
_FORMAT_VERSION = 2  # part of the fingerprint: bump when the pixels produced for the same files change


@dataclass(frozen=True)
class ImageRecord:
    """One image of the index: where it is, its id (relative POSIX path), label, box file if any, and (when the
    index checked the images) the file's (width, height) and its boxes as read from the box file."""

    path: Path
    id: str
    label: int
    box_file: Path | None
    size: tuple[int, int] | None = None
    boxes: tuple[tuple[float, float, float, float], ...] | None = None


@dataclass(frozen=True)
class ImageFolderIndex:
    """The checked list of images (sorted by id) and the class names; nothing decoded yet."""

    root: Path
    layout: str  # "tree" | "csv"
    class_names: tuple[str, ...]
    records: tuple[ImageRecord, ...]
    labels_csv: Path | None = None
    boxes_dir: Path | None = None
    available: int | None = None  # images the folder held before a `limit` cut it (None: not cut)

    def __len__(self) -> int:
        return len(self.records)


@dataclass
class ImageFolderData:
    """Decoded, preprocessed images with everything the pipeline needs.

    images: (N, 3, crop, crop) float32 in [0, 1] (NOT normalised); labels: (N,) int64; ids: relative paths;
    masks: (N, crop, crop) float32, 1 inside the union of the image's boxes; has_box: (N,) bool;
    boxes: per image a (K, 4) float32 array of (x0, y0, x1, y1) in the preprocessed image's pixels."""

    images: np.ndarray
    labels: np.ndarray
    ids: list[str]
    class_names: list[str]
    masks: np.ndarray
    has_box: np.ndarray
    boxes: list[np.ndarray]
    preprocessing: dict[str, Any]
    fingerprint: str
    source: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ImageFolderData":
        """The images at `indices` (in that order); the fingerprint covers the parent's and the selection."""
        idx = np.asarray(indices, dtype=np.int64)
        fp = hashlib.sha256(f"{self.fingerprint}:{idx.tolist()}".encode()).hexdigest()
        return ImageFolderData(
            self.images[idx], self.labels[idx], [self.ids[i] for i in idx], list(self.class_names), self.masks[idx],
            self.has_box[idx], [self.boxes[i] for i in idx], dict(self.preprocessing), fp, dict(self.source),
        )


# -- indexing (validation before any decoding) -----------------------------------------------------------


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _walk_images(directory: Path) -> list[Path]:
    """Image files under `directory`, recursively, hidden files and folders skipped, sorted. Symlinked
    folders are followed once each, never to a folder that contains `directory` (a link back up the tree,
    `x -> ..`, would repeat every image below it or pull in other classes' images), and a file reached by two
    paths (two links to one file) is listed once."""
    out: list[Path] = []
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    top = os.path.realpath(directory) + os.sep
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        st = os.stat(dirpath)
        real = os.path.realpath(dirpath) + os.sep
        if (st.st_dev, st.st_ino) in seen_dirs or (real != top and top.startswith(real)):
            dirnames[:] = []
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            path = Path(dirpath) / f
            if _is_image(path):
                _check_name(path)
                fst = path.stat()
                if (fst.st_dev, fst.st_ino) not in seen_files:
                    seen_files.add((fst.st_dev, fst.st_ino))
                    out.append(path)
    return sorted(out)


def _check_name(path: Path) -> None:
    """File names become image ids (rows, reports, fingerprints): they must be text. A name that is not valid
    UTF-8 (Python holds its bytes as surrogates) is refused, naming the folder and the byte."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raw = os.fsencode(path.name)
        raise ConfigError(f"image folder: {path.parent}: file name {raw!r} is not valid UTF-8 (byte {raw[exc.start:exc.start + 1]!r}); rename it") from None


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _tree_entries(root: Path, class_names: Sequence[str] | None) -> tuple[tuple[str, ...], list[tuple[Path, int]]]:
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        loose = [p.name for p in root.iterdir() if _is_image(p)][:3]
        hint = f" (found images directly in it, e.g. {', '.join(loose)}: pass a labels CSV for a flat folder)" if loose else ""
        raise ConfigError(f"image folder {root}: expected one sub-folder per class (ROOT/<class>/<image>){hint}")
    names = tuple(class_names) if class_names is not None else tuple(folders)
    unknown = [f for f in folders if f not in names]
    if unknown:
        raise ConfigError(f"image folder {root}: class folder(s) {', '.join(unknown)} not among the class names given ({_preview(names)})")
    entries: list[tuple[Path, int]] = []
    owner: dict[tuple[int, int], str] = {}
    for folder in folders:
        files = _walk_images(root / folder)
        if not files:
            raise ConfigError(f"image folder {root}: class folder {folder!r} holds no image ({', '.join(IMAGE_EXTENSIONS)}, any case)")
        for f in files:
            st = f.stat()
            other = owner.setdefault((st.st_dev, st.st_ino), folder)
            if other != folder:
                raise ConfigError(f"image folder {root}: {_rel(f, root)} is the same file as one in class {other!r} (links to one image under two classes)")
        entries += [(f, names.index(folder)) for f in files]
    return names, entries


def _preview(values: Sequence[str], n: int = 10) -> str:
    head = ", ".join(values[:n])
    return head + (f", ... ({len(values)} in all)" if len(values) > n else "")


def _csv_column(header: list[str], wanted: tuple[str, ...], what: str, path: Path) -> int:
    lowered = [h.strip().lower() for h in header]
    for name in wanted:
        if name in lowered:
            return lowered.index(name)
    raise ConfigError(
        f"labels CSV {path}: expected a header row with a {what} column named one of {', '.join(wanted)}; "
        f"found columns {header!r}"
    )


def _parse_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _csv_entries(root: Path, labels_csv: Path, class_names: Sequence[str] | None) -> tuple[tuple[str, ...], list[tuple[Path, int]]]:
    if not labels_csv.is_file():
        raise ConfigError(f"labels CSV {labels_csv}: file not found")
    raw = labels_csv.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:  # offsets of the whole file: its line and byte can be named
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"labels CSV {labels_csv} line {line}: not UTF-8 text (byte {raw[exc.start:exc.start + 1]!r} at offset {exc.start}); save it as UTF-8") from None
    try:
        rows = [r for r in csv.reader(io.StringIO(text, newline="")) if any(c.strip() for c in r)]
    except csv.Error as exc:
        raise ConfigError(f"labels CSV {labels_csv}: malformed CSV: {exc}") from None
    if not rows:
        raise ConfigError(f"labels CSV {labels_csv}: empty; expected a header row (file, label) and one row per image")
    header, body = rows[0], rows[1:]
    fcol = _csv_column(header, FILE_COLUMNS, "file", labels_csv)
    lcol = _csv_column(header, LABEL_COLUMNS, "label", labels_csv)
    if not body:
        raise ConfigError(f"labels CSV {labels_csv}: no rows after the header; expected one row per image (file, label)")
    pairs: list[tuple[int, str, str]] = []
    for line, row in enumerate(body, start=2):
        if len(row) <= max(fcol, lcol) or not row[fcol].strip() or not row[lcol].strip():
            raise ConfigError(f"labels CSV {labels_csv} line {line}: expected a file name and a label, got {row!r}")
        pairs.append((line, row[fcol].strip(), row[lcol].strip()))
    ints = [_parse_int(lab) for _, _, lab in pairs]
    if class_names is not None:
        names = tuple(class_names)
    elif all(i is not None for i in ints):
        names = tuple(str(i) for i in range(max(ints) + 1))  # type: ignore[type-var]
    elif any(i is not None for i in ints):
        line, _, lab = next(p for p, i in zip(pairs, ints) if i is not None)
        raise ConfigError(f"labels CSV {labels_csv} line {line}: label {lab!r} is an index but other labels are class names; use one kind, or give the class names")
    else:
        names = tuple(sorted({lab for _, _, lab in pairs}))
    entries: list[tuple[Path, int]] = []
    seen: dict[str, int] = {}
    for (line, name, lab), as_int in zip(pairs, ints):
        if lab in names:
            label = names.index(lab)
        elif as_int is not None and 0 <= as_int < len(names):
            label = as_int
        else:
            raise ConfigError(f"labels CSV {labels_csv} line {line}: unknown label {lab!r}; expected a class name ({_preview(names)}) or an index in [0, {len(names) - 1}]")
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:  # lexical: symlinked files inside the folder are followed
            raise ConfigError(f"labels CSV {labels_csv} line {line}: {name!r} is outside {root}; expected a path relative to the image folder, without '..'")
        path = root / rel
        if not path.is_file():
            raise ConfigError(f"labels CSV {labels_csv} line {line}: image {name!r} not found under {root}")
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ConfigError(f"labels CSV {labels_csv} line {line}: {name!r} is not an image file; expected one of {', '.join(IMAGE_EXTENSIONS)}")
        if name in seen:
            raise ConfigError(f"labels CSV {labels_csv} line {line}: {name!r} already listed on line {seen[name]}")
        seen[name] = line
        entries.append((root / name, label))
    return names, entries


def _box_file(boxes_dir: Path, image_id: str) -> Path | None:
    rel = Path(image_id)
    for candidate in (boxes_dir / rel.with_suffix(".xml"), boxes_dir / f"{rel.stem}.xml"):
        if candidate.is_file():
            return candidate
    return None


def _limited(entries: list[tuple[Path, int]], limit: int | None) -> list[tuple[Path, int]]:
    """At most `limit` entries, taken round-robin over classes (the i-th image of every class, then the next),
    so a small limit still covers the classes; returned in the original (sorted) order."""
    if limit is None or limit >= len(entries):
        return entries
    by_class: dict[int, list[int]] = {}
    for i, (_p, label) in enumerate(entries):
        by_class.setdefault(label, []).append(i)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < limit:
        for label in sorted(by_class):
            if depth < len(by_class[label]) and len(chosen) < limit:
                chosen.append(by_class[label][depth])
        depth += 1
    return [entries[i] for i in sorted(chosen)]


def index_image_folder(
    root: str | os.PathLike[str],
    labels_csv: str | os.PathLike[str] | None = None,
    boxes_dir: str | os.PathLike[str] | None = None,
    class_names: Sequence[str] | None = None,
    limit: int | None = None,
    check_images: bool = True,
    prep: Preprocessing | None = None,
    limits: DecodeLimits | None = None,
) -> ImageFolderIndex:
    """List and check an image folder without decoding pixels: the layout (a class tree, or `labels_csv`),
    labels, box XMLs (parsed), and with `check_images` every image's header (`decode.read_header`: it opens,
    verifies, and decodes to at most `limits.max_pixels`, after JPEG draft for `prep` if given) and every box
    file's declared size against it. Raises `ConfigError` naming the folder / file / CSV line and what was
    expected. `limit` keeps that many images, round-robin over classes. Records are sorted by id."""
    root = Path(root)
    if not root.exists():
        raise ConfigError(f"image folder {root}: not found")
    if not root.is_dir():
        raise ConfigError(f"image folder {root}: not a directory")
    if not any(p for p in root.iterdir() if not p.name.startswith(".")):
        raise ConfigError(f"image folder {root}: empty; expected ROOT/<class>/<image> or images plus a labels CSV")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ConfigError(f"data.limit: expected a positive integer, got {limit!r}")
    if class_names is not None and len(set(class_names)) != len(class_names):
        raise ConfigError(f"class names: expected unique names, got duplicates in {list(class_names)!r}")
    csv_path = Path(labels_csv) if labels_csv is not None else None
    names, entries = _csv_entries(root, csv_path, class_names) if csv_path is not None else _tree_entries(root, class_names)
    available = len(entries)
    entries = _limited(sorted(entries, key=lambda e: _rel(e[0], root)), limit)
    if len(entries) < available:  # never silent: a cut folder says so here and in its source record (the manifest)
        logging.getLogger(__name__).warning("image folder %s: using %d of %d images (data.limit = %d)", root, len(entries), available, limit)
    bdir = Path(boxes_dir) if boxes_dir is not None else None
    if bdir is not None and not bdir.is_dir():
        raise ConfigError(f"boxes folder {bdir}: not found (expected Pascal-VOC XML files named after the images)")
    records: list[ImageRecord] = []
    for path, label in entries:
        image_id = _rel(path, root)
        box = _box_file(bdir, image_id) if bdir is not None else None
        raw = read_voc_boxes(box) if box is not None else None  # parse now: a malformed file fails before any work
        size = read_header(path, prep, limits).size if check_images else None
        if raw is not None and size is not None:
            _check_declared(box, raw[2], path, size)  # type: ignore[arg-type]
        boxes = tuple(tuple(float(v) for v in b) for b in raw[0]) if raw is not None and size is not None else None  # else read (and checked) at use
        records.append(ImageRecord(path, image_id, label, box, size, boxes))  # type: ignore[arg-type]
    return ImageFolderIndex(root, "csv" if csv_path else "tree", tuple(names), tuple(records), csv_path, bdir, available if len(records) < available else None)


def _check_declared(box_file: Path, declared: tuple[int, int] | None, path: Path, size: tuple[int, int]) -> None:
    if declared is not None and declared != tuple(size):
        raise ConfigError(f"box file {box_file}: declares <size> {declared[0]}x{declared[1]} but image {path} is {size[0]}x{size[1]}")


# -- boxes -----------------------------------------------------------------------------------------------


def _xml_number(node: ET.Element, tag: str, path: Path, where: str) -> float:
    child = node.find(tag)
    if child is None or child.text is None:
        raise ConfigError(f"box file {path}: {where} has no <{tag}>; expected <bndbox><xmin>..</xmin><ymin>..<xmax>..<ymax>..</bndbox>")
    try:
        value = float(child.text.strip())
    except ValueError as exc:
        raise ConfigError(f"box file {path}: {where} <{tag}> is {child.text.strip()!r}, expected a number") from exc
    if not (abs(value) < 1e9):  # nan, inf, or no pixel coordinate an image can have
        raise ConfigError(f"box file {path}: {where} <{tag}> is {child.text.strip()!r}, expected a finite pixel coordinate")
    return value


def read_voc_boxes(path: str | os.PathLike[str]) -> tuple[np.ndarray, list[str], tuple[int, int] | None]:
    """Parse a Pascal-VOC / ImageNet-validation XML: ((K, 4) float32 boxes (xmin, ymin, xmax, ymax) in the
    original image's pixels, object names, declared (width, height) or None)."""
    path = Path(path)
    try:
        tree = ET.parse(path)
    except ET.ParseError as exc:
        raise ConfigError(f"box file {path}: malformed XML ({exc}); expected Pascal-VOC <annotation><object><bndbox>") from exc
    ann = tree.getroot()
    if ann.tag != "annotation":
        raise ConfigError(f"box file {path}: root element is <{ann.tag}>, expected <annotation> (Pascal-VOC)")
    size = ann.find("size")
    declared = None
    if size is not None and size.find("width") is not None:
        declared = (int(_xml_number(size, "width", path, "<size>")), int(_xml_number(size, "height", path, "<size>")))
    boxes: list[list[float]] = []
    names: list[str] = []
    for k, obj in enumerate(ann.findall("object")):
        where = f"<object> #{k + 1}"
        bnd = obj.find("bndbox")
        if bnd is None:
            raise ConfigError(f"box file {path}: {where} has no <bndbox>")
        box = [_xml_number(bnd, t, path, where) for t in ("xmin", "ymin", "xmax", "ymax")]
        if not (box[2] > box[0] and box[3] > box[1]):
            raise ConfigError(f"box file {path}: {where} has xmin/ymin/xmax/ymax {box}, expected xmax > xmin and ymax > ymin")
        boxes.append(box)
        name = obj.find("name")
        names.append(name.text.strip() if name is not None and name.text else "")
    if not boxes:
        raise ConfigError(f"box file {path}: no <object><bndbox>; expected at least one box (omit the file for an image without boxes)")
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4), names, declared


def transform_boxes(boxes: np.ndarray, width: int, height: int, prep: Preprocessing) -> np.ndarray:
    """Map (K, 4) boxes in a `width` x `height` image through `prep`'s resize and centre crop, clipped to the
    crop; boxes left with no area are dropped. Returns (K', 4) float32 in the preprocessed image's pixels."""
    new_w, new_h, left, top = prep.geometry(width, height)
    sx, sy = new_w / width, new_h / height
    out = np.asarray(boxes, dtype=np.float64) * np.array([sx, sy, sx, sy]) - np.array([left, top, left, top])
    out = np.clip(out, 0, prep.crop)
    keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return out[keep].astype(np.float32)


def boxes_to_mask(boxes: np.ndarray, size: int) -> np.ndarray:
    """(size, size) float32 mask: 1 on every pixel a box touches (union of the boxes), 0 elsewhere."""
    mask = np.zeros((size, size), dtype=np.float32)
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        c0, r0 = int(np.floor(x0)), int(np.floor(y0))
        c1, r1 = int(np.ceil(x1)), int(np.ceil(y1))
        mask[max(r0, 0) : min(r1, size), max(c0, 0) : min(c1, size)] = 1.0
    return mask


# -- decoding --------------------------------------------------------------------------------------------


def _decode(path: Path) -> "PILImage.Image":
    """The whole image as RGB, unbounded (the reference path; `decode.decode_image` is what loaders use)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB") if img.mode != "RGB" else img.copy()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ConfigError(f"image {path}: cannot be decoded ({type(exc).__name__}: {exc})") from exc


def preprocess(img: "PILImage.Image", prep: Preprocessing) -> np.ndarray:
    """(3, crop, crop) float32 in [0, 1]: shorter side to `prep.resize` (bilinear, antialiased), centre crop;
    the whole image is resized, then cropped (torchvision's order)."""
    from PIL import Image

    new_w, new_h, left, top = prep.geometry(*img.size)
    resized = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    return to_unit(resized.crop((left, top, left + prep.crop, top + prep.crop)))


def reference_decode(path: str | os.PathLike[str], prep: Preprocessing) -> np.ndarray:
    """Version 1's unbounded decode of one file (full decode, resize the whole image, crop): the numerical
    reference `decode.decode_image` is tested against."""
    return preprocess(_decode(Path(path)), prep)


def _mapped_boxes(rec: ImageRecord, prep: Preprocessing, size: tuple[int, int] | None = None, limits: DecodeLimits | None = None) -> np.ndarray:
    """The record's boxes in the preprocessed image's pixels ((K, 4) float32; (0, 4) without a box file). The
    image size comes from `size`, the record, or (an index built without checking images) the file's header."""
    if rec.box_file is None:
        return np.zeros((0, 4), dtype=np.float32)
    size = size or rec.size or read_header(rec.path, prep, limits).size
    if rec.boxes is not None:
        raw = np.asarray(rec.boxes, dtype=np.float32).reshape(-1, 4)
    else:
        raw, _names, declared = read_voc_boxes(rec.box_file)
        _check_declared(rec.box_file, declared, rec.path, size)
    return transform_boxes(raw, size[0], size[1], prep)


class FolderSplit(Split):
    """Images of an image folder, decoded on demand (`decode.decode_image`, bounded) and normalised with
    `mean` / `std`; masks drawn from the box files without decoding pixels. `all_images` decodes everything
    once and keeps it (then `images` slices that)."""

    def __init__(self, records: Sequence[ImageRecord], prep: Preprocessing, mean: tuple[float, ...], std: tuple[float, ...], limits: DecodeLimits | None = None) -> None:
        self.records, self.prep, self.limits = tuple(records), prep, limits or DecodeLimits()
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
        self.labels = np.array([r.label for r in self.records], dtype=np.int64)
        self.ids = tuple(r.id for r in self.records)
        self.has_box = np.array([r.box_file is not None for r in self.records], dtype=bool)
        self.input_shape = (3, prep.crop, prep.crop)
        self._all: np.ndarray | None = None

    def _positions(self, index: Index) -> np.ndarray:
        return np.arange(len(self.records))[index] if isinstance(index, slice) else np.asarray(index, dtype=np.int64).reshape(-1)

    def images(self, index: Index) -> np.ndarray:
        if self._all is not None:
            return self._all[index]
        pos = self._positions(index)
        out = np.empty((len(pos), *self.input_shape), dtype=np.float32)
        for k, i in enumerate(pos):
            out[k] = decode_image(self.records[i].path, self.prep, self.limits)[0]
        out -= self.mean  # in place: the same float32 operations as `normalise`
        out /= self.std
        return out

    def masks(self, index: Index) -> np.ndarray:
        pos = self._positions(index)
        out = np.zeros((len(pos), self.prep.crop, self.prep.crop), dtype=np.float32)
        for k, i in enumerate(pos):
            if self.records[i].box_file is not None:
                out[k] = boxes_to_mask(_mapped_boxes(self.records[i], self.prep, limits=self.limits), self.prep.crop)
        return out

    def all_images(self) -> np.ndarray:
        """Every image, decoded once: in memory up to `IN_MEMORY_BYTES`, else into a disk-backed array (a
        memory map of an already-unlinked scratch file under the cache: page cache, not process memory,
        holds it, and nothing is left on disk however the run ends), filled `FILL_CHUNK` images at a time."""
        if self._all is None:
            n = len(self.records)
            if n * int(np.prod(self.input_shape)) * 4 <= IN_MEMORY_BYTES:
                self._all = self.images(slice(None))
            else:
                out = _scratch_array((n, *self.input_shape))
                for s0 in range(0, n, FILL_CHUNK):
                    out[s0 : s0 + FILL_CHUNK] = self.images(slice(s0, s0 + FILL_CHUNK))
                self._all = out
        return self._all

    def all_masks(self) -> np.ndarray:
        return self.masks(slice(None))


IN_MEMORY_BYTES = 512 << 20  # a whole split larger than this (~890 images at 224 px) decodes to a disk-backed array
FILL_CHUNK = 64  # images decoded at a time into it


def _scratch_array(shape: tuple[int, ...]) -> np.ndarray:
    """A float32 array of `shape` backed by a file under the cache's scratch folder, unlinked as soon as it is
    mapped (the mapping keeps the space until the array is dropped; a killed run leaves nothing)."""
    import mmap
    import tempfile

    from edgecam.cache import cache_dir

    scratch = cache_dir() / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    nbytes = int(np.prod(shape)) * 4
    fd, path = tempfile.mkstemp(prefix="split-", suffix=".f32", dir=scratch)
    try:
        os.unlink(path)
        os.ftruncate(fd, nbytes)
        buf = mmap.mmap(fd, nbytes)  # shared, writable; the array below keeps it alive
    finally:
        os.close(fd)
    return np.frombuffer(buf, dtype=np.float32).reshape(shape)


def _fingerprint(index: ImageFolderIndex, prep: Preprocessing, limits: DecodeLimits | None = None) -> str:
    """sha256 over the preprocessing, the class names and, per image, its id, label, and the sha256 of the
    image's and box file's bytes (streamed; no pixel decoded)."""
    from edgecam.cache import sha256_file

    draft = (limits or DecodeLimits()).jpeg_draft
    h = hashlib.sha256()
    h.update(f"image-folder v{_FORMAT_VERSION} {prep.resize} {prep.crop} draft={draft} {index.class_names!r}\n".encode())
    for r in index.records:
        box = sha256_file(r.box_file) if r.box_file is not None else "-"
        h.update(f"{r.id}\t{r.label}\t{sha256_file(r.path)}\t{box}\n".encode())
    return h.hexdigest()


def _folder_source(index: ImageFolderIndex) -> dict[str, Any]:
    return {
        "root": str(index.root),
        "layout": index.layout,
        "labels_csv": str(index.labels_csv) if index.labels_csv else None,
        "boxes_dir": str(index.boxes_dir) if index.boxes_dir else None,
        "images": len(index.records),
        "with_boxes": sum(r.box_file is not None for r in index.records),
        **({"images_available": index.available} if index.available is not None else {}),  # cut by a limit
    }


def load_image_folder(
    root: str | os.PathLike[str] | ImageFolderIndex,
    labels_csv: str | os.PathLike[str] | None = None,
    boxes_dir: str | os.PathLike[str] | None = None,
    resize: int = 256,
    crop: int = 224,
    class_names: Sequence[str] | None = None,
    limit: int | None = None,
    limits: DecodeLimits | None = None,
) -> ImageFolderData:
    """Index (unless given an `ImageFolderIndex`), check, decode and preprocess a whole image folder at once
    (bounded per image, but every image is held: for small folders; runs use `load_image_folder_data`).

    Returns raw [0, 1] images, labels, ids, masks / boxes in the preprocessed image's coordinates, the class
    names, the preprocessing parameters (for the manifest) and a sha256 fingerprint over the files, labels,
    box files and preprocessing."""
    prep = Preprocessing(resize, crop)
    index = root if isinstance(root, ImageFolderIndex) else index_image_folder(root, labels_csv, boxes_dir, class_names, limit, prep=prep, limits=limits)
    if not index.records:
        raise ConfigError(f"image folder {index.root}: no images to load")
    n = len(index.records)
    images = np.empty((n, 3, prep.crop, prep.crop), dtype=np.float32)
    masks = np.zeros((n, prep.crop, prep.crop), dtype=np.float32)
    boxes: list[np.ndarray] = []
    for i, rec in enumerate(index.records):
        images[i], size = decode_image(rec.path, prep, limits)
        mapped = _mapped_boxes(rec, prep, size, limits)
        if rec.box_file is not None:
            masks[i] = boxes_to_mask(mapped, prep.crop)
        boxes.append(mapped)
    return ImageFolderData(
        images=images,
        labels=np.array([r.label for r in index.records], dtype=np.int64),
        ids=[r.id for r in index.records],
        class_names=list(index.class_names),
        masks=masks,
        has_box=np.array([r.box_file is not None for r in index.records], dtype=bool),
        boxes=boxes,
        preprocessing=prep.to_dict(),
        fingerprint=_fingerprint(index, prep, limits),
        source=_folder_source(index),
    )


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices), seeded, stratified by label: each class with >= 2 images gives at least
    one to each side (e.g. calibration / QAT images apart from the evaluated ones). Both sorted."""
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"data.test_fraction: expected a number in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    train: list[int] = []
    test: list[int] = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(len(members) * test_fraction))
        k = min(max(k, 1), len(members) - 1) if len(members) > 1 else len(members)
        test += members[:k].tolist()
        train += members[k:].tolist()
    return np.array(sorted(train), dtype=np.int64), np.array(sorted(test), dtype=np.int64)


# -- the `[data]` spec and loader of this kind (registered in edgecam.data.DATASETS) -----------------------


@dataclass(frozen=True)
class ImageFolderDataSpec(DataSpec):
    """`[data] name = "image-folder"`: the user's images at `path` (class folders, or `labels_csv`), optional
    Pascal-VOC boxes in `boxes_dir` (both relative to `path` unless absolute), resized / centre-cropped to
    `resize` / `crop`, split by `test_fraction` (stratified, by `seed`) into evaluated images and calibration /
    QAT images; `num_classes` defaults to the number of classes found (set 1000 for ImageNet weights).
    With `calib_path` (a folder of images: class folders named like `path`'s give labels, any other layout
    gives unlabelled images, enough for PTQ), every image of `path` is evaluated and calibration / QAT read
    `calib_path`. Without it, a class with one image is evaluated only; when no class has two, calibration
    falls back to the evaluated images themselves (PTQ only; recorded in the manifest).
    Normalised with ImageNet's mean / std unless given. Decoding is bounded: a file that decodes to more than
    `max_decode_pixels` pixels (after JPEG draft) is refused before any work; `jpeg_draft` decodes JPEGs at
    least 4x larger than the target at 1/2 - 1/8 scale (off: exact torchvision pixels, full decodes)."""

    KIND: ClassVar[str] = "image-folder"
    RUN_TIME_STAND_INS: ClassVar[dict[str, Any]] = {"path": "."}  # --data DIR sets it

    name: str = "image-folder"
    path: Optional[str] = None
    labels_csv: Optional[str] = None
    boxes_dir: Optional[str] = None
    resize: int = 256
    crop: int = 224
    test_fraction: float = 0.5
    num_classes: Optional[int] = None
    max_decode_pixels: int = 50_000_000
    jpeg_draft: bool = True
    calib_path: Optional[str] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.path:
            raise ConfigError("data.path: required for data.name = 'image-folder' (a folder of class folders, or images plus data.labels_csv); or pass --data DIR")
        Preprocessing(self.resize, self.crop)  # data.resize / data.crop, checked where they are used
        self.decode_limits()  # data.max_decode_pixels / data.jpeg_draft
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"data.test_fraction: expected a number in (0, 1), got {self.test_fraction}")
        if self.num_classes is not None and self.num_classes < 2:
            raise ConfigError(f"data.num_classes: expected an integer >= 2, got {self.num_classes}")

    def resolve(self, rel: Optional[str]) -> Optional[Path]:
        """`labels_csv` / `boxes_dir` / `calib_path` against `path` (absolute paths as they are)."""
        if rel is None:
            return None
        p = Path(rel).expanduser()
        return p if p.is_absolute() or self.path is None else Path(self.path).expanduser() / p

    def decode_limits(self) -> DecodeLimits:
        """The decoding bounds these settings ask for."""
        return DecodeLimits(self.max_decode_pixels, self.jpeg_draft)


def load_image_folder_data(spec: ImageFolderDataSpec) -> Datasets:
    """Index and check the folder (no pixel decoded), split it (stratified by `seed`) into lazy `FolderSplit`s
    that decode shard by shard, normalised with the spec's mean / std; `test_has_box` from the box files.
    The fingerprint hashes the files' bytes (streamed, not decoded)."""
    from edgecam.cache import stable_hash

    prep, limits = Preprocessing(spec.resize, spec.crop), spec.decode_limits()
    index = index_image_folder(Path(str(spec.path)).expanduser(), spec.resolve(spec.labels_csv), spec.resolve(spec.boxes_dir), prep=prep, limits=limits)
    if not index.records:
        raise ConfigError(f"image folder {index.root}: no images to load")
    labels = np.array([r.label for r in index.records], dtype=np.int64)
    n_classes = spec.num_classes or len(index.class_names)
    if labels.max() >= n_classes:
        raise ConfigError(f"data.num_classes: {n_classes} classes, but {spec.path} has labels up to {int(labels.max())} ({len(index.class_names)} class names)")
    mean, std = spec.mean or IMAGENET_MEAN, spec.std or IMAGENET_STD
    calib_root = spec.resolve(spec.calib_path)
    if calib_root is not None:
        calib = index_calibration_folder(calib_root, index.class_names, prep, limits)
        return folder_datasets(index, calib, prep, limits, mean, std, n_classes, "image-folder", [spec.seed])
    train_idx, test_idx = stratified_split(labels, spec.test_fraction, spec.seed)
    test_records = [index.records[i] for i in test_idx]
    train_records = [index.records[i] for i in train_idx]
    fallback = not train_records  # no class has two images: calibrate on the evaluated images (PTQ only)
    train = FolderSplit(test_records if fallback else train_records, prep, mean, std, limits)
    test = FolderSplit(test_records, prep, mean, std, limits)
    calibration = {"images": len(train), "from": "the evaluated images (no class has two images)" if fallback else "the training split", "labelled": True}
    return Datasets(
        train, test, stable_hash([_fingerprint(index, prep, limits), spec.test_fraction, spec.seed, mean, std, n_classes]), n_classes, mean, std,
        {"dataset": "image-folder", **_folder_source(index), "class_names": list(index.class_names), "test_images": len(test), "calibration_images": len(train),
         "calibration": calibration, "preprocessing": prep.to_dict(), "normalisation": {"mean": mean, "std": std}},
        train_is_test=fallback,
    )


def index_calibration_folder(root: Path, class_names: Sequence[str], prep: Preprocessing, limits: DecodeLimits) -> ImageFolderIndex:
    """A calibration folder: a class tree whose folder names are among `class_names` (labelled), or images in
    any layout (label -1: unlabelled, enough for PTQ calibration). Every image's header checked."""
    if not root.is_dir():
        raise ConfigError(f"data.calib_path: {root} is not a folder (expected calibration images, in class folders or not)")
    folders = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    loose = [p for p in root.iterdir() if _is_image(p)]
    if folders and not loose and all(f in class_names for f in folders):
        return index_image_folder(root, class_names=class_names, prep=prep, limits=limits)
    files = _walk_images(root)
    if not files:
        raise ConfigError(f"data.calib_path: {root} holds no image ({', '.join(IMAGE_EXTENSIONS)}, any case)")
    records = tuple(ImageRecord(f, _rel(f, root), -1, None, read_header(f, prep, limits).size) for f in files)
    return ImageFolderIndex(root, "unlabelled", tuple(class_names), records)


def folder_datasets(test: ImageFolderIndex, calib: ImageFolderIndex, prep: Preprocessing, limits: DecodeLimits, mean: tuple[float, ...], std: tuple[float, ...],
                    n_classes: int, dataset: str, key: list[Any], source: dict[str, Any] | None = None) -> Datasets:
    """Every image of `test` evaluated, `calib` for calibration / QAT (labelled unless its layout is
    "unlabelled"); `key` and both folders' contents in the fingerprint."""
    from edgecam.cache import stable_hash

    labelled = calib.layout != "unlabelled"
    train, test_split = FolderSplit(calib.records, prep, mean, std, limits), FolderSplit(test.records, prep, mean, std, limits)
    fp = stable_hash([_fingerprint(test, prep, limits), _fingerprint(calib, prep, limits), *key, mean, std, n_classes])
    calibration = {"images": len(train), "from": str(calib.root), "labelled": labelled}
    return Datasets(
        train, test_split, fp, n_classes, mean, std,
        {"dataset": dataset, **_folder_source(test), "class_names": list(test.class_names), "test_images": len(test_split), "calibration_images": len(train),
         "calibration": calibration, "preprocessing": prep.to_dict(), "normalisation": {"mean": mean, "std": std}, **(source or {})},
        train_labelled=labelled,
    )


DATASETS.add(ImageFolderDataSpec.KIND, DatasetKind(ImageFolderDataSpec, load_image_folder_data))


# -- a tiny real dataset from scikit-image's bundled photographs -----------------------------------------

# (skimage.data function, class, file name, hand-placed boxes (xmin, ymin, xmax, ymax) in the photo's pixels)
SKIMAGE_PHOTOS: tuple[tuple[str, str, str, tuple[tuple[int, int, int, int], ...]], ...] = (
    ("astronaut", "person", "astronaut.JPEG", ((20, 15, 365, 512),)),  # Eileen Collins, 512x512
    ("camera", "person", "camera.png", ((0, 65, 335, 512),)),  # cameraman, grayscale 512x512
    ("chelsea", "cat", "chelsea.jpg", ((5, 0, 400, 300),)),  # Chelsea the cat, 451x300
    ("coffee", "cup", "coffee.JPEG", ((175, 15, 425, 300),)),  # espresso cup, 600x400
    ("rocket", "rocket", "rocket.jpg", ((300, 125, 345, 410),)),  # Falcon 9 on the pad, 640x427
    ("stereo_motorcycle", "motorcycle", "motorcycle.png", ((90, 20, 690, 450),)),  # left view, 741x500
)


@dataclass(frozen=True)
class SkimageFolder:
    """Where `write_skimage_folder` put things."""

    images: Path
    boxes: Path | None
    labels_csv: Path | None
    class_names: tuple[str, ...]


def skimage_photo(func: str) -> np.ndarray:
    """scikit-image's bundled photo `func` (a `skimage.data` function name) as an array."""
    import skimage.data

    out = getattr(skimage.data, func)()
    return out[0] if isinstance(out, tuple) else out  # stereo_motorcycle -> (left, right, disparity)


def voc_xml(filename: str, width: int, height: int, objects: Sequence[tuple[str, tuple[float, float, float, float]]]) -> str:
    """A Pascal-VOC annotation (the ImageNet validation layout) for `objects` = [(name, (xmin, ymin, xmax, ymax))]."""
    parts = [f"<annotation><filename>{filename}</filename><size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for name, (x0, y0, x1, y1) in objects:
        parts.append(f"<object><name>{name}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>\n"


def write_skimage_folder(directory: str | os.PathLike[str], layout: str = "tree", boxes: bool = True) -> SkimageFolder:
    """Write scikit-image's bundled photographs (nothing downloaded) as a tiny real dataset under `directory`.

    layout "tree": `images/<class>/<file>`; "csv": `images/<file>` plus `labels.csv` (file, label = class
    name). With `boxes`, `boxes/<stem>.xml` Pascal-VOC files with hand-placed boxes (`SKIMAGE_PHOTOS`).
    File types are mixed on purpose (.JPEG, .jpg, .png; RGB and grayscale)."""
    from PIL import Image

    if layout not in ("tree", "csv"):
        raise ConfigError(f"layout: expected 'tree' or 'csv', got {layout!r}")
    directory = Path(directory)
    images = directory / "images"
    box_dir = directory / "boxes" if boxes else None
    rows: list[tuple[str, str]] = []
    for func, cls, fname, obj_boxes in SKIMAGE_PHOTOS:
        pixels = skimage_photo(func)
        target = images / cls / fname if layout == "tree" else images / fname
        target.parent.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(pixels)
        img.save(target, format="JPEG" if target.suffix.lower() in (".jpg", ".jpeg") else "PNG", quality=92)
        rows.append((fname, cls))
        if box_dir is not None:
            box_dir.mkdir(parents=True, exist_ok=True)
            (box_dir / f"{Path(fname).stem}.xml").write_text(voc_xml(fname, img.size[0], img.size[1], [(cls, b) for b in obj_boxes]))
    labels_csv = None
    if layout == "csv":
        labels_csv = directory / "labels.csv"
        with open(labels_csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "label"])
            writer.writerows(rows)
    return SkimageFolder(images, box_dir, labels_csv, tuple(sorted({c for _f, c, _n, _b in SKIMAGE_PHOTOS})))
