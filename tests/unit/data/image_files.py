"""Image files the data tests (and `benchmarks/data_memory.py`) write: photo-like JPEGs from scikit-image's
bundled photographs (nothing downloaded) and header-only PNGs that declare any size at no cost."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def header_only_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR declares `width` x `height` and that holds no pixel data (costs nothing to write)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b""))
    return path


def mosaic_jpeg(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A detailed photo-like JPEG: native-resolution tiles of scikit-image's photos (no upscaling), some mirrored."""
    import skimage.data

    rng = np.random.default_rng(seed)
    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]
    canvas = np.zeros((height, width, 3), np.uint8)
    for y in range(0, height, 280):
        x = 0
        while x < width:
            p = photos[int(rng.integers(len(photos)))]
            p = p[:, ::-1] if rng.random() < 0.5 else p
            h, w = min(p.shape[0], height - y), min(p.shape[1], width - x)
            canvas[y : y + h, x : x + w] = p[:h, :w]
            x += w
    Image.fromarray(canvas).save(path, quality=90)
    return path


def write_photo_views(root: Path, n: int) -> None:
    """`n` JPEGs of 256 x 341 (or 341 x 256): random crops and flips of scikit-image's photos, four classes."""
    import skimage.data

    rng = np.random.default_rng(0)
    photos = [("astronaut", skimage.data.astronaut()), ("cat", skimage.data.chelsea()), ("cup", skimage.data.coffee()), ("rocket", skimage.data.rocket())]
    for i in range(n):
        cls, p = photos[i % len(photos)]
        h, w = p.shape[:2]
        ch, cw = int(rng.integers(h // 2, h + 1)), int(rng.integers(w // 2, w + 1))
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        view = p[y0 : y0 + ch, x0 : x0 + cw][:, :: -1 if rng.random() < 0.5 else 1]
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(view)).resize((256, 341) if i % 2 else (341, 256), Image.Resampling.BILINEAR).save(root / cls / f"{i:04d}.jpg", quality=90)
