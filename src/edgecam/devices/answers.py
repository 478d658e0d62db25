"""Everything a device sends, checked before the host uses it: one layer for result.json, probe lines, npz
files, pulled trees and the session's arrays (issue 36; audit 2026-12-05, classes 1-3).

A device is a program on somebody else's board: broken, half-written or hostile answers must fail *that job*
(`BadAnswer`, a `JobFailed`: the sweep records it and goes on), never the run, and must not make the host
allocate what the device chooses. So:

- JSON is parsed with a size cap and a nesting-depth cap checked *before* the parser runs (CPython's decoder
  recurses: a 400 KB `[[[[...` raises RecursionError, a RuntimeError that no `except ValueError` catches);
- an npz member's shape and dtype are read from its .npy header and its declared sizes checked against the
  host's own bound before a byte is decompressed (the zip reader then stops at the declared size);
- a pulled file or tree is measured where it landed (apparent sizes, sparse files included; links and
  devices refused) against the host's bound, not the board's own `du`;
- the session's answers must hold the arrays each op needs, numeric, of the rows the host asked for.

Device *text* (errors, tracebacks, stderr, probe facts) is made safe once, by `edgecam.textsafe.clean_text`,
where it enters the host's errors and facts.
"""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edgecam.devices.errors import JobFailed
from edgecam.devices.protocol import DTYPES, MAX_JSON_DEPTH, check_json_depth

#: a job's result.json: timing samples, tegrastats summaries and a profile fit in far less
MAX_RESULT_BYTES = 16 << 20
#: a probe's answer line
MAX_PROBE_BYTES = 1 << 20
#: slack on top of the arrays' own bytes for a file's headers (npz, npy, tar)
SLACK_BYTES = 1 << 20


class BadAnswer(JobFailed):
    """A device's answer failed a check (too big, too deep, not the arrays the host asked for): that job fails
    with the reason, the run goes on."""


def parse_json(text: str | bytes, what: str, max_bytes: int = MAX_RESULT_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads(text)` within `max_bytes` and `max_depth` levels of nesting; BadAnswer naming `what` otherwise."""
    if len(text) > max_bytes:
        raise BadAnswer(f"{what}: {len(text):,} bytes, over the cap of {max_bytes:,}")
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        check_json_depth(text, max_depth)
        return json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise BadAnswer(f"{what} is not usable JSON ({type(exc).__name__}: {str(exc)[:200]})") from None


def regular_file_size(path: Path, what: str) -> int:
    """Apparent size of `path`, which must be a regular file (not a link, a device or a FIFO)."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise BadAnswer(f"{what}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadAnswer(f"{what}: not a regular file")
    return st.st_size


def read_json_file(path: Path, what: str, max_bytes: int = MAX_RESULT_BYTES) -> Any:
    """A JSON file a device wrote: its size checked before it is read, then `parse_json`."""
    size = regular_file_size(path, what)
    if size > max_bytes:
        raise BadAnswer(f"{what}: {size:,} bytes, over the cap of {max_bytes:,}")
    return parse_json(Path(path).read_bytes(), what, max_bytes)


def check_pulled(local: Path, max_bytes: int, what: str) -> int:
    """Bytes under `local` (a file or a tree just pulled from a device), or BadAnswer when they pass
    `max_bytes` or hold anything but regular files and folders. Apparent sizes: a sparse file counts whole,
    as reading it would."""
    total = 0
    paths = [local] if not local.is_dir() or local.is_symlink() else [local, *local.rglob("*")]
    for p in paths:
        st = os.lstat(p)
        if stat.S_ISDIR(st.st_mode):
            continue
        if not stat.S_ISREG(st.st_mode):
            raise BadAnswer(f"{what}: {p.name!r} is not a regular file")
        total += st.st_size
        if total > max_bytes:
            raise BadAnswer(f"{what}: more than {max_bytes:,} bytes, the most this answer can need; refused")
    return total


def _npy_header(f: Any, member: str, what: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, Fortran order, dtype, header bytes) of the .npy stream `f`, read without touching its data."""
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(f)
        reader = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}.get(version)
        if reader is None:
            raise ValueError(f"npy format version {version}")
        shape, fortran, dtype = reader(f)
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise BadAnswer(f"{what}: member {member!r} has no readable array header ({exc})") from None
    if dtype.hasobject or dtype.name not in DTYPES:
        raise BadAnswer(f"{what}: member {member!r} has dtype {dtype}; a device may send only {', '.join(DTYPES)}")
    return tuple(int(d) for d in shape), bool(fortran), dtype, f.tell()


def load_npz(path: Path, what: str, max_bytes: int) -> dict[str, np.ndarray]:
    """The arrays of an npz file a device wrote, within `max_bytes` of array data in all: each member's shape and
    dtype come from its .npy header and are checked, with the member's declared size, before its data is read
    (a compressed member cannot expand past what it declares: the zip reader stops there and checks its CRC)."""
    size = regular_file_size(path, what)
    if size > max_bytes + SLACK_BYTES:
        raise BadAnswer(f"{what}: {size:,} bytes, over the cap of {max_bytes + SLACK_BYTES:,}")
    out: dict[str, np.ndarray] = {}
    budget = max_bytes
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy") or info.is_dir():
                    raise BadAnswer(f"{what}: unexpected member {info.filename!r}")
                name = info.filename[:-4]
                if name in out:
                    raise BadAnswer(f"{what}: member {info.filename!r} appears twice")
                with z.open(info) as f:
                    shape, fortran, dtype, head = _npy_header(f, info.filename, what)
                    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if shape else dtype.itemsize
                    if nbytes > budget or info.file_size > head + nbytes + 4096:
                        raise BadAnswer(f"{what}: member {info.filename!r} declares {shape} {dtype} ({nbytes:,} bytes, file {info.file_size:,}); "
                                        f"the answer can hold at most {max_bytes:,} bytes of arrays; refused")
                    budget -= nbytes
                    arr = np.empty(shape[::-1] if fortran else shape, dtype=dtype)
                    view, got = memoryview(arr.reshape(-1)).cast("B"), 0
                    while got < nbytes:  # straight into the array: no second copy of the data
                        n = f.readinto(view[got:])
                        if not n:
                            raise BadAnswer(f"{what}: member {info.filename!r} ends after {got:,} of {nbytes:,} bytes")
                        got += n
                    out[name] = arr.T if fortran else arr
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise BadAnswer(f"{what}: unreadable ({type(exc).__name__}: {str(exc)[:200]})") from None
    return out


def declared_shapes(artifact_dir: str | Path) -> dict[str, tuple[int, ...]]:
    """Per-item output shapes the artifact declares (`output_shapes` of its manifest, batch dimension dropped;
    outputs with a symbolic dimension left out); {} when the manifest says nothing."""
    try:
        shapes = json.loads((Path(artifact_dir) / "manifest.json").read_text()).get("output_shapes", {})
    except (OSError, ValueError, AttributeError):
        return {}
    out: dict[str, tuple[int, ...]] = {}
    for name, dims in (shapes.items() if isinstance(shapes, dict) else ()):
        if isinstance(dims, list) and len(dims) >= 1 and all(isinstance(d, int) for d in dims[1:]):
            out[str(name)] = tuple(dims[1:])
    return out


def output_row_bytes(artifact_dir: str | Path) -> dict[str, int]:
    """Bytes of one input's answer per output, at most (float64), from `declared_shapes`; {} when the manifest
    says nothing (the caller then has no bound of its own)."""
    return {name: 8 * int(np.prod(dims, dtype=np.int64)) for name, dims in declared_shapes(artifact_dir).items() if all(d > 0 for d in dims)}


def answer_bound(row_bytes: Mapping[str, int], rows: int, names: Sequence[str] | None, fallback: int) -> int:
    """The most bytes an answer of `rows` inputs for outputs `names` (None: all) can need, or `fallback` when
    an output's size is unknown."""
    if names is not None and not names:
        return SLACK_BYTES  # no outputs asked for: an (almost) empty file
    wanted = list(row_bytes) if names is None else list(names)
    if not wanted or any(n not in row_bytes for n in wanted):
        return fallback
    return rows * sum(row_bytes[n] for n in wanted) + SLACK_BYTES


def expect_arrays(out: Mapping[str, Any], names: Sequence[str], what: str) -> dict[str, np.ndarray]:
    """`out` holding each of `names` as a numeric array of at least one dimension; BadAnswer naming what is missing."""
    missing = [n for n in names if n not in out]
    if missing:
        raise BadAnswer(f"{what}: the answer holds {sorted(out)}, not {missing}")
    for n in names:
        arr = out[n]
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiub" or arr.ndim < 1:
            raise BadAnswer(f"{what}: {n} is {type(arr).__name__} {getattr(arr, 'dtype', '')}, expected a numeric array")
    return dict(out)
