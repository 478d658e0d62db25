"""Data memory: peak RSS of decoding and loading image data, version 1's eager path vs the bounded, lazy one,
measured side by side in one run (each case in a fresh process; its peak RSS growth is VmHWM, reset through
/proc/self/clear_refs just before the measured call, minus VmRSS then).

1. One file at resize 256 / crop 224: a 1 x 2000 PNG (resize-then-crop makes it 256 x 512,000) and a
   6000 x 4000 JPEG (a detailed mosaic of scikit-image's photos): `reference_decode` (version 1: full decode,
   whole-image resize, crop) vs `decode_image` (JPEG draft, crop before resize, pixel cap).
2. A folder of N JPEGs of 256 x 341 (crops and flips of the photos) for each N: version 1's `load_data`
   arrays (every image decoded, split copies, normalised copies of both splits) vs `load_data` + every test
   shard (16 images) + a 128-image calibration subset.

    .venv/bin/python benchmarks/data_memory.py [--images 100 300 1000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit" / "data"))
from image_files import mosaic_jpeg, write_photo_views  # noqa: E402  (the data tests' image writers)

CHILD = r"""
import re, sys
import numpy as np

def status(key):
    return int(re.search(key + r":\s+(\d+)", open("/proc/self/status").read()).group(1)) / 2**10

case, path = sys.argv[1], sys.argv[2]
from edgecam.data import DataSpec, load_data, normalise
from edgecam.data.decode import Preprocessing, decode_image
from edgecam.data.image_folder import load_image_folder, reference_decode, stratified_split
prep = Preprocessing(256, 224)
warm = sys.argv[3]
decode_image(warm, prep), reference_decode(warm, prep)  # codecs and allocator pools warm
open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS")
if case == "file-v1":
    reference_decode(path, prep)
elif case == "file-bounded":
    decode_image(path, prep)
elif case == "folder-v1":  # the arrays version 1's load_data held (its own decode is bounded now; the copies are not)
    folder = load_image_folder(path)
    train, test = (folder.subset(i) for i in stratified_split(folder.labels, 0.5))
    held = normalise(train.images), normalise(test.images), test.masks
else:
    data = load_data(DataSpec(name="image-folder", path=path, limit=None))
    n = sum(len(s) for s in data.iter_test_shards(16))
    x, y = data.train_subset(128)
print(status("VmHWM") - before)
"""


def write_files(root: Path) -> tuple[Path, Path, Path]:
    """A warm-up JPEG, the 1 x 2000 strip and the 6000 x 4000 mosaic."""
    from PIL import Image

    strip, warm = root / "strip_1x2000.png", root / "warm.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (2000, 1, 3), dtype=np.uint8)).save(strip)
    Image.new("RGB", (300, 300)).save(warm)
    return warm, strip, mosaic_jpeg(root / "mosaic_6000x4000.jpg", 6000, 4000)


def peak_mb(case: str, path: Path, warm: Path) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, case, str(path), str(warm)], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[100, 300, 1000])
    args = parser.parse_args()
    if not Path("/proc/self/clear_refs").exists():
        sys.exit("needs Linux's resettable peak RSS (/proc/self/clear_refs)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        warm, strip, mosaic = write_files(root)
        print("| case | version 1 peak RSS growth (MB) | bounded / lazy (MB) |\n|---|---:|---:|")
        for name, path in (("1 x 2000 PNG", strip), ("6000 x 4000 JPEG", mosaic)):
            print(f"| {name} | {peak_mb('file-v1', path, warm):.1f} | {peak_mb('file-bounded', path, warm):.1f} |")
        for n in args.images:
            folder = root / f"folder{n}"
            write_photo_views(folder, n)
            print(f"| folder of {n} JPEGs 256 x 341 | {peak_mb('folder-v1', folder, warm):.1f} | {peak_mb('folder-lazy', folder, warm):.1f} |")


if __name__ == "__main__":
    main()
