"""The persistent session's wire format: framed numpy arrays over a byte stream, no pickle anywhere.

Shared by the agent (`agent.pyz serve`, on the device: stdlib + numpy, Python >= 3.8) and the host's
`PersistentSession`. One frame is

    fixed header  16 bytes: MAGIC (4) | JSON header length, u32 big-endian | payload length, u64 big-endian
    JSON header   UTF-8 object: {"op", "id", "arrays": [{"name", "dtype", "shape"}, ...], "params", ...}
    payload       the raw C-order little-endian bytes of each array, in the order the header lists them

A reader checks everything before it allocates or reads a payload byte: the magic, the header length against
MAX_HEADER_BYTES, the frame against the reader's cap (`max_frame_bytes`, default 2 GiB), each dtype against
DTYPES (no object arrays, so nothing can smuggle a pickle), each shape, and the sum of dtype x shape against
the payload length the fixed header declares. A frame that fails a check is drained (read and discarded in
1 MiB pieces, so the stream stays in step and nothing big is held) and reported as a `FrameError` carrying
the request id when the header was readable; only a bad magic (the stream is not ours, or is out of step)
is fatal.
"""

from __future__ import annotations

import json
import re
import struct
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

MAGIC = b"ECF1"
#: version of the serve protocol (the agent's hello frame reports it)
SERVE_PROTOCOL = 1
FIXED = struct.Struct(">4sIQ")
#: the only dtypes a frame may carry (all fixed-size, none can hold Python objects)
DTYPES = ("float32", "float64", "int32", "int64", "uint8", "bool")
MAX_HEADER_BYTES = 1 << 20
#: nesting levels a JSON text from the other side may have (a frame header, a result, a probe): real ones use 3
MAX_JSON_DEPTH = 64
DEFAULT_MAX_FRAME_BYTES = 2 << 30
WATCHDOG_GRACE_S = 30.0  # job.json's watchdog_s = the host's timeout plus this: the host always times out first
MAX_DIMS = 16
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")
_DRAIN_CHUNK = 1 << 20

#: `readinto(view)` fills the whole memoryview or raises EOFError
ReadInto = Callable[[memoryview], None]


class FrameError(ValueError):
    """A frame that breaks the format. `request_id` is the id its header named (None if unreadable);
    `fatal` means the stream is out of step and the reader must stop."""

    def __init__(self, message: str, request_id: Any = None, fatal: bool = False) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.fatal = fatal


def check_json_depth(text: str, max_depth: int = MAX_JSON_DEPTH) -> None:
    """ValueError if `text` nests arrays / objects deeper than `max_depth` (brackets inside strings aside):
    checked before `json.loads`, whose recursion would otherwise end in a RecursionError. Linear: strings are
    cut out by one regex, then the brackets counted (stopping at the first level too deep)."""
    depth = 0
    for m in _BRACKET.finditer(_JSON_STRING.sub("", text)):
        depth += 1 if m.group() in "[{" else -1
        if depth > max_depth:
            raise ValueError("JSON nested deeper than %d levels" % max_depth)


def wire_dtype(name: str) -> np.dtype:
    """The little-endian numpy dtype of an allowed dtype name; FrameError for any other."""
    if name not in DTYPES:
        raise FrameError("dtype %r is not allowed; a frame carries only %s" % (name, ", ".join(DTYPES)))
    return np.dtype(name).newbyteorder("<")


def _wire_array(a: Any) -> np.ndarray:
    arr = np.asarray(a)
    name = arr.dtype.name
    if name not in DTYPES:
        raise FrameError("cannot send an array of dtype %s; a frame carries only %s" % (arr.dtype, ", ".join(DTYPES)))
    return arr.astype(wire_dtype(name), order="C", copy=False)  # keeps 0-d shapes (ascontiguousarray makes them 1-d)


def encode_frame(header: Mapping[str, Any], arrays: Optional[Mapping[str, Any]] = None) -> Tuple[List[Any], int]:
    """(chunks, total size) of one frame: the fixed + JSON header bytes, then one memoryview per array
    (no copy of C-contiguous little-endian arrays). `header` must not hold "arrays"; it is filled in here."""
    wire = [(str(k), _wire_array(v)) for k, v in (arrays or {}).items()]
    head = dict(header)
    head["arrays"] = [{"name": k, "dtype": a.dtype.name, "shape": list(a.shape)} for k, a in wire]
    text = json.dumps(head, separators=(",", ":"), allow_nan=True).encode()
    if len(text) > MAX_HEADER_BYTES:
        raise FrameError("frame header of %d bytes exceeds %d" % (len(text), MAX_HEADER_BYTES), head.get("id"))
    payload = sum(a.nbytes for _, a in wire)
    chunks: List[Any] = [FIXED.pack(MAGIC, len(text), payload) + text]
    chunks += [memoryview(a.reshape(-1)).cast("B") for _, a in wire if a.nbytes]
    return chunks, FIXED.size + len(text) + payload


def frame_size(header: Mapping[str, Any], arrays: Optional[Mapping[str, Any]] = None) -> int:
    """Bytes `encode_frame` would produce (what a session's byte counters add up)."""
    return encode_frame(header, arrays)[1]


def _drain(readinto: ReadInto, n: int) -> None:
    scratch = memoryview(bytearray(min(n, _DRAIN_CHUNK)))
    while n > 0:
        k = min(n, len(scratch))
        readinto(scratch[:k])
        n -= k


def _check_specs(specs: Any) -> List[Tuple[str, np.dtype, Tuple[int, ...], int]]:
    if not isinstance(specs, list):
        raise FrameError("header field 'arrays' must be a list of {name, dtype, shape}")
    out, names = [], set()
    for spec in specs:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("dtype"), str):
            raise FrameError("array entry %r: expected {name: str, dtype: str, shape: [int, ...]}" % (spec,))
        name, shape = spec["name"], spec.get("shape")
        if name in names:
            raise FrameError("array %r appears twice" % name)
        names.add(name)
        dtype = wire_dtype(spec["dtype"])
        if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise FrameError("array %r: shape %r must be a list of at most %d non-negative integers" % (name, shape, MAX_DIMS))
        nbytes = dtype.itemsize
        for d in shape:
            nbytes *= d
        out.append((name, dtype, tuple(shape), nbytes))
    return out


def read_frame(readinto: ReadInto, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Tuple[Dict[str, Any], Dict[str, np.ndarray], int]:
    """(header, arrays, frame size) of the next frame. EOFError when the stream ends (cleanly before a
    frame, or truncated inside one); FrameError for a frame that breaks the format (see the module doc)."""
    fixed = bytearray(FIXED.size)
    readinto(memoryview(fixed))
    magic, head_len, payload = FIXED.unpack(bytes(fixed))
    if magic != MAGIC:
        raise FrameError("bad frame magic %r (expected %r): the stream is not an edgecam session or is out of step" % (bytes(magic), MAGIC), fatal=True)
    size = FIXED.size + head_len + payload
    if head_len > MAX_HEADER_BYTES or size > max_frame_bytes:
        _drain(readinto, head_len + payload)
        what = "header of %d bytes exceeds %d" % (head_len, MAX_HEADER_BYTES) if head_len > MAX_HEADER_BYTES else "frame of %d bytes exceeds the cap of %d bytes (max_frame_bytes)" % (size, max_frame_bytes)
        raise FrameError("oversize frame refused: %s" % what)
    text = bytearray(head_len)
    readinto(memoryview(text))
    request_id = None
    try:
        decoded = text.decode()
        check_json_depth(decoded)
        header = json.loads(decoded)
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        request_id = header.get("id")
        specs = _check_specs(header.get("arrays", []))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # json.JSONDecodeError and FrameError are ValueErrors
        _drain(readinto, payload)
        raise FrameError("bad frame header: %s" % exc, request_id) from None
    needed = sum(s[3] for s in specs)
    if needed != payload:
        _drain(readinto, payload)
        raise FrameError("frame length mismatch: the fixed header declares %d payload bytes, its arrays (dtype x shape) need %d" % (payload, needed), request_id)
    arrays: Dict[str, np.ndarray] = {}
    for name, dtype, shape, nbytes in specs:
        buf = bytearray(nbytes)
        if nbytes:
            readinto(memoryview(buf))
        arr = np.frombuffer(buf, dtype=dtype).reshape(shape)  # writable: backed by the bytearray, no copy
        arrays[name] = arr.astype(arr.dtype.newbyteorder("="), copy=False)
    return header, arrays, size


def stream_readinto(stream: Any) -> ReadInto:
    """A `ReadInto` over a binary file object (the agent's stdin, a frames file)."""

    def readinto(view: memoryview) -> None:
        got = 0
        while got < len(view):
            n = stream.readinto(view[got:])
            if not n:
                raise EOFError("stream ended %s" % ("inside a frame (%d of %d bytes)" % (got, len(view)) if got else "before a frame"))
            got += n

    return readinto

